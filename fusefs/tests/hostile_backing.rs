//! The daemon (root, as in production with `allow_other`) against a cipher directory someone
//! tampers with while the kernel still holds an inode: a backing name swapped for a symlink to a
//! file outside, or for a FIFO. No call may reach the outside file, none may hang; and the cipher
//! directory is private.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

/// What an outside file looks like; nothing the daemon does may change it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    content: Vec<u8>,
    xattrs: usize,
}

fn snapshot(p: &Path) -> Snapshot {
    let m = std::fs::metadata(p).unwrap();
    let xattrs = rustix::fs::listxattr(p, &mut [0u8; 1024]).unwrap_or(0);
    Snapshot {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        content: std::fs::read(p).unwrap(),
        xattrs,
    }
}

/// A file made through the mount, held by an `O_PATH` descriptor after a remount (the kernel keeps
/// its inode; the daemon knows it by name only, with no open content), and its backing file.
fn held_file(m: &mut common::Mount, name: &str) -> (OwnedFd, PathBuf) {
    let before = m.backing_files();
    std::fs::write(m.mnt.join(name), b"inside").unwrap();
    m.remount();
    let fd = rustix::fs::open(m.mnt.join(name), OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let backing = m.backing_files().into_iter().find(|p| !before.contains(p)).unwrap();
    (fd, backing)
}

fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).unwrap_or_else(|_| panic!("{what} did not return in {secs} s"))
}

#[test]
fn a_backing_name_swapped_for_a_symlink_is_never_followed() {
    let mut m = common::Mount::new();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("shadow");
    std::fs::write(&victim, b"root:secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = snapshot(&victim);

    let (held, backing) = held_file(&mut m, "f");
    std::fs::remove_file(&backing).unwrap();
    std::os::unix::fs::symlink(&victim, &backing).unwrap();
    let p = proc_path(&held);

    // Every path-based call the daemon makes, through the inode the kernel still has.
    let results: Vec<(&str, std::io::Result<()>)> = vec![
        ("chmod", std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o4777))),
        ("chown", std::os::unix::fs::chown(&p, Some(1000), Some(1000))),
        (
            "utimes",
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec { tv_sec: 1, tv_nsec: 0 },
                    last_modification: rustix::fs::Timespec { tv_sec: 1, tv_nsec: 0 },
                },
                rustix::fs::AtFlags::empty(),
            )
            .map_err(Into::into),
        ),
        ("truncate", {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: `c` is a NUL-terminated path that outlives the call.
            match unsafe { libc::truncate(c.as_ptr(), 0) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        }),
        ("open", std::fs::read(&p).map(|_| ())),
        ("write", std::fs::OpenOptions::new().write(true).open(&p).map(|_| ())),
        (
            "setxattr",
            rustix::fs::setxattr(&p, "user.planted", b"1", rustix::fs::XattrFlags::empty()).map_err(Into::into),
        ),
        ("getxattr", rustix::fs::getxattr(&p, "user.x", &mut [0u8; 64]).map(|_| ()).map_err(Into::into)),
        ("access", rustix::fs::access(&p, rustix::fs::Access::WRITE_OK).map_err(Into::into)),
        (
            "link",
            rustix::fs::linkat(
                rustix::fs::CWD,
                &p,
                rustix::fs::CWD,
                m.mnt.join("g"),
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            )
            .map_err(Into::into),
        ),
    ];
    assert_eq!(snapshot(&victim), before, "the file outside the volume was changed");
    for (what, r) in &results {
        assert!(r.is_err(), "{what} succeeded on a swapped backing object");
    }
    assert!(std::fs::symlink_metadata(m.mnt.join("g")).is_err(), "no link to the outside file appeared");
    assert!(m.log_text().contains("backing object replaced"), "the refusal is logged");
}

