//! The subcommands.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::kms_opts;
use kms_client::envelope::KmsArgs;
use kms_core::crypto::Algorithm;
use kmsfs::content::Layout;
use kmsfs::lifecycle::{self, VolumeError};
use kmsfs::mount::{KmsFs, MountOptions};
use kmsfs::volume::{cipher_name, ConfigError, VolumeConfig, CONFIG_VERSION};
use rustix::fs::{FlockOperation, Mode, OFlags};

use super::{
    daemon, Cipher, Cli, Command, Failure, EXIT_CONFIG, EXIT_FSCK, EXIT_KMS_REFUSED, EXIT_KMS_UNREACHABLE,
    EXIT_MOUNTPOINT, EXIT_OTHER, EXIT_USAGE,
};

fn fail(e: VolumeError) -> Failure {
    let code = match &e {
        VolumeError::Config(ConfigError::Io(_)) | VolumeError::Io(_) | VolumeError::NotEmpty(_) => EXIT_OTHER,
        VolumeError::Config(_) | VolumeError::Exposed(_) => EXIT_CONFIG,
        VolumeError::Kms(f) if f.code.is_none() => EXIT_KMS_UNREACHABLE,
        VolumeError::Kms(_) | VolumeError::BadDataKey(_) => EXIT_KMS_REFUSED,
    };
    Failure::new(code, e)
}

pub fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Init { cipherdir, key_id, cipher } => {
            let alg = match cipher {
                Cipher::Aes256Gcm => Algorithm::Aes256Gcm,
                Cipher::Sm4Gcm => Algorithm::Sm4Gcm,
            };
            let kms = kms_opts::connect(&cli.kms)?;
            let c = lifecycle::init(&cipherdir, kms.as_ref(), &key_id, alg).map_err(fail)?;
            println!(
                "kmsfs: created volume {} ({}) in {}, data key wrapped under {}",
                c.volume_id_hex(),
                cipher_name(c.cipher),
                cipherdir.display(),
                c.key_id
            );
            Ok(())
        }
        Command::Mount { cipherdir, mountpoint, foreground, options, threads } => {
            // A mistyped option is the caller's mistake, found before anything is started.
            let mut opts = MountOptions::parse(&options).map_err(|e| Failure::new(EXIT_USAGE, e))?;
            opts.threads = threads;
            if !foreground && !daemon::is_daemon() {
                let pid = daemon::spawn(cli.log.log_file.as_deref())?;
                println!("kmsfs: mounted {} on {} (daemon pid {pid})", cipherdir.display(), mountpoint.display());
                return Ok(());
            }
            daemon::detach();
            mount(&cli.kms, &cipherdir, &mountpoint, opts)
        }
        Command::Info { cipherdir } => info(&cipherdir),
        Command::Rewrap { cipherdir, key_id } => {
            let kms = kms_opts::connect(&cli.kms)?;
            let before = VolumeConfig::load(&cipherdir).map_err(|e| fail(e.into()))?;
            let old_key = before.key_id.clone();
            let c = lifecycle::rewrap_config(&cipherdir, before, kms.as_ref(), key_id.as_deref()).map_err(fail)?;
            println!("kmsfs: data key of volume {} re-wrapped: {old_key} -> {}", c.volume_id_hex(), c.key_id);
            Ok(())
        }
        Command::Fsck { cipherdir } => fsck(&cli.kms, &cipherdir),
    }
}

fn info(dir: &Path) -> Result<(), Failure> {
    let c = VolumeConfig::load(dir).map_err(|e| fail(e.into()))?;
    let mounted = lock_volume(dir, false).is_err();
    println!("volume:             {}", c.volume_id_hex());
    println!("format:             kmsfs v{CONFIG_VERSION}");
    println!("cipher:             {}", cipher_name(c.cipher));
    println!("block size:         {}", c.block_size.get());
    println!("key id:             {}", c.key_id);
    println!("encryption context: {}", c.encryption_context);
    println!("wrapped data key:   {} bytes", c.wrapped_data_key.len());
    println!("mounted:            {}", if mounted { "yes (locked by a kmsfs process)" } else { "no" });
    Ok(())
}

/// Locks the cipher directory: exclusively for a mount (one mount per volume – two would
/// cache and write the same files behind each other's back), shared for fsck.
fn lock_volume(dir: &Path, exclusive: bool) -> Result<OwnedFd, Failure> {
    let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Failure::new(EXIT_OTHER, format!("{}: {e}", dir.display())))?;
    let op = if exclusive { FlockOperation::NonBlockingLockExclusive } else { FlockOperation::NonBlockingLockShared };
    rustix::fs::flock(&fd, op).map_err(|_| {
        Failure::new(
            EXIT_MOUNTPOINT,
            format!("{} is in use: the volume is mounted (or being checked) by another kmsfs process", dir.display()),
        )
    })?;
    Ok(fd)
}

