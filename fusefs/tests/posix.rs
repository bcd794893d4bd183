//! POSIX behaviour on a real mount, each operation done the same way on a plain directory and the
//! results compared: contents, sizes, errors, link counts, types, permissions, times, locks,
//! xattrs, mmap, sparse and large files, concurrent access.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use common::Mount;

fn err_kind<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// Runs `f` on the mount and on the plain directory and asserts both give the same answer.
fn same<T: PartialEq + std::fmt::Debug>(m: &Mount, what: &str, f: impl Fn(&Path) -> T) -> T {
    let (a, b) = (f(&m.mnt), f(&m.plain));
    assert_eq!(a, b, "{what}: mount vs plain directory");
    a
}

#[test]
fn files_read_write_truncate_append_sparse() {
    let m = Mount::new();
    same(&m, "write at offsets, read back", |d| {
        let p = d.join("f");
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        f.write_all_at(b"hello world", 0).unwrap();
        f.write_all_at(b"XY", 4).unwrap();
        f.write_all_at(&[7u8; 10000], 5000).unwrap(); // across blocks, leaving a gap
        f.write_all_at(b"end", 20_000).unwrap();
        let mut all = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut all).unwrap();
        let mut mid = [0u8; 100];
        let n = f.read_at(&mut mid, 4090).unwrap();
        (all.len(), blake(&all), n, mid.to_vec(), fs::metadata(&p).unwrap().len())
    });
    same(&m, "truncate down and up (sparse), O_TRUNC", |d| {
        let p = d.join("f");
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(4097).unwrap();
        f.set_len(3).unwrap();
        f.set_len(1 << 20).unwrap();
        let a = fs::read(&p).unwrap();
        let tail_zero = a[3..].iter().all(|&b| b == 0);
        OpenOptions::new().write(true).truncate(true).open(&p).unwrap();
        (a.len(), a[..3].to_vec(), tail_zero, fs::metadata(&p).unwrap().len())
    });
    same(&m, "O_APPEND from two handles", |d| {
        let p = d.join("log");
        let mut a = OpenOptions::new().append(true).create(true).open(&p).unwrap();
        let mut b = OpenOptions::new().append(true).open(&p).unwrap();
        for i in 0..50 {
            writeln!(a, "a{i}").unwrap();
            writeln!(b, "b{i}").unwrap();
        }
        fs::read_to_string(&p).unwrap()
    });
    same(&m, "seek and read past the end, write-only opens", |d| {
        let p = d.join("wo");
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&p).unwrap();
        f.write_all(&[1u8; 5000]).unwrap();
        f.seek(SeekFrom::Start(100)).unwrap();
        f.write_all(b"patch").unwrap();
        drop(f);
        let mut r = File::open(&p).unwrap();
        r.seek(SeekFrom::Start(6000)).unwrap();
        let mut buf = [0u8; 10];
        let past = r.read(&mut buf).unwrap();
        (past, fs::read(&p).unwrap()[95..110].to_vec())
    });
    // Holes take no space in the cipher directory either.
    let big = m.mnt.join("sparse");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&big).unwrap();
    f.write_all_at(b"x", 1 << 30).unwrap();
    f.sync_all().unwrap();
    let used = fs::metadata(&big).unwrap().blocks() * 512;
    assert!(used < 1 << 20, "a 1 GiB hole is not stored: {used} bytes used");
    let mut buf = vec![1u8; 65536];
    f.read_exact_at(&mut buf, 1 << 29).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

/// A 64-bit FNV-1a: enough to compare contents in assertion messages without printing them.
fn blake(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100000001b3))
}

#[test]
fn large_file_beyond_4_gib() {
    let m = Mount::new();
    let p = m.mnt.join("large");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    let marks: Vec<u64> = vec![0, (4 << 30) - 10, 4 << 30, (5 << 30) + 12345];
    for (i, &off) in marks.iter().enumerate() {
        f.write_all_at(format!("mark-{i}").as_bytes(), off).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    m.drop_caches();
    let f = File::open(&p).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (5 << 30) + 12345 + 6);
    for (i, &off) in marks.iter().enumerate() {
        let mut b = [0u8; 6];
        f.read_exact_at(&mut b, off).unwrap();
        assert_eq!(&b, format!("mark-{i}").as_bytes(), "at {off}");
    }
}

