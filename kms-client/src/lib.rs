//! The client side of the KMS: what kmsctl, kmsfs and blockcrypt (and any Rust consumer) need to
//! reach a sidecar – or to run the engine in process – without the server's dependencies.
//!
//! - [`client`]: a blocking client of the Alibaba Cloud KMS 2016-01-20 RPC protocol (both
//!   signature schemes), configured from flags, the environment or a sidecar's profile.
//! - [`sign`]: the request-signing schemes, shared with the sidecar's verification.
//! - [`profile`]: where a client finds a sidecar (`profile.json` in its data directory).
//! - [`envelope`]: the data-key service the encryptors use, remote or embedded.
//! - [`exit`]: the exit codes every command line shares.
//! - [`logging`]: the logging flags and precedence every program shares.
//! - [`tls`]: the certificate and key loading both servers (the sidecar's HTTPS, blockcrypt's
//!   NBD over TLS) use.
//! - [`ctx_pool`]: keyed cipher contexts for the encryptors' data paths (kmsfs's blocks,
//!   blockcrypt's sectors).

pub mod client;
pub mod ctx_pool;
pub mod envelope;
pub mod exit;
pub mod logging;
pub mod profile;
pub mod sign;
pub mod tls;

/// The API version every request names (`Version` / `x-acs-version`).
pub const API_VERSION: &str = "2016-01-20";
