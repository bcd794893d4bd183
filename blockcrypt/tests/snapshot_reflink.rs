//! Snapshots: on a filesystem with reflinks (XFS on a loop device here) a snapshot shares the
//! disk's extents instead of copying them, and stays point-in-time when the disk is written
//! afterwards; a snapshot of a disk being served is a point in time on XFS (one clone) and on
//! ext4 (the server copies it between two writes).

mod common;

use std::process::Command;

use common::*;

/// An XFS filesystem (reflink on) in a file, loop-mounted; unmounted when dropped.
struct Xfs {
    dir: tempfile::TempDir,
}

impl Xfs {
    fn new(image: &std::path::Path) -> Xfs {
        std::fs::File::create(image).unwrap().set_len(320 << 20).unwrap();
        tool("mkfs.xfs", &["-q", "-m", "reflink=1", image.to_str().unwrap()]);
        let dir = tempfile::tempdir().unwrap();
        tool("mount", &["-o", "loop", image.to_str().unwrap(), dir.path().to_str().unwrap()]);
        Xfs { dir }
    }

    fn used_bytes(&self) -> u64 {
        let st = rustix::fs::statvfs(self.dir.path()).unwrap();
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn snapshot_shares_extents_and_stays_point_in_time() {
    let w = Workdir::new();
    let fs = Xfs::new(&w.path("xfs.img"));
    let raw = w.path("raw");
    let data = pattern(32 << 20, 21);
    std::fs::write(&raw, &data).unwrap();
    let img = fs.dir.path().join("disk.img").display().to_string();
    ok(&w.run(&["import", raw.to_str().unwrap(), &img]));
    let before = fs.used_bytes();
    let snap = fs.dir.path().join("disk.snap").display().to_string();
    ok(&w.run(&["snapshot", &img, &snap]));
    let grew = fs.used_bytes().saturating_sub(before);
    assert!(grew < 1 << 20, "a 34 MiB snapshot took {grew} bytes: not shared");
    // Writing the disk afterwards copies only what changes; the snapshot keeps the old data.
    let srv = Server::start(&w.kms.0, &w.path("s.sock"), &[&img], &[]);
    let mut c = Client::connect(&srv.socket, "");
    assert_eq!(c.write(1 << 20, &[0xee; 65536]), 0);
    assert_eq!(c.flush(), 0);
    drop(c);
    drop(srv);
    let srv = Server::start(&w.kms.0, &w.path("t.sock"), &[&snap], &[]);
    let mut c = Client::connect(&srv.socket, "");
    assert_eq!(c.read(1 << 20, 65536).unwrap(), data[1 << 20..(1 << 20) + 65536]);
}

/// A snapshot of a disk while `serve` writes it, without stopping the server: one atomic clone
/// on XFS, a copy the server makes between two writes on ext4 – either way the snapshot holds a
/// prefix of the writes: every write acknowledged before the snapshot began, none torn, none out
/// of order.
#[test]
fn online_snapshot_under_writes_is_a_point_in_time() {
    let w = Workdir::new();
    let fs = Xfs::new(&w.path("xfs.img"));
    point_in_time_under_writes(&w, fs.dir.path());
}

/// The same without reflink (ext4, the work directory's filesystem here).
#[test]
fn online_snapshot_without_reflink_is_copied_by_the_server_between_writes() {
    let w = Workdir::new();
    let dir = w.path("ext4");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a"), [1u8; 4096]).unwrap();
    let cannot_clone = rustix::fs::ioctl_ficlone(
        std::fs::File::create(dir.join("b")).unwrap(),
        std::fs::File::open(dir.join("a")).unwrap(),
    );
    assert!(cannot_clone.is_err(), "this directory's filesystem clones files: nothing would be tested");
    point_in_time_under_writes(&w, &dir);
}

fn point_in_time_under_writes(w: &Workdir, dir: &std::path::Path) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    const CHUNK: usize = 64 << 10;
    const CHUNKS: usize = 200;
    let img = dir.join("disk.img").display().to_string();
    ok(&w.run(&["create", &img, "--size", &format!("{}", CHUNK * CHUNKS)]));
    let srv = Server::start(&w.kms.0, &w.path("s.sock"), &[&img], &[]);
    let (acked, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let writer = {
        let (acked, stop, socket) = (acked.clone(), stop.clone(), srv.socket.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(&socket, "");
            for i in 0..CHUNKS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                assert_eq!(c.write((i * CHUNK) as u64, &vec![i as u8 + 1; CHUNK]), 0);
                // Every other write flushed: acknowledged-but-unflushed writes must be in too.
                if i % 2 == 0 {
                    assert_eq!(c.flush(), 0);
                }
                acked.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 20 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let before = acked.load(Ordering::SeqCst);
    let snap = dir.join("disk.snap").display().to_string();
    let t0 = std::time::Instant::now();
    ok(&w.run(&["snapshot", &img, &snap]));
    let took = t0.elapsed();
    let after = acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(srv);
    let srv = Server::start(&w.kms.0, &w.path("t.sock"), &[&snap], &[]);
    let mut c = Client::connect(&srv.socket, "");
    let mut prefix = 0;
    for i in 0..CHUNKS {
        let got = c.read((i * CHUNK) as u64, CHUNK).unwrap();
        let new = got.iter().all(|&b| b == i as u8 + 1);
        assert!(new || got.iter().all(|&b| b == 0), "chunk {i} is torn");
        if new {
            assert_eq!(prefix, i, "chunk {i} is in but an earlier write is not");
            prefix += 1;
        }
    }
    eprintln!("snapshot in {took:?} holds {prefix} of {CHUNKS} writes ({before}..={after} acknowledged around it)");
    assert!(prefix < CHUNKS, "the writer finished before the snapshot: nothing was tested");
    assert!(
        before <= prefix && prefix <= after + 1,
        "snapshot holds {prefix} writes; {before}..={after} were acknowledged around it"
    );
}

/// Without reflink a disk in use by another program than `serve` (here: this test holding qemu's
/// image locks, as qemu-io would) cannot be copied at one instant: refused, exit 6, nothing left
/// behind.
#[test]
fn online_snapshot_of_a_disk_another_program_writes_needs_a_filesystem_that_clones() {
    let w = Workdir::new();
    let img = w.create("disk.img", &["--size", "4M"]);
    let held = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    blockcrypt::image_lock::lock(&held, blockcrypt::image_lock::Access::ReadWrite).unwrap();
    let snap = w.p("disk.snap");
    let (c, err) = code(&w.run(&["snapshot", &img, &snap]));
    assert_eq!(c, Some(6), "{err}");
    assert!(err.contains("atomic clone") && err.contains("XFS"), "{err}");
    assert!(!std::path::Path::new(&snap).exists());
}

/// The server copies only into an empty file the asker opened for writing, and only for an asker
/// that could open the disk's file.
#[test]
fn the_snapshot_socket_checks_what_it_is_given() {
    use blockcrypt::snapshot_socket::{ask, AskError};
    let w = Workdir::new();
    let img = w.create("disk.img", &["--size", "4M"]);
    let _srv = w.serve(&[&img], &[]);
    let data = std::fs::File::open(&img).unwrap();
    std::fs::write(w.path("full"), b"x").unwrap();
    std::fs::write(w.path("empty"), b"").unwrap();
    let refused = |copy: &std::fs::File| match ask(&data, copy) {
        Err(AskError::Failed(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let why = refused(&std::fs::OpenOptions::new().write(true).open(w.path("full")).unwrap());
    assert!(why.contains("empty regular file"), "{why}");
    let why = refused(&std::fs::File::open(w.path("empty")).unwrap());
    assert!(why.contains("not open for writing"), "{why}");
    // The disk's file as an O_PATH descriptor (had without read permission) proves nothing.
    let path_only = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(&img).unwrap()
    };
    let copy = std::fs::OpenOptions::new().write(true).open(w.path("empty")).unwrap();
    let why = match ask(&path_only, &copy) {
        Err(AskError::Failed(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(why.contains("not open for reading"), "{why}");
    // A copy on another filesystem (tmpfs here), where writes could be made to wait for ever.
    if let Ok(elsewhere) = tempfile::NamedTempFile::new_in("/dev/shm") {
        let why = refused(elsewhere.as_file());
        assert!(why.contains("the disk's filesystem"), "{why}");
    }
    // A file nobody serves: no server to ask.
    let other = std::fs::File::open(w.path("full")).unwrap();
    let copy = std::fs::OpenOptions::new().write(true).open(w.path("empty")).unwrap();
    assert!(matches!(ask(&other, &copy), Err(AskError::NotServed)));
    // And a good request copies the disk: the copy's bytes are the file's.
    ask(&data, &copy).unwrap();
    assert_eq!(std::fs::read(w.path("empty")).unwrap(), std::fs::read(&img).unwrap());
}