#[test]
fn directories_renames_links_symlinks() {
    let m = Mount::new();
    same(&m, "mkdir, nested files, readdir with types", |d| {
        fs::create_dir_all(d.join("a/b/c")).unwrap();
        fs::write(d.join("a/file"), b"1").unwrap();
        std::os::unix::fs::symlink("file", d.join("a/link")).unwrap();
        let mut names: Vec<(String, bool, bool, bool)> = fs::read_dir(d.join("a"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let t = e.file_type().unwrap();
                (e.file_name().to_string_lossy().into_owned(), t.is_dir(), t.is_file(), t.is_symlink())
            })
            .collect();
        names.sort();
        names
    });
    same(&m, "rmdir of a non-empty directory, of an empty one, unlink of a directory", |d| {
        let e1 = err_kind(fs::remove_dir(d.join("a/b")));
        let e2 = err_kind(fs::remove_file(d.join("a/b")));
        fs::remove_dir(d.join("a/b/c")).unwrap();
        let listing = fs::read_dir(d.join("a/b")).unwrap().count();
        (e1, e2, listing)
    });
    same(&m, "rename: file over file, directory over empty directory, across directories", |d| {
        fs::write(d.join("x"), b"new").unwrap();
        fs::write(d.join("y"), b"old").unwrap();
        fs::rename(d.join("x"), d.join("y")).unwrap();
        fs::create_dir(d.join("empty")).unwrap();
        fs::rename(d.join("a/b"), d.join("empty")).unwrap();
        fs::create_dir(d.join("full")).unwrap();
        fs::write(d.join("full/f"), b"").unwrap();
        let over_full = err_kind(fs::rename(d.join("empty"), d.join("full")));
        fs::rename(d.join("a"), d.join("full/a")).unwrap();
        let file_over_dir = err_kind(fs::rename(d.join("y"), d.join("full")));
        (
            fs::read(d.join("y")).unwrap(),
            d.join("x").exists(),
            d.join("empty").is_dir(),
            over_full,
            fs::read(d.join("full/a/file")).unwrap(),
            fs::read_link(d.join("full/a/link")).unwrap(),
            fs::read(d.join("full/a/link")).unwrap(),
            file_over_dir,
        )
    });
    same(&m, "hard links share contents, inode and count", |d| {
        fs::write(d.join("h1"), b"shared").unwrap();
        fs::hard_link(d.join("h1"), d.join("h2")).unwrap();
        OpenOptions::new().append(true).open(d.join("h2")).unwrap().write_all(b"+more").unwrap();
        let (a, b) = (fs::metadata(d.join("h1")).unwrap(), fs::metadata(d.join("h2")).unwrap());
        let same_ino = a.ino() == b.ino();
        fs::remove_file(d.join("h1")).unwrap();
        (fs::read(d.join("h2")).unwrap(), same_ino, a.nlink(), fs::metadata(d.join("h2")).unwrap().nlink())
    });
    same(&m, "long names, long symlink targets", |d| {
        let long = "n".repeat(255);
        fs::write(d.join(&long), b"long").unwrap();
        let target = "t/".repeat(1000);
        std::os::unix::fs::symlink(&target, d.join("longlink")).unwrap();
        let listed = fs::read_dir(d).unwrap().any(|e| e.unwrap().file_name().len() == 255);
        fs::rename(d.join(&long), d.join(long.replace('n', "m"))).unwrap();
        let too_long = err_kind(fs::write(d.join("x".repeat(256)), b""));
        (
            listed,
            fs::read(d.join(long.replace('n', "m"))).unwrap(),
            fs::read_link(d.join("longlink")).unwrap().as_os_str().len(),
            fs::symlink_metadata(d.join("longlink")).unwrap().len(),
            too_long,
        )
    });
    // Inode numbers: stat and readdir agree, and survive a remount.
    let ino = |m: &Mount| fs::metadata(m.mnt.join("y")).unwrap().ino();
    let before = ino(&m);
    let d_ino = fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap()).find(|e| e.file_name() == "y").unwrap();
    assert_eq!(std::os::unix::fs::DirEntryExt::ino(&d_ino), before);
    drop(d_ino); // it keeps the directory open
    let mut m = m;
    m.remount();
    assert_eq!(ino(&m), before, "inode numbers are stable across mounts");
    // Names in the cipher directory reveal nothing, and the same name differs between directories.
    fs::write(m.mnt.join("same"), b"").unwrap();
    fs::write(m.mnt.join("full/same"), b"").unwrap();
    let mut all: Vec<String> = Vec::new();
    let mut todo = vec![m.cipher.clone()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().map(|e| e.unwrap()) {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
            all.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    all.retain(|n| !n.starts_with("kmsfs.") && !n.starts_with(".kmsfs-"));
    assert!(all.iter().all(|n| !n.contains("same") && !n.contains("full") && !n.contains("link")), "{all:?}");
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "equal names in different directories differ: {all:?}");
}

