//! Real NBD clients against `blockcrypt serve`: nbdinfo, nbdcopy (multi-connection), qemu-img
//! convert and bench, qemu-io – and the results checked against the data by other routes.

mod common;

use blockcrypt::nbd::proto::CMD_WRITE;
use common::*;

#[test]
fn nbdinfo_sees_what_we_advertise() {
    let w = Workdir::new();
    let a = w.create("a.img", &["--size", "4M"]);
    let b = w.create("b.img", &["--size", "8M"]);
    let named = format!("second={b}");
    let srv = w.serve(&[&a, &named], &[]);
    let info = tool("nbdinfo", &[&srv.uri("a.img")]);
    for want in [
        "export-size: 4194304",
        "can_multi_conn: true",
        "can_flush: true",
        "can_fua: true",
        "can_zero: true",
        "can_fast_zero: true",
        "can_trim: false",
        "is_read_only: false",
        "block_size_minimum: 512",
        "block_size_preferred: 4096",
        "block_size_maximum: 33554432",
        "base:allocation",
    ] {
        assert!(info.contains(want), "missing {want:?} in\n{info}");
    }
    let list = tool("nbdinfo", &["--list", &srv.uri("")]);
    assert!(list.contains("export=\"a.img\"") && list.contains("export=\"second\""), "{list}");
    assert!(tool("nbdinfo", &["--size", &srv.uri("second")]).trim() == "8388608");
    // The default export is the first one.
    assert!(tool("nbdinfo", &["--size", &srv.uri("")]).trim() == "4194304");
    let err = tool_fails("nbdinfo", &[&srv.uri("nope")]);
    assert!(err.contains("nope"), "{err}");
    // base:allocation: a new disk is all unwritten sectors – a hole that reads as zeroes.
    let map = tool("nbdinfo", &["--map", &srv.uri("a.img")]);
    assert_eq!(map.split_whitespace().collect::<Vec<_>>(), ["0", "4194304", "3", "hole,zero"], "{map}");
}

#[test]
fn unwritten_sectors_read_zeroes_map_as_holes_and_export_sparse() {
    let w = Workdir::new();
    let img = w.create("d.img", &["--size", "1G"]);
    let mut srv = w.serve(&[&img], &[]);
    let uri = srv.uri("d.img");
    let mut c = Client::connect(&srv.socket, "d.img");
    assert!(c.read(0, 1 << 20).unwrap().iter().all(|&b| b == 0), "a new disk reads zeroes");
    assert_eq!(c.write(512 << 20, &pattern(1 << 20, 8)), 0);
    assert_eq!(c.flush(), 0);
    drop(c);
    let map = tool("nbdinfo", &["--map", &uri]);
    let rows: Vec<Vec<&str>> = map.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["0", "536870912", "3", "hole,zero"],
            vec!["536870912", "1048576", "0", "data"],
            vec!["537919488", "535822336", "3", "hole,zero"]
        ],
        "{map}"
    );
    // nbdcopy skips what the map says is zero: the copy is as sparse as the disk.
    let copy = w.p("copy.raw");
    tool("nbdcopy", &[&uri, &copy]);
    let allocated = |p: &str| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap()) * 512;
    assert!(allocated(&copy) <= 2 << 20, "nbdcopy wrote {} bytes", allocated(&copy));
    srv.stop();
    // export reads only the written sectors and leaves the rest a hole.
    let t = std::time::Instant::now();
    let raw = w.p("out.raw");
    ok(&w.run(&["export", &img, &raw]));
    assert!(allocated(&raw) <= 2 << 20, "export wrote {} bytes", allocated(&raw));
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "export of a 1 GiB disk took {:?}", t.elapsed());
    let out = std::fs::read(&raw).unwrap();
    assert!(out[(512 << 20)..(513 << 20)] == pattern(1 << 20, 8)[..] && out[..512 << 20].iter().all(|&b| b == 0));
    // qemu writing into a hole through its own LUKS driver: read back through serve.
    let pass = w.passphrase_file(&img, None);
    qemu_ok(&qemu_io_luks(&img, &pass, None, &["write -P 0x77 65536 4096"]));
    let srv = w.serve(&[&img], &[]);
    let mut c = Client::connect(&srv.socket, "d.img");
    assert_eq!(c.read(65536, 4096).unwrap(), vec![0x77; 4096]);
    assert!(c.read(0, 65536).unwrap().iter().all(|&b| b == 0), "the hole before it still reads zeroes");
}

