//! Cryptography of the engine: the symmetric AEADs, the ciphertext blob format and the sealing of
//! key material under the root key.

pub mod aead;
pub mod asym;
pub mod blob;
pub mod ctx_pool;
pub mod seal;
pub mod softhsm;
pub mod token;
pub mod token_asym;

pub use aead::{Algorithm, SymCipher};