#[test]
fn attributes_times_statfs_xattrs() {
    let m = Mount::new();
    same(&m, "chmod, utimens, chown", |d| {
        let p = d.join("f");
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_600_000_000, 123_456_789);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
        std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
        let md = fs::metadata(&p).unwrap();
        fs::create_dir(d.join("dir")).unwrap();
        fs::set_permissions(d.join("dir"), fs::Permissions::from_mode(0o711)).unwrap();
        (
            md.mode(),
            md.mtime(),
            md.mtime_nsec(),
            md.atime(),
            md.uid(),
            md.gid(),
            fs::metadata(d.join("dir")).unwrap().mode(),
        )
    });
    // statfs reports the backing filesystem.
    let (a, b) = (rustix::fs::statvfs(&m.mnt).unwrap(), rustix::fs::statvfs(&m.plain).unwrap());
    assert_eq!((a.f_blocks, a.f_bsize), (b.f_blocks, b.f_bsize));
    assert_eq!(a.f_namemax, 255);
    // st_blocks follows what is stored.
    fs::write(m.mnt.join("blocks"), vec![9u8; 100_000]).unwrap();
    File::open(m.mnt.join("blocks")).unwrap().sync_all().unwrap();
    let blocks = fs::metadata(m.mnt.join("blocks")).unwrap().blocks();
    assert!((196..=256).contains(&blocks), "st_blocks {blocks}");
    // xattrs: round trip, listing, removal, flags; stored encrypted.
    let p = m.mnt.join("f");
    let ps = p.to_str().unwrap();
    rustix::fs::setxattr(ps, "user.colour", b"blue", rustix::fs::XattrFlags::CREATE).unwrap();
    rustix::fs::setxattr(ps, "trusted.secret", b"s3cret value", rustix::fs::XattrFlags::empty()).unwrap();
    let e = rustix::fs::setxattr(ps, "user.colour", b"red", rustix::fs::XattrFlags::CREATE).unwrap_err();
    assert_eq!(e, rustix::io::Errno::EXIST);
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(ps, "user.colour", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"blue");
    let n = rustix::fs::listxattr(ps, &mut buf[..]).unwrap();
    let mut names: Vec<&[u8]> = buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
    names.sort();
    assert_eq!(names, vec![&b"trusted.secret"[..], b"user.colour"]);
    rustix::fs::removexattr(ps, "user.colour").unwrap();
    assert_eq!(rustix::fs::getxattr(ps, "user.colour", &mut buf[..]).unwrap_err(), rustix::io::Errno::NODATA);
    // The same while the file is open (the daemon then calls on its open descriptor), and
    // chmod through the open file.
    let held = OpenOptions::new().read(true).open(&p).unwrap();
    rustix::fs::fsetxattr(&held, "user.open", b"o", rustix::fs::XattrFlags::CREATE).unwrap();
    let n = rustix::fs::fgetxattr(&held, "user.open", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"o");
    let n = rustix::fs::flistxattr(&held, &mut buf[..]).unwrap();
    assert!(buf[..n].split(|&b| b == 0).any(|s| s == b"user.open"));
    rustix::fs::fremovexattr(&held, "user.open").unwrap();
    assert_eq!(rustix::fs::fgetxattr(&held, "user.open", &mut buf[..]).unwrap_err(), rustix::io::Errno::NODATA);
    held.set_permissions(fs::Permissions::from_mode(0o604)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o604);
    drop(held);
    // ACLs and the SELinux label are not the volume's: "not supported" on every call, for files,
    // directories and symlinks alike (so `ls -l` stops asking), and nothing is stored.
    std::os::unix::fs::symlink("f", m.mnt.join("link")).unwrap();
    let link = m.mnt.join("link");
    for path in [ps, m.mnt.to_str().unwrap(), link.to_str().unwrap()] {
        for name in ["system.posix_acl_access", "system.posix_acl_default", "security.selinux"] {
            let unsupported = Some(rustix::io::Errno::OPNOTSUPP);
            assert_eq!(rustix::fs::lgetxattr(path, name, &mut buf[..]).err(), unsupported, "{path} {name}");
            if name != "system.posix_acl_default" || path == m.mnt.to_str().unwrap() {
                // (removing a file's default ACL the kernel answers itself: there is none)
                assert_eq!(rustix::fs::lremovexattr(path, name).err(), unsupported, "{path} {name}");
            }
        }
    }
    let e =
        rustix::fs::setxattr(ps, "security.selinux", b"system_u:object_r:etc_t:s0", rustix::fs::XattrFlags::empty());
    assert_eq!(e.unwrap_err(), rustix::io::Errno::OPNOTSUPP);
    let ls = std::process::Command::new("ls").arg("-lR").arg(&m.mnt).output().unwrap();
    assert!(ls.status.success() && ls.stderr.is_empty(), "{}", String::from_utf8_lossy(&ls.stderr));
    fs::remove_file(&link).unwrap();
    let backing = m.backing_files();
    for f in &backing {
        let mut raw = vec![0u8; 4096];
        let n = rustix::fs::listxattr(f.to_str().unwrap(), &mut raw[..]).unwrap();
        let raw = String::from_utf8_lossy(&raw[..n]);
        assert!(!raw.contains("secret") && !raw.contains("colour"), "{raw}");
    }
}

