//! On a filesystem with reflinks (XFS on a loop device here) a snapshot shares the disk's extents
//! instead of copying them, and stays point-in-time when the disk is written afterwards.

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
    let srv = Server::start(&w.kms, &w.path("s.sock"), &[&img], &[]);
    let mut c = Client::connect(&srv.socket, "");
    assert_eq!(c.write(1 << 20, &[0xee; 65536]), 0);
    assert_eq!(c.flush(), 0);
    drop(c);
    drop(srv);
    let srv = Server::start(&w.kms, &w.path("t.sock"), &[&snap], &[]);
    let mut c = Client::connect(&srv.socket, "");
    assert_eq!(c.read(1 << 20, 65536).unwrap(), data[1 << 20..(1 << 20) + 65536]);
}