#[test]
fn fifos_and_devices_under_a_known_name_answer_an_error_at_once() {
    let mut m = common::Mount::new();
    for (name, make) in [
        (
            "fifo",
            &(|p: &Path| {
                rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o666), 0)
            }) as &dyn Fn(&Path) -> rustix::io::Result<()>,
        ),
        (
            "null",
            &(|p: &Path| {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    p,
                    rustix::fs::FileType::CharacterDevice,
                    Mode::from_raw_mode(0o666),
                    rustix::fs::makedev(1, 3),
                )
            }),
        ),
    ] {
        let (held, backing) = held_file(&mut m, name);
        std::fs::remove_file(&backing).unwrap();
        make(&backing).unwrap();
        let p = proc_path(&held);
        let read = within(5, &format!("read of a {name}"), move || std::fs::read(&p).map(|_| ()));
        assert!(read.is_err(), "{name}: read succeeded");
        drop(held);
    }
}

#[test]
fn the_cipher_directory_is_private() {
    let m = common::Mount::new();
    let mode = std::fs::metadata(&m.cipher).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "kmsfs init makes the cipher directory 0700");
    // An unprivileged local user cannot reach a backing object (nor list them).
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(&m.cipher)
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody listed the cipher directory");
    drop(m);

    // A volume whose directory others can enter is not mounted.
    let mut m = common::Mount::new();
    m.unmount();
    std::fs::set_permissions(&m.cipher, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(common::kmsfs_bin())
        .args(&m.kms.args)
        .envs(m.kms.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["mount", "-f"])
        .arg(&m.cipher)
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mode 755") && err.contains("chmod 700"), "{err}");
    std::fs::set_permissions(&m.cipher, std::fs::Permissions::from_mode(0o700)).unwrap();
    m.mount();
}

#[test]
fn planted_fifos_devices_and_huge_files_in_place_of_metadata_fail_at_once() {
    let mut m = common::Mount::new();
    let long = "長".repeat(80); // too long once encrypted: kept under a hashed name plus a `.name` file
    std::fs::create_dir(m.mnt.join("d")).unwrap();
    std::fs::write(m.mnt.join("d").join(&long), b"x").unwrap();
    std::fs::create_dir(m.mnt.join("e")).unwrap();
    m.unmount();
    let find = |suffix: &str| -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(&m.cipher).unwrap() {
            let d = d.unwrap().path();
            if d.is_dir() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.to_string_lossy().ends_with(suffix) {
                        out.push(p);
                    }
                }
            }
        }
        out
    };
    let name_file = find(".name").pop().expect("a .name file");
    let ivs = find("kmsfs.diriv");
    let fifo = |p: &Path| {
        std::fs::remove_file(p).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, p, rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o666), 0).unwrap();
    };
    // The `.name` file a FIFO, and every directory IV a FIFO.
    fifo(&name_file);
    for iv in &ivs {
        fifo(iv);
    }
    m.mount();
    for dir in ["d", "e"] {
        let p = m.mnt.join(dir);
        let listed = within(5, &format!("listing {dir}"), move || std::fs::read_dir(&p).map(|r| r.count()));
        assert!(listed.is_err(), "{dir}: a directory whose IV is a FIFO lists");
    }
    m.unmount();
    // A `.name` file of 1 MiB, or a symlink to /dev/zero: the entry is left out, at once.
    for iv in &ivs {
        std::fs::remove_file(iv).unwrap();
        std::fs::write(iv, [7u8; 16]).unwrap();
    }
    for plant in ["huge", "link"] {
        let _ = std::fs::remove_file(&name_file);
        match plant {
            "huge" => std::fs::write(&name_file, vec![b'A'; 1 << 20]).unwrap(),
            _ => std::os::unix::fs::symlink("/dev/zero", &name_file).unwrap(),
        }
        m.mount();
        let p = m.mnt.join("d");
        let names = within(5, plant, move || std::fs::read_dir(&p).unwrap().count());
        assert_eq!(names, 0, "{plant}: the entry with a bad .name file is left out");
        m.unmount();
    }
}
