//! `blockcrypt serve` and the image parsers against clients and files made to exhaust them: a
//! client that never reads its replies, descriptor exhaustion, silent clients, too many clients,
//! and headers crafted to make PBKDF2 run for minutes or allocations reach terabytes.

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use blockcrypt::nbd::proto::CMD_READ;
use common::*;

fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// True when the server closes the connection within `secs`.
fn closed_within(s: &mut UnixStream, secs: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_client_that_never_reads_replies_is_held_to_its_budget() {
    let w = Workdir::new();
    let img = w.create("big.img", &["--size", "64M"]);
    let srv = w.serve(&[&img], &[]);
    let base = rss_mb(srv.child.id());
    let mut c = Client::connect(&srv.socket, "big.img");
    // 100 reads of 32 MiB – 3.2 GiB of replies – and not one byte read back.
    for i in 0..100u64 {
        c.send(CMD_READ, 0, (i % 2) * (32 << 20), 32 << 20, &[]);
    }
    std::thread::sleep(Duration::from_secs(3));
    let grown = rss_mb(srv.child.id()) - base;
    // One connection holds at most its 64 MiB budget of replies plus one request being read.
    assert!(grown < 160, "serve grew by {grown} MiB for one client that reads nothing");
    // Another client is served meanwhile.
    let mut other = Client::connect(&srv.socket, "big.img");
    assert_eq!(other.read(0, 4096).map(|d| d.len()), Ok(4096));
}

#[test]
fn descriptor_exhaustion_does_not_end_the_server() {
    let w = Workdir::new();
    let img = w.create("d.img", &["--size", "1M"]);
    let srv = w.serve(&[&img], &["--handshake-timeout-secs", "60"]);
    let pid = srv.child.id().to_string();
    let st = Command::new("prlimit").args(["--pid", &pid, "--nofile=40:40"]).status().unwrap();
    assert!(st.success(), "prlimit");
    // Idle connections until accept runs out of descriptors (EMFILE), and then some.
    let idle: Vec<UnixStream> = (0..80).filter_map(|_| UnixStream::connect(&srv.socket).ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Client::connect(&srv.socket, "d.img");
    assert_eq!(c.read(0, 512).unwrap().len(), 512, "still serving after EMFILE");
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let w = Workdir::new();
    let img = w.create("s.img", &["--size", "1M"]);
    let srv = w.serve(&[&img], &["--handshake-timeout-secs", "1"]);
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut s, 5), "a client that says nothing is not dropped");
    assert!(start.elapsed() < Duration::from_secs(4));
    // Clients that finish their handshake are not affected by the timeout afterwards.
    let mut c = Client::connect(&srv.socket, "s.img");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.read(0, 512).unwrap().len(), 512);
}

#[test]
fn connections_over_the_cap_are_closed_and_the_others_go_on() {
    let w = Workdir::new();
    let img = w.create("c.img", &["--size", "1M"]);
    let srv = w.serve(&[&img], &["--max-connections", "2"]);
    // The start-up probe's connection holds a slot until the server sees it close.
    std::thread::sleep(Duration::from_millis(300));
    let mut a = Client::connect(&srv.socket, "c.img");
    let mut b = Client::connect(&srv.socket, "c.img");
    let mut third = UnixStream::connect(&srv.socket).unwrap();
    assert!(closed_within(&mut third, 5), "a third connection is closed");
    assert_eq!(a.read(0, 512).unwrap().len(), 512);
    assert_eq!(b.read(512, 512).unwrap().len(), 512);
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let mut c = Client::connect(&srv.socket, "c.img");
    assert_eq!(c.read(0, 512).unwrap().len(), 512, "a freed slot is used again");
}