#[test]
fn fsync_locks_fallocate_mmap() {
    let m = Mount::new();
    let p = m.mnt.join("f");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    f.write_all_at(b"durable", 0).unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    File::open(&m.mnt).unwrap().sync_all().unwrap();
    // flock and fcntl locks conflict between open file descriptions.
    let g = File::open(&p).unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).unwrap();
    assert!(rustix::fs::flock(&g, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err());
    rustix::fs::flock(&f, rustix::fs::FlockOperation::Unlock).unwrap();
    rustix::fs::flock(&g, rustix::fs::FlockOperation::NonBlockingLockShared).unwrap();
    // fallocate: the size grows and the new range reads as zeros; punching a hole zeroes.
    same(&m, "fallocate and punch hole", |d| {
        let p = d.join("alloc");
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        f.write_all_at(&[5u8; 20000], 0).unwrap();
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 10000, 50000).unwrap();
        let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&f, punch, 1000, 9000).unwrap();
        let all = fs::read(&p).unwrap();
        (all.len(), blake(&all), all[999], all[1000], all[9999], all[10000])
    });
    // mmap: writes through a shared mapping reach the file, and reads see the file.
    same(&m, "mmap shared write and read", |d| {
        let p = d.join("mapped");
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        f.set_len(3 * 4096 + 100).unwrap();
        let len = 3 * 4096 + 100;
        // SAFETY: a fresh shared mapping of a file we own and keep open; unmapped below, and
        // nothing else maps or truncates it meanwhile.
        unsafe {
            let ptr = rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &f,
                0,
            )
            .unwrap();
            let s = std::slice::from_raw_parts_mut(ptr as *mut u8, len);
            s[4090..4110].copy_from_slice(&[0xab; 20]);
            s[len - 1] = 0xcd;
            rustix::mm::msync(ptr, len, rustix::mm::MsyncFlags::SYNC).unwrap();
            rustix::mm::munmap(ptr, len).unwrap();
        }
        let all = fs::read(&p).unwrap();
        (all.len(), all[4089], all[4090], all[4109], all[4110], all[len - 1])
    });
}

