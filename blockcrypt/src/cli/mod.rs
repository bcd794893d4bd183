//! The `blockcrypt` command line: a thin layer over the library.

mod commands;
mod progress;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kms_client::envelope::KmsArgs;

use blockcrypt::lifecycle::DEFAULT_KEY_ID;
use blockcrypt::xts::Algorithm;

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 other failure; 2 usage; 3 not a blockcrypt volume, or a \
damaged one; 4 the KMS refused (disabled, deleted or ungranted key) or its key does not open the volume; \
5 the KMS is unreachable; 6 the volume is in use (being served); 7 check found problems.";

#[derive(Parser, Debug)]
#[command(
    name = "blockcrypt",
    version,
    about = "Encrypted virtual disks (LUKS1-compatible) with a KMS-wrapped per-disk key, served over NBD.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    kms: KmsArgs,
    #[command(flatten)]
    log: kms_client::logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum CipherArg {
    /// AES-256-XTS: LUKS1-compatible, opened by cryptsetup, qemu and nbdkit too.
    #[value(name = "aes-xts-plain64", alias = "aes-xts")]
    Aes,
    /// SM4-XTS (IEEE 1619 variant, as the Linux kernel): readable by blockcrypt only here.
    #[value(name = "sm4-xts-plain64", alias = "sm4-xts")]
    Sm4,
}

impl From<CipherArg> for Algorithm {
    fn from(c: CipherArg) -> Algorithm {
        match c {
            CipherArg::Aes => Algorithm::Aes,
            CipherArg::Sm4 => Algorithm::Sm4,
        }
    }
}

/// A volume: an image file, or a data file plus a detached header file.
#[derive(Args, Debug, Clone)]
pub struct VolumeArg {
    /// The volume's image (or, with --header, its data file of pure ciphertext).
    volume: PathBuf,
    /// A detached header file holding the LUKS header and the wrapped key.
    #[arg(long)]
    header: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    #[arg(long, value_enum, default_value = "aes-xts-plain64")]
    cipher: CipherArg,
    /// The KMS key that wraps the disk's data key.
    #[arg(long, default_value = DEFAULT_KEY_ID)]
    key_id: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new, sparse encrypted disk with a fresh data key from the KMS.
    Create {
        #[command(flatten)]
        vol: VolumeArg,
        /// Size: bytes, or with a K/M/G/T suffix (powers of 1024); a multiple of 512.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        #[command(flatten)]
        key: KeyArgs,
        /// Write encrypted zeroes over the whole disk, so that it reads as zeroes and takes its space now.
        #[arg(long)]
        preallocate: bool,
    },
    /// Encrypt an existing raw image into a new disk.
    Import {
        raw: PathBuf,
        #[command(flatten)]
        vol: VolumeArg,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Decrypt a disk into a new raw image.
    Export {
        #[command(flatten)]
        vol: VolumeArg,
        raw: PathBuf,
    },
    /// Serve disks over NBD (each EXPORT is [NAME=]PATH[,header=HEADER]; the name defaults to the file name).
    Serve {
        #[arg(required = true, value_name = "EXPORT")]
        exports: Vec<String>,
        #[command(flatten)]
        opts: ServeArgs,
    },
    /// A point-in-time copy of a disk that is not being served, sharing its data key.
    Snapshot {
        #[command(flatten)]
        vol: VolumeArg,
        snapshot: PathBuf,
        /// The snapshot's detached header (when the disk has one).
        #[arg(long)]
        snapshot_header: Option<PathBuf>,
    },
    /// A new disk from a snapshot: the same data key (a copy), or with --new-key re-encrypted under a new one.
    Clone {
        #[command(flatten)]
        vol: VolumeArg,
        new: PathBuf,
        /// The new disk's detached header.
        #[arg(long)]
        new_header: Option<PathBuf>,
        /// Generate a new data key (under --key-id) and re-encrypt every sector.
        #[arg(long)]
        new_key: bool,
        #[arg(long, value_enum, requires = "new_key")]
        cipher: Option<CipherArg>,
        #[arg(long, requires = "new_key")]
        key_id: Option<String>,
    },
    /// Re-wrap the data key under the KMS key's current version or another key (no data is rewritten).
    Rewrap {
        #[command(flatten)]
        vol: VolumeArg,
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Show a disk's header and record (no KMS call).
    Info {
        #[command(flatten)]
        vol: VolumeArg,
        #[arg(long)]
        json: bool,
    },
    /// Print the LUKS keyslot passphrase (for qemu, cryptsetup, nbdkit), or write it as a qemu secret file.
    Passphrase {
        #[command(flatten)]
        vol: VolumeArg,
        /// Write it to this new file (mode 0600) instead of standard output.
        #[arg(long)]
        qemu_secret: Option<PathBuf>,
    },
    /// Check a disk: header, record, key from the KMS, keyslot, sizes.
    Check {
        #[command(flatten)]
        vol: VolumeArg,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_shl(shift).filter(|v| v >> shift == n).ok_or_else(|| format!("{s} is too large"))
}

pub use kms_client::exit::{Failure, EXIT_KMS_REFUSED, EXIT_OTHER, EXIT_USAGE};
pub const EXIT_VOLUME: i32 = 3;
pub const EXIT_IN_USE: i32 = 6;
pub const EXIT_CHECK: i32 = 7;

pub fn run() -> i32 {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        kms_client::exit::end_quietly_on_closed_output();
    }
    if let Err(e) = cli.log.init("BLOCKCRYPT_LOG", "warn,blockcrypt=info", None) {
        eprintln!("blockcrypt: {e}");
        return EXIT_USAGE;
    }
    match commands::run(cli) {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("blockcrypt: {}", f.message);
            f.code
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert_eq!(super::parse_size("64M"), Ok(64 << 20));
        assert_eq!(super::parse_size("2g"), Ok(2 << 30));
        assert!(super::parse_size("1X").is_err());
        assert!(super::parse_size("99999999999T").is_err());
    }
}

/// How `serve` listens and what it lets clients hold.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Listen on this Unix socket.
    #[arg(long, conflicts_with = "tcp", required_unless_present = "tcp")]
    pub socket: Option<PathBuf>,
    /// Listen on this TCP address (loopback unless you mean it: NBD traffic is plaintext).
    #[arg(long)]
    pub tcp: Option<String>,
    /// Refuse writes.
    #[arg(long)]
    pub read_only: bool,
    /// Honour TRIM by punching holes in the ciphertext (reveals which sectors are unused).
    #[arg(long)]
    pub discard: bool,
    /// Require TLS (STARTTLS) with this PEM certificate chain.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Clients served at once; more are closed on accept. Each may hold up to 96 MiB of requests
    /// and replies in flight, so this bounds the server's memory too.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Seconds a client has from connecting to the end of the option phase (TLS included).
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout_secs: u64,
}
