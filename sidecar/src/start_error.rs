//! Why the sidecar did not start, by what an operator does about it. `kms-sidecar` exits with
//! the kind's code (README, "Exit codes"), so a service manager or a deployment script can tell
//! a typo in the config from a database that is not up yet.

use kms_client::exit::{EXIT_KMS_REFUSED, EXIT_KMS_UNREACHABLE, EXIT_OTHER, EXIT_USAGE};
use kms_core::crypto::token::TokenOpenError;
use kms_core::store::StoreOpenError;
use kms_core::OpenError;

/// The sidecar's "in use" code, the same number the encryptors use for theirs.
pub const EXIT_IN_USE: i32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration, a credential, a policy or an address given cannot be used.
    #[error("{0}")]
    Config(String),
    /// The store's database server or the PKCS#11 token cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The root key, or the token's PIN, does not open the store.
    #[error("{0}")]
    Refused(String),
    /// The store, or an address to listen on, is held by another process.
    #[error("{0}")]
    InUse(String),
    /// Anything else (a file that cannot be read or written, a damaged store).
    #[error("{0}")]
    Other(String),
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => EXIT_USAGE,
            StartError::Unreachable(_) => EXIT_KMS_UNREACHABLE,
            StartError::Refused(_) => EXIT_KMS_REFUSED,
            StartError::InUse(_) => EXIT_IN_USE,
            StartError::Other(_) => EXIT_OTHER,
        }
    }

    /// A listener that could not bind `addr`: taken by another process, or an address that
    /// is not usable here.
    pub fn listen(what: &str, addr: &str, e: std::io::Error) -> StartError {
        let m = format!("{what} {addr}: {e}");
        match e.kind() {
            std::io::ErrorKind::AddrInUse => StartError::InUse(m),
            std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::InvalidInput => StartError::Config(m),
            _ => StartError::Other(m),
        }
    }
}

impl From<String> for StartError {
    fn from(m: String) -> Self {
        StartError::Other(m)
    }
}

impl From<OpenError> for StartError {
    fn from(e: OpenError) -> Self {
        let m = e.to_string();
        match e {
            OpenError::Store(StoreOpenError::Invalid(_)) => StartError::Config(m),
            OpenError::Store(StoreOpenError::Unreachable(_)) => StartError::Unreachable(m),
            OpenError::Store(StoreOpenError::InUse(_)) => StartError::InUse(m),
            OpenError::WrongRootKey(_) => StartError::Refused(m),
            OpenError::Store(StoreOpenError::Failed(_)) | OpenError::Failed(_) => StartError::Other(m),
        }
    }
}

impl From<TokenOpenError> for StartError {
    fn from(e: TokenOpenError) -> Self {
        let m = e.to_string();
        match e {
            TokenOpenError::Unavailable(_) => StartError::Unreachable(m),
            TokenOpenError::Login(_) => StartError::Refused(m),
        }
    }
}