#[test]
fn concurrent_readers_and_writers_on_one_file() {
    let m = Mount::new();
    let p = m.mnt.join("shared");
    let bs = 4096usize;
    let writers = 4;
    let per = 64; // blocks per writer, interleaved
    File::create(&p).unwrap().set_len((writers * per * bs) as u64).unwrap();
    std::thread::scope(|s| {
        for w in 0..writers {
            let p = p.clone();
            s.spawn(move || {
                let f = OpenOptions::new().write(true).open(&p).unwrap();
                for i in 0..per {
                    let block = i * writers + w;
                    // Unaligned pieces, so writers share blocks' neighbours and do read-modify-write.
                    let data = vec![(w + 1) as u8; bs];
                    f.write_all_at(&data[..bs / 2], (block * bs) as u64).unwrap();
                    f.write_all_at(&data[bs / 2..], (block * bs + bs / 2) as u64).unwrap();
                }
            });
        }
        for _ in 0..2 {
            let p = p.clone();
            s.spawn(move || {
                let f = File::open(&p).unwrap();
                let mut buf = vec![0u8; 3 * bs + 7];
                for i in 0..200 {
                    // Every block read is all one writer's value or still zero: never a mix.
                    let off = ((i * 7919) % (writers * per - 4) * bs) as u64;
                    f.read_exact_at(&mut buf, off).unwrap();
                }
            });
        }
    });
    m.drop_caches();
    let all = fs::read(&p).unwrap();
    for (i, block) in all.chunks(bs).enumerate() {
        let want = (i % writers + 1) as u8;
        assert!(block.iter().all(|&b| b == want), "block {i} is not all {want}");
    }
}

#[test]
fn read_only_mount_refuses_writes() {
    let mut m = Mount::new();
    fs::write(m.mnt.join("kept"), b"data").unwrap();
    m.unmount();
    let out = std::process::Command::new(common::kmsfs_bin())
        .args(&m.kms.args)
        .args(["mount", "-o", "ro"])
        .arg(&m.cipher)
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = (
        fs::read(m.mnt.join("kept")),
        err_kind(fs::write(m.mnt.join("new"), b"")),
        err_kind(fs::remove_file(m.mnt.join("kept"))),
    );
    let _ = std::process::Command::new("fusermount3").arg("-u").arg(&m.mnt).status();
    assert_eq!(r.0.unwrap(), b"data");
    assert_eq!((r.1, r.2), (Some(30), Some(30)), "EROFS");
}

/// The kernel may cache far more inodes than the daemon may open files: a tree of 3,000 files
/// under a daemon limited to 256 descriptors is created, listed, stat'ed, read and removed.
#[test]
fn more_inodes_than_the_daemon_may_open_files() {
    let mut m = Mount::new();
    m.unmount();
    m.wrapper = vec!["prlimit".into(), "--nofile=256:256".into(), "--".into()];
    m.mount();
    for d in 0..30 {
        let dir = m.mnt.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let mut n = 0;
    for d in 0..30 {
        for e in fs::read_dir(m.mnt.join(format!("d{d}"))).unwrap() {
            let e = e.unwrap();
            assert!(e.metadata().unwrap().is_file());
            assert_eq!(fs::read_to_string(e.path()).unwrap(), format!("{d}/{}", &e.file_name().to_string_lossy()[1..]));
            n += 1;
        }
    }
    assert_eq!(n, 3000);
    fs::remove_dir_all(m.mnt.join("d0")).unwrap();
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 29);
}

/// A write or truncation by an unprivileged user clears set-user-id (and group-executable
/// set-group-id) bits, as on a local disk: the daemon does it (HANDLE_KILLPRIV_V2).
#[test]
fn unprivileged_writes_clear_setuid_bits() {
    let mut m = Mount::new();
    m.remount_with(&["-o", "allow_other"]);
    same(&m, "setuid cleared by another user's write and truncate", |d| {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
        let mut modes = Vec::new();
        for (name, how) in [("w", "echo x >> w"), ("t", "truncate -s 1 t")] {
            let p = d.join(name);
            fs::write(&p, b"exe").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o6777)).unwrap();
            let st = std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", how])
                .current_dir(d)
                .status()
                .unwrap();
            assert!(st.success());
            modes.push(fs::metadata(&p).unwrap().mode() & 0o7777);
        }
        modes
    });
}

