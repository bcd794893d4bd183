//! Cryptography of the engine: the symmetric AEADs, the ciphertext blob format and the sealing of
//! key material under the root key.

pub mod aead;
pub mod asym;
pub mod blob;
pub mod seal;
/// A throw-away SoftHSM2 token for tests and benchmarks (not part of the production surface).
#[cfg(feature = "softhsm")]
pub mod softhsm;
pub mod token;
pub mod token_asym;

pub use aead::{Algorithm, SymCipher};
