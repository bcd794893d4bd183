//! Renames that keep every name: `renameat2` with each flag (NOREPLACE, EXCHANGE, WHITEOUT) and
//! failing renames, over short and long names (a long name keeps its encrypted form in a `.name`
//! file beside the entry, FORMAT.md §4), done on the mount and on a plain directory and compared;
//! at the end everything is removed through the mount and fsck must find nothing.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rustix::fs::{renameat_with, RenameFlags, CWD};

/// Past the length whose encrypted form fits a backing name: stored as a long name.
fn long(tag: &str) -> String {
    format!("{}{tag}", "n".repeat(200))
}

fn rename2(root: &Path, from: &str, to: &str, flags: RenameFlags) -> Result<(), i32> {
    renameat_with(CWD, root.join(from), CWD, root.join(to), flags).map_err(|e| e.raw_os_error())
}

#[test]
fn a_whiteout_rename_of_a_long_name_leaves_a_named_whiteout() {
    let mut m = common::Mount::new();
    let old = format!("d/{}", long("old"));
    for root in m.both("") {
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join(&old), b"data").unwrap();
        rename2(&root, &old, "d/new", RenameFlags::WHITEOUT).unwrap();
    }
    assert_eq!(common::snapshot(&m.mnt), common::snapshot(&m.plain));
    let whiteout = fs::symlink_metadata(m.mnt.join(&old)).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0, "the whiteout lists under its name");
    // Removable, so its directory is: nothing is left that no listing shows.
    fs::remove_file(m.mnt.join(&old)).unwrap();
    fs::remove_file(m.mnt.join("d/new")).unwrap();
    fs::remove_dir(m.mnt.join("d")).unwrap();
    m.unmount();
    m.assert_fsck_clean();
}

#[test]
fn a_refused_rename_over_a_long_named_directory_keeps_its_name() {
    let mut m = common::Mount::new();
    let target = long("dir");
    for root in m.both("") {
        fs::create_dir_all(root.join("src")).unwrap();
        fs::write(root.join("src/a"), b"a").unwrap();
        fs::create_dir_all(root.join(&target)).unwrap();
        fs::write(root.join(&target).join("b"), b"b").unwrap();
        fs::write(root.join("file"), b"f").unwrap();
        // Not empty; a file over a directory; no replacing.
        assert_eq!(rename2(&root, "src", &target, RenameFlags::empty()), Err(libc::ENOTEMPTY));
        assert_eq!(rename2(&root, "file", &target, RenameFlags::empty()), Err(libc::EISDIR));
        assert_eq!(rename2(&root, "src", &target, RenameFlags::NOREPLACE), Err(libc::EEXIST));
    }
    assert_eq!(common::snapshot(&m.mnt), common::snapshot(&m.plain), "the target still lists, with its contents");
    m.remount();
    assert_eq!(common::snapshot(&m.mnt), common::snapshot(&m.plain));
    m.unmount();
    m.assert_fsck_clean();
}

#[derive(Debug)]
enum Op {
    Write(String, u8),
    Mkdir(String),
    Rmdir(String),
    Unlink(String),
    Rename(String, String, RenameFlags),
}

fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let io = |r: std::io::Result<()>| r.map_err(|e| e.raw_os_error().unwrap_or(-1));
    match op {
        // A whiteout is a device node, which a FUSE mount does not open (`nodev`: EACCES where a
        // plain directory says ENXIO): not written to on either side.
        Op::Write(f, _) if fs::symlink_metadata(root.join(f)).is_ok_and(|m| m.file_type().is_char_device()) => Err(-2),
        Op::Write(f, b) => io(fs::write(root.join(f), [*b; 100])),
        Op::Mkdir(d) => io(fs::create_dir(root.join(d))),
        Op::Rmdir(d) => io(fs::remove_dir(root.join(d))),
        Op::Unlink(f) => io(fs::remove_file(root.join(f))),
        Op::Rename(a, b, flags) => rename2(root, a, b, *flags),
    }
}