#[test]
fn the_mount_names_its_type_and_unsupported_calls_stay_out_of_the_log() {
    let mut m = Mount::new();
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts.lines().find(|l| l.split(' ').nth(1) == Some(m.mnt.to_str().unwrap())).unwrap();
    assert_eq!(line.split(' ').nth(2), Some("fuse.kmsfs"), "{line}");
    // An ioctl kmsfs does not implement (answered ENOTTY) and a copy between two files (the
    // kernel falls back to reading and writing): many of them, and not one line in the log.
    fs::write(m.mnt.join("a"), vec![7u8; 100_000]).unwrap();
    for _ in 0..50 {
        let f = File::open(m.mnt.join("a")).unwrap();
        assert!(rustix::fs::ioctl_getflags(&f).is_err());
        let mut to = File::create(m.mnt.join("b")).unwrap();
        std::io::copy(&mut File::open(m.mnt.join("a")).unwrap(), &mut to).unwrap();
    }
    assert_eq!(fs::read(m.mnt.join("b")).unwrap(), vec![7u8; 100_000]);
    m.unmount();
    let log = m.log_text();
    assert!(!log.contains("Not Implemented") && !log.contains("WARN"), "{log}");
}

#[test]
fn symlink_targets_up_to_path_max_minus_one() {
    let mut m = Mount::new();
    // Targets as pjdfstest's symlink/03.t builds them: 255-byte components up to 4,095 bytes.
    let target = |len: usize| {
        let mut t = String::new();
        while t.len() < len {
            let room = len - t.len();
            t.push_str(&"x".repeat(room.min(255)));
            if t.len() < len {
                t.push('/');
            }
        }
        t
    };
    let longest = target(4095);
    same(&m, "targets of 3,028 to 4,095 bytes: made, read, renamed, linked", |d| {
        let mut out = Vec::new();
        for len in [3027, 3028, 4000, 4095] {
            let link = d.join(format!("l{len}"));
            std::os::unix::fs::symlink(target(len), &link).unwrap();
            out.push((fs::read_link(&link).unwrap().as_os_str().len(), fs::symlink_metadata(&link).unwrap().len()));
        }
        fs::rename(d.join("l4095"), d.join("moved")).unwrap();
        fs::hard_link(d.join("moved"), d.join("second")).unwrap();
        fs::remove_file(d.join("moved")).unwrap();
        let after_link = fs::read_link(d.join("second")).unwrap();
        // Replaced by a rename, and removed: the targets' files go with their last names.
        fs::rename(d.join("l4000"), d.join("l3028")).unwrap();
        fs::remove_file(d.join("l4000")).unwrap_err();
        let too_long = err_kind(std::os::unix::fs::symlink(target(4096), d.join("l4096")));
        (out, after_link.as_os_str().len(), fs::read_link(d.join("l3028")).unwrap().as_os_str().len(), too_long)
    });
    assert_eq!(fs::read_link(m.mnt.join("second")).unwrap().to_str(), Some(longest.as_str()));
    let files = |m: &Mount| fs::read_dir(m.cipher.join(".kmsfs-links")).unwrap().count();
    assert_eq!(files(&m), 2, "one file per long target still named (second, l3028)");
    m.remount();
    assert_eq!(fs::read_link(m.mnt.join("second")).unwrap().to_str(), Some(longest.as_str()));
    m.unmount();
    m.assert_fsck_clean();
    // A changed target file: readlink refuses it (EIO) and fsck names it.
    let file = fs::read_dir(m.cipher.join(".kmsfs-links")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = fs::read(&file).unwrap();
    bytes[100] ^= 1;
    fs::write(&file, bytes).unwrap();
    let fsck = m.fsck();
    let out = String::from_utf8_lossy(&fsck.stdout);
    assert!(!fsck.status.success());
    assert!(out.contains("problem: /second (backing ") || out.contains("problem: /l3028 (backing "), "{out}");
    m.mount();
    let broken =
        ["second", "l3028"].iter().filter(|n| fs::read_link(m.mnt.join(n)).is_err_and(|e| e.raw_os_error() == Some(5)));
    assert_eq!(broken.count(), 1);
    fs::remove_file(m.mnt.join("second")).unwrap();
    fs::remove_file(m.mnt.join("l3028")).unwrap();
    assert_eq!(files(&m), 0, "no target file outlives its symlink");
    m.unmount();
    m.assert_fsck_clean();
}
