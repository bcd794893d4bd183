//! Deferred deletion: a removed file's backing file goes through `.kmsfs-trash` and is deleted
//! in the background, while the name is gone at once and `st_nlink` stays exact.

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

fn trash_len(m: &common::Mount) -> usize {
    std::fs::read_dir(m.cipher.join(".kmsfs-trash")).map(|d| d.count()).unwrap_or(0)
}

fn wait_for_empty_trash(m: &common::Mount) {
    let start = Instant::now();
    while trash_len(m) > 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "trash still holds {} files", trash_len(m));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn removed_files_vanish_at_once_and_are_deleted_in_the_background() {
    let mut m = common::Mount::new();
    let dir = m.mnt.join("a");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..300 {
        std::fs::write(dir.join(format!("f{i}")), vec![i as u8; i * 37]).unwrap();
    }
    std::fs::write(dir.join("linked"), b"two names").unwrap();
    std::fs::hard_link(dir.join("linked"), dir.join("linked2")).unwrap();
    std::fs::write(dir.join("open"), b"still readable").unwrap();
    let mut held = std::fs::File::open(dir.join("open")).unwrap();
    let backing_before = m.backing_files().len();

    for i in 0..300 {
        std::fs::remove_file(dir.join(format!("f{i}"))).unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(std::fs::metadata(dir.join("f7")).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    // The name is free again at once, for a new file.
    std::fs::write(dir.join("f7"), b"new").unwrap();
    assert_eq!(std::fs::read(dir.join("f7")).unwrap(), b"new");

    // Other names and open handles see exact link counts: those are unlinked in place.
    std::fs::remove_file(dir.join("linked")).unwrap();
    assert_eq!(std::fs::metadata(dir.join("linked2")).unwrap().nlink(), 1);
    std::fs::remove_file(dir.join("open")).unwrap();
    assert_eq!(held.metadata().unwrap().nlink(), 0);
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "still readable");
    drop(held);

    wait_for_empty_trash(&m);
    // 300 removed, 1 created, 2 unlinked in place (one of them open until now).
    assert_eq!(m.backing_files().len(), backing_before - 300 + 1 - 2);
    m.unmount();
    m.assert_fsck_clean();
}

#[test]
fn a_crash_leaves_the_trash_to_the_next_mount() {
    let mut m = common::Mount::new();
    for i in 0..500 {
        std::fs::write(m.mnt.join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    std::fs::write(m.mnt.join("kept"), b"kept").unwrap();
    for i in 0..500 {
        std::fs::remove_file(m.mnt.join(format!("f{i}"))).unwrap();
    }
    // Deletion starts once removals pause: a kill now leaves the files in the trash.
    m.kill();
    assert!(trash_len(&m) > 0, "the trash was already empty");
    m.assert_fsck_clean();
    m.mount();
    wait_for_empty_trash(&m);
    let names: Vec<_> = std::fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(std::fs::read(m.mnt.join("kept")).unwrap(), b"kept");
    m.unmount();
}