#[test]
fn serves_over_loopback_tcp() {
    use std::io::BufRead;
    let w = Workdir::new();
    let img = w.create("t.img", &["--size", "2M"]);
    let mut child = std::process::Command::new(bin())
        .args(&w.kms.0)
        .args(["serve", "--tcp", "127.0.0.1:0", &img])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let uri = format!("nbd://{addr}/t.img");
    assert_eq!(tool("nbdinfo", &["--size", &uri]).trim(), "2097152");
    let src = w.path("s.raw");
    std::fs::write(&src, pattern(2 << 20, 4)).unwrap();
    tool("nbdcopy", &[src.to_str().unwrap(), &uri]);
    tool("qemu-img", &["compare", "-f", "raw", "-F", "raw", src.to_str().unwrap(), &uri]);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn nbdcopy_and_qemu_img_round_trip() {
    let w = Workdir::new();
    let img = w.create("disk.img", &["--size", "48M"]);
    let src = w.path("src.raw");
    std::fs::write(&src, pattern(48 << 20, 11)).unwrap();
    let srv = w.serve(&[&img], &["--discard"]);
    let uri = srv.uri("disk.img");
    // nbdcopy with its 4 connections (we advertise multi-conn), flushed.
    tool("nbdcopy", &["--flush", src.to_str().unwrap(), &uri]);
    let back = w.path("back.raw");
    tool("nbdcopy", &[&uri, back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap(), "nbdcopy round trip");
    // qemu-img convert both ways and compare.
    let q = w.path("q.raw");
    tool("qemu-img", &["convert", "-f", "raw", "-O", "raw", &uri, q.to_str().unwrap()]);
    tool("qemu-img", &["compare", "-f", "raw", "-F", "raw", src.to_str().unwrap(), q.to_str().unwrap()]);
    let src2 = w.path("src2.raw");
    std::fs::write(&src2, pattern(48 << 20, 12)).unwrap();
    tool("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", src2.to_str().unwrap(), &uri]);
    tool("qemu-img", &["compare", "-f", "raw", "-F", "raw", src2.to_str().unwrap(), &uri]);
    // qemu-img bench reads and writes through it.
    tool("qemu-img", &["bench", "-f", "raw", "-c", "2000", "-d", "16", "-s", "4096", "-w", &uri]);
    tool("qemu-img", &["bench", "-f", "raw", "-c", "2000", "-d", "16", "-s", "65536", &uri]);
    // qemu-io: unaligned writes, zeroes, discard.
    let io = std::process::Command::new("qemu-io")
        .args(["-f", "raw", &uri])
        .args(["-c", "write -P 0x42 1000 3000", "-c", "read -P 0x42 1000 3000"])
        .args(["-c", "write -z 1048576 1048576", "-c", "read -P 0 1048576 1048576"])
        .args(["-c", "discard 4194304 65536", "-c", "flush"])
        .output()
        .unwrap();
    qemu_ok(&io);
}

#[test]
fn read_only_exports_refuse_writes() {
    let w = Workdir::new();
    let img = w.create("ro.img", &["--size", "4M"]);
    let before = std::fs::read(&img).unwrap();
    let srv = w.serve(&[&img], &["--read-only"]);
    assert!(tool("nbdinfo", &[&srv.uri("ro.img")]).contains("is_read_only: true"));
    let mut c = Client::connect(&srv.socket, "ro.img");
    assert_eq!(c.write(0, &[1; 512]), 1, "EPERM");
    assert!(c.read(0, 512).is_ok());
    drop(srv);
    assert!(std::fs::read(&img).unwrap() == before);
}

/// What reached a FLUSH reply survives kill -9 of the server; the disk opens afterwards.
#[test]
fn kill_9_loses_nothing_flushed() {
    let w = Workdir::new();
    let img = w.create("k.img", &["--size", "16M"]);
    let mut srv = w.serve(&[&img], &[]);
    let mut c = Client::connect(&srv.socket, "k.img");
    let mut flushed = Vec::new();
    for i in 0..64u64 {
        let data = pattern(64 << 10, i);
        assert_eq!(c.write(i * (64 << 10), &data), 0);
        if i % 8 == 7 {
            assert_eq!(c.flush(), 0);
            flushed.push(i);
        }
    }
    // More writes in flight, no flush, then the server dies.
    for i in 64..128u64 {
        c.send(CMD_WRITE, 0, (i % 64) * (64 << 10) + 512, 4096, &pattern(4096, 1000 + i));
    }
    srv.kill9();
    drop(c);
    let srv = w.serve(&[&img], &[]);
    let mut c = Client::connect(&srv.socket, "k.img");
    for i in 0..56u64 {
        let got = c.read(i * (64 << 10), 64 << 10).unwrap();
        let want = pattern(64 << 10, i);
        // Bytes 512..4608 of each block may hold an unflushed later write; the rest must be the flushed data.
        assert_eq!(got[..512], want[..512], "block {i}");
        assert_eq!(got[4608..], want[4608..], "block {i}");
    }
}

/// With a certificate, serve requires STARTTLS: libnbd and qemu (GnuTLS) connect over TLS and
/// verify it; a plaintext client is refused.
#[test]
fn tls_is_required_when_configured() {
    let w = Workdir::new();
    let img = w.create("t.img", &["--size", "4M"]);
    let tls = kms_sidecar::tls::ensure_generated(&w.path("tls"), &[]).unwrap();
    // GnuTLS clients look for the CA as ca-cert.pem in a directory.
    let client_dir = w.path("client");
    std::fs::create_dir(&client_dir).unwrap();
    std::fs::copy(tls.ca.as_ref().unwrap(), client_dir.join("ca-cert.pem")).unwrap();
    let (cert, key) = (tls.cert.display().to_string(), tls.key.display().to_string());
    let srv = w.serve(&[&img], &["--tls-cert", &cert, "--tls-key", &key]);
    let tls_uri =
        format!("nbds+unix:///t.img?socket={}&tls-certificates={}", srv.socket.display(), client_dir.display());
    let info = tool("nbdinfo", &[&tls_uri]);
    assert!(info.contains("with TLS"), "{info}");
    let src = w.path("s.raw");
    std::fs::write(&src, pattern(4 << 20, 8)).unwrap();
    tool("nbdcopy", &["--flush", src.to_str().unwrap(), &tls_uri]);
    let qemu_opts = format!(
        "driver=nbd,server.type=unix,server.path={},export=t.img,tls-creds=t0,tls-hostname=localhost",
        srv.socket.display()
    );
    let io = std::process::Command::new("qemu-io")
        .args(["--object", &format!("tls-creds-x509,id=t0,dir={},endpoint=client", client_dir.display())])
        .args(["--image-opts", &qemu_opts, "-c", "read -v 0 16"])
        .output()
        .unwrap();
    let out = qemu_ok(&io);
    let first: String = pattern(16, 8).iter().map(|b| format!("{b:02x} ")).collect();
    assert!(out.contains(first.trim()), "qemu read the data over TLS: {out}");
    // Without TLS: refused before any export is opened.
    let err = tool_fails("nbdinfo", &[&srv.uri("t.img")]);
    assert!(err.contains("opt_go"), "{err}");
    let mut c = std::os::unix::net::UnixStream::connect(&srv.socket).unwrap();
    use std::io::{Read, Write};
    let mut hello = [0u8; 18];
    c.read_exact(&mut hello).unwrap();
    c.write_all(&3u32.to_be_bytes()).unwrap();
    c.write_all(b"IHAVEOPT\0\0\0\x03\0\0\0\0").unwrap(); // LIST
    let mut h = [0u8; 20];
    c.read_exact(&mut h).unwrap();
    assert_eq!(u32::from_be_bytes(h[12..16].try_into().unwrap()), 0x8000_0005, "ERR_TLS_REQD");
}
