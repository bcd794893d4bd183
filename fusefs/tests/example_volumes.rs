//! Example volumes kept as regression tests (gocryptfs's `tests/example_filesystems` is the
//! model): `tests/example_volumes/<cipher>/` holds a cipher directory an earlier build wrote and
//! the embedded KMS store (with its root key) that wraps its data key. Every build must pass
//! `kmsfs fsck` on it and read back exactly what was written – file contents across blocks, an
//! empty file, a long name (kept in a `.name` file), a long symlink target (kept in
//! `.kmsfs-links`) and a short one,
//! nested directories – so a change to the on-disk format (FORMAT.md) cannot slip in unnoticed.
//! Extended attributes live in the backing files' xattrs, which git does not keep: they are
//! covered by the POSIX tests, not here.
//!
//! Regenerate only for an intended, documented format change (as root, FUSE available):
//!     KMSFS_WRITE_VECTORS=1 cargo test -p fusefs --test example_volumes

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kmsfs, ok, Kms, Mount};

const CIPHERS: [&str; 2] = ["aes-256-gcm", "sm4-gcm"];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/example_volumes")
}

/// What every example volume holds: (path, contents) for files, (path, target) for symlinks.
fn files() -> Vec<(String, Vec<u8>)> {
    let long_name = format!("dir/{}", "n".repeat(200));
    vec![
        ("hello.txt".into(), b"hello, frozen world\n".to_vec()),
        ("empty".into(), Vec::new()),
        ("dir/sub/blocks.bin".into(), (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect()),
        (long_name, b"a name longer than the backing directory takes".to_vec()),
    ]
}

fn links() -> Vec<(String, String)> {
    vec![("link".into(), "hello.txt".into()), ("dir/far".into(), format!("/{}", "t".repeat(4000)))]
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn example_volumes_still_mount_and_read_back() {
    if !is_root() {
        eprintln!("needs root for FUSE mounts: skipped");
        return;
    }
    if std::env::var_os("KMSFS_WRITE_VECTORS").is_some() {
        for cipher in CIPHERS {
            write_example(cipher);
        }
    }
    for cipher in CIPHERS {
        let dirs = tempfile::tempdir().unwrap();
        // A copy (fsck and a mount may write: the log, access times); symlinks kept as they are.
        let st = Command::new("cp").arg("-a").arg(examples().join(cipher)).arg(dirs.path().join("v")).status().unwrap();
        assert!(st.success());
        for d in ["cipher", "kms"] {
            fs::rename(dirs.path().join("v").join(d), dirs.path().join(d)).unwrap();
        }
        // What a checkout loses: modes (a root key and a volume config must not be readable by
        // others) and empty directories (the two `init` makes).
        use std::os::unix::fs::PermissionsExt;
        for f in ["kms/root.key", "cipher/kmsfs.conf"] {
            fs::set_permissions(dirs.path().join(f), fs::Permissions::from_mode(0o600)).unwrap();
        }
        for d in ["cipher", "cipher/.kmsfs-trash", "cipher/.kmsfs-links"] {
            fs::create_dir_all(dirs.path().join(d)).unwrap();
            fs::set_permissions(dirs.path().join(d), fs::Permissions::from_mode(0o700)).unwrap();
        }
        let kms = Kms::embedded(&dirs.path().join("kms"));
        ok(&kmsfs(&kms, &["fsck", dirs.path().join("cipher").to_str().unwrap()]));
        let mut m = Mount::existing(dirs, kms);
        for (path, contents) in files() {
            assert_eq!(fs::read(m.mnt.join(&path)).unwrap(), contents, "{cipher}: {path}");
        }
        for (path, target) in links() {
            assert_eq!(fs::read_link(m.mnt.join(&path)).unwrap(), PathBuf::from(&target), "{cipher}: {path}");
        }
        let mut top: Vec<String> =
            fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        top.sort();
        assert_eq!(top, ["dir", "empty", "hello.txt", "link"], "{cipher}");
        m.unmount();
    }
}

/// Writes `tests/example_volumes/<cipher>/` anew with this build (see the module comment).
fn write_example(cipher: &str) {
    let mut m = Mount::with(&["--cipher", cipher]);
    for (path, contents) in files() {
        let p = m.mnt.join(&path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
    }
    for (path, target) in links() {
        std::os::unix::fs::symlink(&target, m.mnt.join(&path)).unwrap();
    }
    m.unmount();
    let out = examples().join(cipher);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(out.join("kms")).unwrap();
    let kms_dir = m.cipher.parent().unwrap().join("kms");
    // Everything into the database file itself (the engine leaves its log to the next opener).
    let db = rusqlite::Connection::open(kms_dir.join("kms.db")).unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    db.pragma_update(None, "journal_mode", "DELETE").unwrap();
    drop(db);
    for f in ["kms.db", "root.key"] {
        fs::copy(kms_dir.join(f), out.join("kms").join(f)).unwrap();
    }
    let st = Command::new("cp").arg("-a").arg(&m.cipher).arg(out.join("cipher")).status().unwrap();
    assert!(st.success());
    // The daemon's log is not part of the volume.
    let _ = fs::remove_file(out.join("cipher").join("kmsfs.log"));
}