fn check_mountpoint(cipherdir: &Path, mountpoint: &Path) -> Result<PathBuf, Failure> {
    let bad = |why: String| Failure::new(EXIT_MOUNTPOINT, format!("mountpoint {}: {why}", mountpoint.display()));
    let why = |e: std::io::Error| match e.raw_os_error() {
        // What a FUSE mount whose daemon died leaves behind.
        Some(libc::ENOTCONN | libc::ECONNABORTED) => bad(format!(
            "{e}: a FUSE mount whose daemon is gone (a crash or kill); lift it with `fusermount3 -u {}`",
            mountpoint.display()
        )),
        _ => bad(e.to_string()),
    };
    let mp = mountpoint.canonicalize().map_err(why)?;
    if !std::fs::metadata(&mp).map_err(why)?.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if kmsfs::mount::mounted_device(&mp).is_some() {
        return Err(bad("already a mount point (in use)".into()));
    }
    if let Ok(cd) = cipherdir.canonicalize() {
        if mp.starts_with(&cd) {
            return Err(bad("inside the cipher directory".into()));
        }
    }
    Ok(mp)
}

fn mount(kms: &KmsArgs, cipherdir: &Path, mountpoint: &Path, opts: MountOptions) -> Result<(), Failure> {
    // Everything that can be refused is checked before the KMS is asked and before anything is
    // mounted; none of it writes to the cipher directory.
    let mp = check_mountpoint(cipherdir, mountpoint)?;
    let config = VolumeConfig::load(cipherdir).map_err(|e| fail(e.into()))?;
    lifecycle::check_private_dir(cipherdir).map_err(fail)?;
    let _lock = lock_volume(cipherdir, true)?;
    let (config, keys) = {
        let service = kms_opts::connect(kms)?;
        lifecycle::unlock_config(config, service.as_ref()).map_err(fail)?
        // The KMS connection (or embedded engine) ends here: I/O never needs it.
    };
    let root = rustix::fs::open(cipherdir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Failure::new(EXIT_OTHER, e))?;
    raise_fd_limit();
    // Modes arrive with the caller's umask applied; ours must not strip them again.
    rustix::process::umask(Mode::empty());
    let layout = Layout { block_size: config.block_size.get() };
    let fs = KmsFs::new(root, Arc::new(keys), layout, &opts).map_err(|e| Failure::new(EXIT_OTHER, e))?;
    let mut opts = opts;
    opts.fsname = format!("kmsfs:{}", cipherdir.canonicalize().unwrap_or(cipherdir.to_path_buf()).display());
    if daemon::is_daemon() {
        // Everything is open or absolute by now; the daemon must not keep the caller's directory busy.
        let _ = std::env::set_current_dir("/");
    }
    tracing::info!("volume {} ({}) mounting on {}", config.volume_id_hex(), cipher_name(config.cipher), mp.display());
    kmsfs::mount::mount(fs, &mp, &opts, daemon::report_ready)
        .map_err(|e| Failure::new(EXIT_MOUNTPOINT, format!("mount on {}: {e}", mp.display())))?;
    tracing::info!("unmounted {}", mp.display());
    Ok(())
}

/// The mount holds one descriptor per inode the kernel knows (until the kernel forgets it), so
/// it takes as many as it may: as root, up to the system's `nr_open`; otherwise the hard limit.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(max) = nr_open.filter(|&m| l.maximum.is_some_and(|h| h < m)) {
        let raised = rustix::process::Rlimit { current: Some(max), maximum: Some(max) };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return;
        }
    }
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
    match l.current {
        Some(n) => tracing::info!("open file limit {n}: the kernel may cache about that many inodes of this mount"),
        None => tracing::info!("open file limit: unlimited"),
    }
}

fn fsck(kms: &KmsArgs, dir: &Path) -> Result<(), Failure> {
    let config = VolumeConfig::load(dir).map_err(|e| fail(e.into()))?;
    let _lock = lock_volume(dir, false)?;
    let service = kms_opts::connect(kms)?;
    let (config, keys) = lifecycle::unlock_config(config, service.as_ref()).map_err(fail)?;
    drop(service);
    let report = kmsfs::fsck::check(dir, &Arc::new(keys), Layout { block_size: config.block_size.get() });
    for p in &report.problems {
        match &p.plain {
            Some(plain) => println!("problem: {} (backing {}): {}", plain.display(), p.path.display(), p.what),
            None => println!("problem: {}: {}", p.path.display(), p.what),
        }
    }
    println!(
        "kmsfs fsck: {} directories, {} files, {} bytes checked; {} problem(s)",
        report.dirs,
        report.files,
        report.bytes,
        report.problems.len()
    );
    // What authenticated blocks cannot show (FORMAT.md §1), said every time rather than implied.
    println!(
        "not detectable by fsck: an older version of a block replayed at its position, a whole block \
         zeroed (reads as a hole), a file cut at a block boundary (reads as the shorter file)"
    );
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure::new(EXIT_FSCK, format!("{} problem(s) found in {}", report.problems.len(), dir.display())))
    }
}
