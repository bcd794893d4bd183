//! One exit-code table for every command line (kmsctl, kmsfs, blockcrypt) and the failure type
//! that carries a code to `main`. The table, with each tool's own codes, is in the README ("Exit
//! codes").

use crate::client::{ClientError, SetupError};

/// Exit codes every command line shares – kmsctl, kmsfs, blockcrypt (the table is in the README,
/// "Exit codes"; kmsfs and blockcrypt add their own from 3 up, 3 and 6–9):
pub const EXIT_OTHER: i32 = 1;
/// A usage error: a bad flag or value, a file given that cannot be used (clap exits 2 too).
pub const EXIT_USAGE: i32 = 2;
/// The KMS answered and refused (its error code is printed).
pub const EXIT_KMS_REFUSED: i32 = 4;
/// The KMS could not be reached, or nothing says where it is.
pub const EXIT_KMS_UNREACHABLE: i32 = 5;

/// For a command that prints and exits – not a daemon: a reader that goes away (`kmsctl ListKeys
/// | head -1`) ends the process quietly, as it ends `ls` or `cat`, instead of `println!`
/// panicking on EPIPE. Rust starts programs with SIGPIPE ignored so that a server sees EPIPE as
/// an error on one connection; `kmsfs mount` and `blockcrypt serve` must keep it that way.
pub fn end_quietly_on_closed_output() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code (nothing runs in signal context);
    // it only changes the process's disposition for SIGPIPE, called from the main thread before
    // any other thread exists or any output is written.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// A command-line failure: the message to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl std::fmt::Display) -> Failure {
        Failure { code, message: message.to_string() }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(EXIT_OTHER, message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::new(EXIT_OTHER, message)
    }
}

impl From<SetupError> for Failure {
    fn from(e: SetupError) -> Failure {
        let code = match e {
            SetupError::NotConfigured(_) => EXIT_KMS_UNREACHABLE,
            SetupError::Invalid(_) => EXIT_USAGE,
        };
        Failure::new(code, e)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match e {
            ClientError::Api { .. } => EXIT_KMS_REFUSED,
            ClientError::Transport(_) => EXIT_KMS_UNREACHABLE,
        };
        Failure::new(code, e)
    }
}