#[test]
fn random_renames_with_flags_and_long_names_match_a_plain_directory() {
    let mut m = common::Mount::new();
    // Short and long names, in short- and long-named directories.
    let dirs = ["", "d/", &format!("{}/", long("dir"))].map(str::to_string);
    let leaves = ["a", "b", &long("x"), &long("y")].map(str::to_string);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x72656e61);
    let pick = |rng: &mut rand::rngs::StdRng| {
        format!("{}{}", dirs[rng.gen_range(0..dirs.len())], leaves[rng.gen_range(0..leaves.len())])
    };
    for root in m.both("") {
        fs::create_dir(root.join("d")).unwrap();
        fs::create_dir(root.join(long("dir"))).unwrap();
    }
    let flags = [RenameFlags::empty(), RenameFlags::NOREPLACE, RenameFlags::EXCHANGE, RenameFlags::WHITEOUT];
    for step in 0..1500 {
        let op = match rng.gen_range(0..100) {
            0..=24 => Op::Write(pick(&mut rng), rng.gen()),
            25..=34 => Op::Mkdir(pick(&mut rng)),
            35..=41 => Op::Rmdir(pick(&mut rng)),
            42..=49 => Op::Unlink(pick(&mut rng)),
            _ => Op::Rename(pick(&mut rng), pick(&mut rng), flags[rng.gen_range(0..flags.len())]),
        };
        let (a, b) = (apply(&m.mnt, &op), apply(&m.plain, &op));
        assert_eq!(a, b, "step {step}: {op:?}");
        if step % 250 == 249 {
            assert_eq!(common::snapshot(&m.mnt), common::snapshot(&m.plain), "after step {step}");
        }
    }
    m.remount();
    assert_eq!(common::snapshot(&m.mnt), common::snapshot(&m.plain), "after a remount");
    // Everything goes, through the mount: a name no listing shows would stop a directory's rmdir.
    for e in fs::read_dir(&m.mnt).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    assert!(fs::read_dir(&m.mnt).unwrap().next().is_none());
    m.unmount();
    m.assert_fsck_clean();
}

/// overlayfs with its upper directory on a kmsfs mount: deleting lower files (a long name among
/// them) leaves whiteouts in the upper directory, which must keep their names.
#[test]
fn overlayfs_on_top_keeps_its_whiteouts() {
    let mut m = common::Mount::new();
    let dir = tempfile::tempdir().unwrap();
    let (lower, merged) = (dir.path().join("lower"), dir.path().join("merged"));
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&merged).unwrap();
    fs::create_dir_all(m.mnt.join("upper")).unwrap();
    fs::create_dir_all(m.mnt.join("work")).unwrap();
    fs::write(lower.join("short"), b"s").unwrap();
    fs::write(lower.join(long("lower")), b"l").unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        m.mnt.join("upper").display(),
        m.mnt.join("work").display()
    );
    let ok = std::process::Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&merged).status();
    assert!(ok.unwrap().success(), "overlay mount");
    fs::remove_file(merged.join("short")).unwrap();
    fs::remove_file(merged.join(long("lower"))).unwrap();
    fs::write(merged.join(long("new")), b"n").unwrap();
    let listed: Vec<String> =
        fs::read_dir(&merged).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(listed, [long("new")]);
    assert!(std::process::Command::new("umount").arg(&merged).status().unwrap().success());
    // Both whiteouts are in the upper directory under their names.
    let mut upper: Vec<(String, bool)> = fs::read_dir(m.mnt.join("upper"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), e.file_type().unwrap().is_char_device())
        })
        .collect();
    upper.sort();
    let mut want = vec![(long("lower"), true), (long("new"), false), ("short".to_string(), true)];
    want.sort();
    assert_eq!(upper, want);
    m.unmount();
    m.assert_fsck_clean();
}