#[test]
fn crafted_headers_fail_cleanly_and_fast() {
    let w = Workdir::new();
    let good = w.create("good.img", &["--size", "1M"]);
    let pristine = std::fs::read(&good).unwrap();
    let patch = |name: &str, at: u64, value: u32, sparse_len: Option<u64>| {
        let p = w.path(name);
        std::fs::write(&p, &pristine).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&value.to_be_bytes(), at).unwrap();
        if let Some(len) = sparse_len {
            f.set_len(len).unwrap();
        }
        p.display().to_string()
    };
    const SLOT0_ITERATIONS: u64 = 208 + 4;
    const MK_DIGEST_ITER: u64 = 164;
    const PAYLOAD_OFFSET: u64 = 104;
    // The luksmeta header with every used slot pointing far outside the gap, its CRC made right.
    let meta_at = pristine.windows(8).position(|w| w == b"LUKSMETA").expect("a luksmeta header") as u64;
    let meta_patch = |name: &str, field: u64, value: u32| {
        let img = patch(name, 0, u32::from_be_bytes(pristine[..4].try_into().unwrap()), None);
        let mut bytes = std::fs::read(&img).unwrap();
        let hdr = &mut bytes[meta_at as usize..meta_at as usize + blockcrypt::luksmeta::HEADER_LEN];
        for slot in 0..8 {
            let at = 16 + slot * 32;
            if hdr[at + 16..at + 20] != [0; 4] {
                hdr[at + field as usize..at + field as usize + 4].copy_from_slice(&value.to_be_bytes());
            }
        }
        hdr[12..16].fill(0);
        let crc = blockcrypt::crc32c::crc32c(hdr);
        hdr[12..16].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(&img, bytes).unwrap();
        img
    };
    let cases = [
        ("iterations above 2^31", patch("i1.img", SLOT0_ITERATIONS, 0xffff_ffff, None), "PBKDF2 iterations"),
        ("iterations 2^31-1", patch("i2.img", SLOT0_ITERATIONS, 0x7fff_ffff, None), "PBKDF2 iterations"),
        ("digest iterations 2^31-1", patch("i3.img", MK_DIGEST_ITER, 0x7fff_ffff, None), "PBKDF2 iterations"),
        (
            "payload offset 0xfffffff0 on a sparse file",
            patch("p1.img", PAYLOAD_OFFSET, 0xffff_fff0, Some(0xffff_fff0 * 512 + (1 << 20))),
            "header area would be",
        ),
        (
            "payload offset 2 GiB",
            patch("p2.img", PAYLOAD_OFFSET, (2u32 << 30) / 512, Some((2 << 30) + (1 << 20))),
            "header area would be",
        ),
        ("luksmeta slot length 2^32-16", meta_patch("m1.img", 20, 0xffff_fff0), "points outside the gap"),
        ("luksmeta slot offset 2^32-16", meta_patch("m2.img", 16, 0xffff_fff0), "points outside the gap"),
    ];
    for (what, img, expect) in cases {
        // `info` runs no PBKDF2 (it shows the header without the KMS); `check` unlocks.
        let cmds: &[&str] = if expect.contains("PBKDF2") { &["check"] } else { &["info", "check"] };
        for &cmd in cmds {
            let start = Instant::now();
            let out = w.run(&[cmd, &img]);
            let took = start.elapsed();
            // `check` lists problems on stdout and sums them up on stderr.
            let err = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(!out.status.success(), "{what}: {cmd} succeeded");
            assert!(!err.contains("panicked"), "{what}: {cmd} panicked: {err}");
            assert!(took < Duration::from_secs(1), "{what}: {cmd} took {took:?}");
            assert!(err.contains(expect), "{what}: {cmd}: {err}");
        }
    }
    // The largest of those processes (the embedded KMS included) stayed small: nothing sized by
    // the crafted fields was allocated.
    // SAFETY: getrusage only writes the struct it is given.
    let max_rss_mb = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss as u64 / 1024
    };
    assert!(max_rss_mb < 100, "a crafted header made a process grow to {max_rss_mb} MiB");
}
