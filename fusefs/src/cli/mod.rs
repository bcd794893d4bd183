//! Argument parsing and dispatch. Every failure ends in one line on stderr and an exit code that
//! says what kind of failure it was.

mod commands;
mod daemon;
mod daemon_log;
mod kms_opts;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use kms_client::envelope::KmsArgs;

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 other failure; 2 usage; 3 not a volume, or a damaged \
or foreign config; 4 the KMS refused (disabled/deleted CMK, access denied, wrong credentials); \
5 the KMS is unreachable; 6 the mountpoint is unusable or the volume is already mounted; \
7 fsck found problems.";

#[derive(Parser, Debug)]
#[command(name = "kmsfs", version, about = "An encrypting FUSE filesystem whose per-volume data key is wrapped by the KMS.", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    kms: KmsArgs,
    /// `--log-file` is where a background mount logs too; without it, the system log at
    /// /dev/log (or KMSFS_SYSLOG_SOCKET), else /var/log/kmsfs/<mountpoint>.log as root, else
    /// $XDG_STATE_HOME/kmsfs/<mountpoint>.log.
    #[command(flatten)]
    log: kms_client::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Cipher {
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    #[value(name = "sm4-gcm")]
    Sm4Gcm,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a volume in an empty directory: a new data key from the KMS, stored only wrapped.
    Init {
        cipherdir: PathBuf,
        /// The CMK that wraps the data key (id, alias or ARN).
        #[arg(long, default_value = kmsfs::lifecycle::DEFAULT_KEY_ID)]
        key_id: String,
        #[arg(long, value_enum, default_value = "aes-256-gcm")]
        cipher: Cipher,
    },
    /// Mount a volume (in the background unless -f; returns once the mount is ready).
    Mount {
        cipherdir: PathBuf,
        mountpoint: PathBuf,
        /// Stay in the foreground (logs to stderr).
        #[arg(short = 'f', long)]
        foreground: bool,
        /// Mount options: ro, rw, allow_other, allow_root, writeback, no_io_uring, no_sched_idle,
        /// and the kernel's noatime, nodiratime, relatime, strictatime, lazytime, nosuid, nodev,
        /// noexec, sync, dirsync, default_permissions.
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// /dev/fuse request threads (default: two per core, at least four; over io_uring two
        /// per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Show a volume's config (needs no KMS).
    Info { cipherdir: PathBuf },
    /// Re-wrap the data key under the CMK's current version or another CMK (data is not rewritten).
    Rewrap {
        cipherdir: PathBuf,
        /// Another CMK to wrap the data key under (default: the volume's own CMK).
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Verify every directory IV, name, header and block; report problems, repair nothing.
    Fsck { cipherdir: PathBuf },
}

pub use kms_client::exit::{Failure, EXIT_KMS_REFUSED, EXIT_KMS_UNREACHABLE, EXIT_OTHER, EXIT_USAGE};
pub const EXIT_CONFIG: i32 = 3;
pub const EXIT_MOUNTPOINT: i32 = 6;
pub const EXIT_FSCK: i32 = 7;

pub fn run() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Mount { .. }) {
        kms_client::exit::end_quietly_on_closed_output();
    }
    let verbose = matches!(&cli.command, Command::Mount { foreground: true, .. }) || daemon::is_daemon();
    // A background mount without --log-file logs to syslog or a file of its own (daemon_log.rs).
    let own_log = match &cli.command {
        Command::Mount { mountpoint, foreground: false, .. } if daemon::is_daemon() && cli.log.log_file.is_none() => {
            Some(mountpoint.clone())
        }
        _ => None,
    };
    if let Err(e) = init_logging(&cli.log, verbose, own_log.as_deref()) {
        eprintln!("kmsfs: {e}");
        return EXIT_USAGE;
    }
    match commands::dispatch(cli) {
        Ok(()) => 0,
        Err(f) => {
            daemon::report_failure(&f);
            eprintln!("kmsfs: {}", f.message);
            f.code
        }
    }
}

fn init_logging(
    log: &kms_client::logging::LogArgs,
    verbose: bool,
    daemon_mountpoint: Option<&std::path::Path>,
) -> Result<(), String> {
    let default = if verbose { "info" } else { "warn" };
    let own = daemon_mountpoint
        .and_then(|mp| daemon_log::writer(&std::fs::canonicalize(mp).unwrap_or_else(|_| mp.into())).ok());
    log.init("KMSFS_LOG", default, own)
}
