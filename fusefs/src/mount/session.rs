//! Mounting: the kernel session with its worker threads, the mount options, and a clean unmount
//! on SIGTERM/SIGINT/SIGHUP (a busy mount is detached lazily rather than left behind).

use std::io;
use std::path::Path;

use fuser::{Config, MountOption, SessionACL};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::KmsFs;

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    /// The kernel's writeback cache (`-o writeback`): small writes are gathered in the page cache
    /// and sent later. Off by default: large sequential writes are faster without it here.
    pub writeback: bool,
    /// FUSE over io_uring when the kernel offers it (`-o no_io_uring` turns it off).
    pub io_uring: bool,
    /// The io_uring threads run as SCHED_IDLE (`-o no_sched_idle` turns it off): a caller woken
    /// by a reply then stays on the CPU that served it instead of being moved to an idle one.
    pub sched_idle: bool,
    /// Other `-o` options, passed to the kernel as they are (`noatime`, `nosuid`, …).
    pub other: Vec<String>,
    /// `/dev/fuse` request threads (default: two per core, at least four); over io_uring there
    /// are two per CPU queue and one `/dev/fuse` reader for FORGET and INTERRUPT.
    pub threads: Option<usize>,
    /// Shown as the mount's source in `/proc/mounts`.
    pub fsname: String,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            read_only: false,
            allow_other: false,
            allow_root: false,
            writeback: false,
            io_uring: true,
            sched_idle: true,
            other: vec![],
            threads: None,
            fsname: String::new(),
        }
    }
}

/// Kernel mount options passed through as they are.
pub const KERNEL_OPTIONS: &[&str] = &[
    "noatime",
    "nodiratime",
    "relatime",
    "strictatime",
    "lazytime",
    "nosuid",
    "nodev",
    "noexec",
    "sync",
    "dirsync",
    "default_permissions",
];

impl MountOptions {
    /// Parses `-o a,b,c` options: kmsfs's own, and the kernel mount options that mean something
    /// for this filesystem ([`KERNEL_OPTIONS`]); anything else is refused, naming the option.
    pub fn parse(list: &[String]) -> Result<MountOptions, String> {
        let mut o = MountOptions::default();
        for opt in list.iter().flat_map(|l| l.split(',')).filter(|s| !s.is_empty()) {
            match opt {
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "allow_other" => o.allow_other = true,
                "allow_root" => o.allow_root = true,
                "writeback" => o.writeback = true,
                "io_uring" => o.io_uring = true,
                "no_io_uring" => o.io_uring = false,
                "sched_idle" => o.sched_idle = true,
                "no_sched_idle" => o.sched_idle = false,
                kernel if KERNEL_OPTIONS.contains(&kernel) => o.other.push(kernel.to_string()),
                unknown => {
                    return Err(format!(
                        "unknown mount option {unknown:?}: kmsfs takes ro, rw, allow_other, allow_root, writeback, \
                         no_io_uring, no_sched_idle and the kernel's {}",
                        KERNEL_OPTIONS.join(", ")
                    ))
                }
            }
        }
        Ok(o)
    }

    fn config(&self) -> Config {
        let mut config = Config::default();
        let mut opts = vec![
            MountOption::FSName(self.fsname.clone()),
            MountOption::Subtype("kmsfs".into()),
            if self.read_only { MountOption::RO } else { MountOption::RW },
        ];
        // Shared with other users, the kernel must check permissions against the attributes we
        // report. A private mount (the default: only the daemon's own user may enter) lets the
        // backing filesystem check them as that user – as gocryptfs does – which spares a
        // GETATTR of the parent after every change in a directory.
        if self.allow_other || self.allow_root {
            opts.push(MountOption::DefaultPermissions);
        }
        opts.extend(self.other.iter().map(|o| MountOption::CUSTOM(o.clone())));
        config.mount_options = opts;
        config.acl = if self.allow_other {
            SessionACL::All
        } else if self.allow_root {
            SessionACL::RootAndOwner
        } else {
            SessionACL::Owner
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        config.n_threads = Some(self.threads.unwrap_or((2 * cores).max(4)));
        config.clone_fd = true;
        config.uring_sched_idle = self.sched_idle;
        config
    }
}

/// Mounts `fs` on `mountpoint`, calls `ready` once the mount is live, and serves requests until
/// the filesystem is unmounted (by `umount`/`fusermount -u`, or a signal).
pub fn mount(fs: KmsFs, mountpoint: &Path, options: &MountOptions, ready: impl FnOnce()) -> io::Result<()> {
    let mut session = fuser::Session::new(fs, mountpoint, &options.config())?;
    let mut unmounter = session.unmount_callable();
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    let target = mountpoint.to_path_buf();
    let watcher = std::thread::Builder::new().name("kmsfs-signals".into()).spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!("signal {sig}: unmounting {}", target.display());
            if let Err(e) = unmounter.unmount() {
                tracing::warn!("unmount of {} failed ({e}); detaching it lazily", target.display());
                let _ = rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH);
            }
        }
    })?;
    widen_readahead(mountpoint);
    ready();
    let result = session.run();
    handle.close();
    let _ = watcher.join();
    result
}

/// The kernel reads ahead of FUSE readers by 128 KiB requests; 1 MiB ones (what max_write/
/// max_pages allow) cut the round trips of a sequential read by eight (+20% cold read here). Only
/// root may set it; elsewhere the default stays. The device is taken from mountinfo, not from a
/// `stat` of the mountpoint, which would be a request to this very filesystem before it serves.
fn widen_readahead(mountpoint: &Path) {
    if let Some(dev) = mounted_device(mountpoint) {
        let _ = std::fs::write(format!("/sys/class/bdi/{dev}/read_ahead_kb"), "1024");
    }
}

/// The device (`major:minor`) of the newest mount on `path` (canonical), from
/// `/proc/self/mountinfo`; `None` if nothing is mounted there.
pub fn mounted_device(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = path.to_string_lossy().replace(' ', "\\040");
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&target.as_str())).then(|| f.get(2).map(|d| d.to_string()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_ours_or_known_kernel_ones() {
        let o = MountOptions::parse(&["ro,noatime".into(), "no_io_uring".into()]).unwrap();
        assert!(o.read_only && !o.io_uring);
        assert_eq!(o.other, ["noatime"]);
        let err = MountOptions::parse(&["ro,bogus".into()]).unwrap_err();
        assert!(err.contains("\"bogus\"") && err.contains("noatime"), "{err}");
        assert!(MountOptions::parse(&["fd=3".into()]).is_err(), "nothing the mount itself sets");
    }
}
