//! The kernel transport: FUSE over io_uring where the kernel offers it (per-CPU queues served
//! by pinned SCHED_IDLE threads, large requests by their helpers), /dev/fuse otherwise.

mod common;

use std::io::{Read, Write};

/// (thread name, voluntary context switches, scheduling policy) of each thread of `pid`.
fn threads(pid: u32) -> Vec<(String, u64, u32)> {
    let mut out = vec![];
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default().trim().to_string();
        let field = |file: &str, key: &str| -> u64 {
            let text = std::fs::read_to_string(t.join(file)).unwrap_or_default();
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.rsplit(|c: char| c == ':' || c.is_whitespace()).next())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        out.push((comm, field("status", "voluntary_ctxt_switches"), field("sched", "policy") as u32));
    }
    out
}

/// A large sequential write and read (1 MiB requests), then small synchronous requests, and a
/// comparison with what was written.
fn exercise(m: &common::Mount) {
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut f = std::fs::File::create(m.mnt.join("big")).unwrap();
    for chunk in data.chunks(1 << 20) {
        f.write_all(chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    m.drop_caches();
    let mut back = vec![];
    std::fs::File::open(m.mnt.join("big")).unwrap().read_to_end(&mut back).unwrap();
    assert!(back == data, "large file read back differs");
    for i in 0..300 {
        std::fs::write(m.mnt.join(format!("small{i}")), i.to_string()).unwrap();
        assert_eq!(std::fs::read_to_string(m.mnt.join(format!("small{i}"))).unwrap(), i.to_string());
    }
}

#[test]
fn requests_travel_over_io_uring_where_the_kernel_offers_it() {
    let mut m = common::Mount::new();
    if std::fs::read_to_string(common::URING_PARAM).map(|v| v.trim() != "Y").unwrap_or(true) {
        eprintln!(
            "skipped: the kernel does not offer FUSE over io_uring here (not root, or no {})",
            common::URING_PARAM
        );
        return;
    }
    let before = threads(m.pid());
    exercise(&m);
    let after = threads(m.pid());
    assert!(m.log_text().contains("requests over io_uring"), "log:\n{}", m.log_text());
    let ring: Vec<_> = after.iter().filter(|t| t.0.starts_with("fuser-ring")).collect();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(ring.len() >= 2 * cpus, "ring threads: {after:?}");
    // Serving small requests, a ring thread is SCHED_IDLE (policy 5); the helpers that take
    // large requests off it are ordinary threads (policy 0).
    assert!(ring.iter().any(|t| t.2 == 5), "no ring thread is SCHED_IDLE: {ring:?}");
    let bulk: Vec<_> = after.iter().filter(|t| t.0.starts_with("fuser-bulk")).collect();
    assert!(bulk.len() == ring.len() && bulk.iter().all(|t| t.2 == 0), "helpers: {bulk:?}");
    let served = |ts: &[(String, u64, u32)], prefix: &str| -> u64 {
        ts.iter().filter(|t| t.0.starts_with(prefix)).map(|t| t.1).sum()
    };
    let by_ring = served(&after, "fuser-ring") - served(&before, "fuser-ring");
    let by_bulk = served(&after, "fuser-bulk") - served(&before, "fuser-bulk");
    // The first large requests of a run go to a helper, the rest to the ring thread unpinned.
    assert!(by_bulk >= 1, "helpers never woke for 16 MiB in 1 MiB requests");
    let by_dev = served(&after, "fuser-0") - served(&before, "fuser-0");
    assert!(by_ring > 600, "ring threads woke {by_ring} times for 900+ requests");
    assert!(by_dev < by_ring / 10, "/dev/fuse reader woke {by_dev} times, ring {by_ring}");
    m.unmount();
    m.assert_fsck_clean();
}

#[test]
fn dev_fuse_serves_when_io_uring_is_turned_off() {
    let mut m = common::Mount::new();
    m.remount_with(&["-o", "no_io_uring"]);
    let before = threads(m.pid());
    exercise(&m);
    let after = threads(m.pid());
    assert!(after.iter().all(|t| !t.0.starts_with("fuser-ring")), "{after:?}");
    let woke: u64 = after.iter().map(|t| t.1).sum::<u64>() - before.iter().map(|t| t.1).sum::<u64>();
    assert!(woke > 600, "/dev/fuse threads woke {woke} times");
    assert!(m.log_text().contains("requests over /dev/fuse (-o no_io_uring)"), "log:\n{}", m.log_text());
    m.unmount();
}
