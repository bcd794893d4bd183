//! Thousands of random operations – writes at random offsets, truncates, renames, hard links,
//! fsyncs, reopen – done on the mount and on a plain directory, then every file compared byte
//! for byte, before and after a remount.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rand::{Rng, SeedableRng};

fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let r = match op {
        Op::Write { file, off, data } => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join(file))
            .and_then(|f| f.write_all_at(data, *off)),
        Op::Truncate { file, len } => {
            OpenOptions::new().write(true).open(root.join(file)).and_then(|f| f.set_len(*len))
        }
        Op::Rename { from, to } => fs::rename(root.join(from), root.join(to)),
        Op::Link { from, to } => fs::hard_link(root.join(from), root.join(to)),
        Op::Unlink { file } => fs::remove_file(root.join(file)),
        Op::Fsync { file } => OpenOptions::new().write(true).open(root.join(file)).and_then(|f| f.sync_all()),
        Op::Mkdir { dir } => fs::create_dir(root.join(dir)),
    };
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[derive(Debug)]
enum Op {
    Write { file: String, off: u64, data: Vec<u8> },
    Truncate { file: String, len: u64 },
    Rename { from: String, to: String },
    Link { from: String, to: String },
    Unlink { file: String },
    Fsync { file: String },
    Mkdir { dir: String },
}

fn name(rng: &mut impl Rng) -> String {
    let dirs = ["", "d1/", "d2/", "d1/sub/"];
    format!("{}f{}", dirs[rng.gen_range(0..dirs.len())], rng.gen_range(0..8))
}

fn random_op(rng: &mut impl Rng) -> Op {
    match rng.gen_range(0..100) {
        0..=54 => {
            let len = if rng.gen_bool(0.2) { rng.gen_range(1..200_000) } else { rng.gen_range(1..9000) };
            let off = rng.gen_range(0..300_000u64);
            Op::Write { file: name(rng), off, data: (0..len).map(|_| rng.gen()).collect() }
        }
        55..=69 => Op::Truncate { file: name(rng), len: rng.gen_range(0..250_000) },
        70..=79 => Op::Rename { from: name(rng), to: name(rng) },
        80..=84 => Op::Link { from: name(rng), to: name(rng) },
        85..=89 => Op::Unlink { file: name(rng) },
        90..=95 => Op::Fsync { file: name(rng) },
        _ => Op::Mkdir { dir: ["d1", "d2", "d1/sub"][rng.gen_range(0..3)].into() },
    }
}

#[test]
fn random_operation_sequences_match_a_plain_directory() {
    run(common::Mount::new(), 0x6b6d7366);
}

/// The same with the kernel's writeback cache on (`-o writeback`).
#[test]
fn random_operation_sequences_with_the_writeback_cache() {
    let mut m = common::Mount::new();
    m.remount_with(&["-o", "writeback"]);
    run(m, 0x77726974);
}

/// The same over /dev/fuse: the default transport is io_uring wherever the kernel offers it.
#[test]
fn random_operation_sequences_over_dev_fuse() {
    let mut m = common::Mount::new();
    m.remount_with(&["-o", "no_io_uring"]);
    run(m, 0x64657666);
}

fn run(mut m: common::Mount, seed: u64) {
    for d in ["d1", "d2", "d1/sub"] {
        fs::create_dir_all(m.mnt.join(d)).unwrap();
        fs::create_dir_all(m.plain.join(d)).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for step in 0..3000 {
        let op = random_op(&mut rng);
        let (a, b) = (apply(&m.mnt, &op), apply(&m.plain, &op));
        assert_eq!(a, b, "step {step}: {op:?}");
        if step % 1000 == 999 {
            m.drop_caches();
            assert!(common::snapshot(&m.mnt) == common::snapshot(&m.plain), "contents differ after step {step}");
        }
    }
    m.remount();
    assert!(common::snapshot(&m.mnt) == common::snapshot(&m.plain), "contents differ after a remount");
    m.unmount();
    m.assert_fsck_clean();
}
