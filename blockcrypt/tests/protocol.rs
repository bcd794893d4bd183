//! Clients that break the protocol or ask for the impossible: each gets a clear error (or, where
//! the stream can no longer be trusted, a hang-up) and no other connection notices.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::*;

use blockcrypt::nbd::proto::{
    CMD_DISC, CMD_FLUSH, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, EINVAL, ENOSPC, ENOTSUP, EPERM,
};

fn setup(extra: &[&str]) -> (Workdir, Server) {
    let w = Workdir::new();
    let img = w.create("p.img", &["--size", "1M"]);
    let srv = w.serve(&[&img], extra);
    (w, srv)
}

/// True when the server has closed the connection.
fn hung_up(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return true,
        }
    }
}

#[test]
fn requests_out_of_bounds_or_unsupported_get_errors() {
    let (_w, srv) = setup(&[]);
    let mut c = Client::connect(&srv.socket, "p.img");
    let size = c.size;
    assert_eq!(c.read(size - 512, 1024).unwrap_err(), EINVAL, "read past the end");
    assert_eq!(c.write(size - 4, &[1; 8]), ENOSPC, "write past the end");
    assert_eq!(c.call(CMD_WRITE_ZEROES, 0, u64::MAX - 10, 100, &[]), ENOSPC, "offset overflow");
    assert_eq!(c.call(CMD_TRIM, 0, 0, 4096, &[]), EINVAL, "TRIM was not advertised");
    // FAST_ZERO: fast as a hole; not when the zeroes must stay allocated (NO_HOLE).
    assert_eq!(c.call(CMD_WRITE_ZEROES, 1 << 4, 0, 4096, &[]), 0, "FAST_ZERO punches a hole");
    assert_eq!(c.call(CMD_WRITE_ZEROES, 1 << 4 | 1 << 1, 0, 4096, &[]), ENOTSUP, "FAST_ZERO + NO_HOLE is slow");
    assert_eq!(c.call(99, 0, 0, 0, &[]), EINVAL, "unknown command");
    assert_eq!(c.call(CMD_FLUSH, 1 << 9, 0, 0, &[]), EINVAL, "unknown flag");
    assert_eq!(c.call(7, 0, 0, 512, &[]), EINVAL, "block status without a meta context");
    assert_eq!(c.read(0, 33 << 20).unwrap_err(), EINVAL, "read over the 32 MiB maximum");
    // Misaligned requests are served exactly (read-modify-write of the edge sectors).
    assert_eq!(c.call(CMD_WRITE_ZEROES, 0, 0, 4096, &[]), 0);
    assert_eq!(c.write(3, b"abc"), 0);
    assert_eq!(c.write(510, b"xyz!"), 0);
    let got = c.read(0, 1024).unwrap();
    let mut want = vec![0u8; 1024];
    want[3..6].copy_from_slice(b"abc");
    want[510..514].copy_from_slice(b"xyz!");
    assert_eq!(got, want);
    assert_eq!(c.read(511, 2).unwrap(), b"yz");
    // The connection is still good, and DISC ends it cleanly.
    assert_eq!(c.flush(), 0);
    c.send(CMD_DISC, 0, 0, 0, &[]);
    assert!(hung_up(&mut c.s));
}

#[test]
fn broken_clients_are_hung_up_on_and_others_go_on() {
    let (_w, srv) = setup(&[]);
    let mut good = Client::connect(&srv.socket, "p.img");
    assert_eq!(good.write(0, &[7; 4096]), 0);

    // Garbage instead of the client flags and options.
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    assert!(hung_up(&mut s));
    // Valid flags, then an option with the wrong magic.
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s.write_all(b"NOTMAGIC\0\0\0\x07\0\0\0\0").unwrap();
    assert!(hung_up(&mut s));
    // An option claiming 1 GiB of data.
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    s.read_exact(&mut hello).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s.write_all(b"IHAVEOPT\0\0\0\x07\x40\0\0\0").unwrap();
    assert!(hung_up(&mut s));
    // Closed in the middle of the handshake and in the middle of a write payload.
    drop(UnixStream::connect(&srv.socket).unwrap());
    let mut bad = Client::connect(&srv.socket, "p.img");
    let mut req = Vec::new();
    req.extend_from_slice(&0x2560_9513u32.to_be_bytes());
    req.extend_from_slice(&[0, 0, 0, 1]);
    req.extend_from_slice(&[0; 16]);
    req.extend_from_slice(&65536u32.to_be_bytes());
    req.extend_from_slice(&[9; 1000]);
    bad.s.write_all(&req).unwrap();
    drop(bad);
    // A write announcing a payload over the maximum: the stream cannot be trusted after it.
    let mut huge = Client::connect(&srv.socket, "p.img");
    huge.send(CMD_WRITE, 0, 0, u32::MAX, &[]);
    assert!(hung_up(&mut huge.s));
    // A request with a bad magic.
    let mut magic = Client::connect(&srv.socket, "p.img");
    magic.s.write_all(&[0x11; 28]).unwrap();
    assert!(hung_up(&mut magic.s));

    // The first client noticed nothing, and the torn write changed nothing.
    assert_eq!(good.read(0, 4096).unwrap(), vec![7; 4096]);
    assert_eq!(good.write(4096, &[8; 512]), 0);
    assert_eq!(good.flush(), 0);
}

#[test]
fn handshake_errors_leave_the_option_loop_open() {
    let (_w, srv) = setup(&[]);
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let reply = |s: &mut UnixStream| {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).unwrap();
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0u8; len as usize];
        s.read_exact(&mut d).unwrap();
        u32::from_be_bytes(h[12..16].try_into().unwrap())
    };
    let opt = |s: &mut UnixStream, o: u32, data: &[u8]| {
        let mut b = b"IHAVEOPT".to_vec();
        b.extend_from_slice(&o.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        s.write_all(&b).unwrap();
    };
    opt(&mut s, 7, &[0, 0, 0, 50, 1]); // GO with a name longer than the option
    assert_eq!(reply(&mut s), 0x8000_0003, "ERR_INVALID");
    opt(&mut s, 7, &[0, 0, 0, 4, b'n', b'o', b'p', b'e', 0, 0]);
    assert_eq!(reply(&mut s), 0x8000_0006, "ERR_UNKNOWN export");
    opt(&mut s, 5, &[]);
    assert_eq!(reply(&mut s), 0x8000_0001, "STARTTLS unsupported");
    opt(&mut s, 42, &[1, 2, 3]);
    assert_eq!(reply(&mut s), 0x8000_0001, "unknown option");
    opt(&mut s, 10, &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(reply(&mut s), 0x8000_0003, "SET_META_CONTEXT before structured replies");
    opt(&mut s, 2, &[]);
    assert_eq!(reply(&mut s), 1, "ABORT acknowledged");
    assert!(hung_up(&mut s));
}

#[test]
fn read_only_and_write_zeroes_semantics() {
    let (_w, srv) = setup(&["--read-only"]);
    let mut c = Client::connect(&srv.socket, "p.img");
    assert_eq!(c.call(CMD_WRITE_ZEROES, 0, 0, 512, &[]), EPERM);
    assert_eq!(c.write(0, &[0; 512]), EPERM);
    assert_eq!(c.flush(), 0);
}

#[test]
fn structured_replies_carry_data_and_errors() {
    let (_w, srv) = setup(&[]);
    let mut c = Client::connect_with(&srv.socket, "p.img", true);
    assert_eq!(c.write(4096, &[0x61; 1024]), 0);
    let cookie = c.send(CMD_READ, 0, 4096, 1024, &[]);
    let (flags, kind, got, data) = c.chunk();
    assert_eq!((flags, kind, got), (1, 1, cookie), "one OFFSET_DATA chunk, DONE");
    assert_eq!(u64::from_be_bytes(data[..8].try_into().unwrap()), 4096);
    assert_eq!(&data[8..], &[0x61; 1024][..]);
    let cookie = c.send(CMD_READ, 0, c.size, 512, &[]);
    let (flags, kind, got, data) = c.chunk();
    assert_eq!((flags, kind, got), (1, 0x8001, cookie), "an ERROR chunk, DONE");
    assert_eq!(u32::from_be_bytes(data[..4].try_into().unwrap()), EINVAL);
    let msg = String::from_utf8_lossy(&data[6..]);
    assert!(msg.contains("beyond the end"), "{msg}");
}

/// Old clients pick the export with EXPORT_NAME and get size and flags without an option reply.
#[test]
fn export_name_for_old_clients() {
    let (_w, srv) = setup(&["--read-only"]);
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    s.write_all(&1u32.to_be_bytes()).unwrap(); // fixed newstyle, but wants the 124 zero bytes
    let mut opt = b"IHAVEOPT\0\0\0\x01".to_vec();
    opt.extend_from_slice(&5u32.to_be_bytes());
    opt.extend_from_slice(b"p.img");
    s.write_all(&opt).unwrap();
    let mut reply = [0u8; 8 + 2 + 124];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), 1 << 20);
    let flags = u16::from_be_bytes([reply[8], reply[9]]);
    assert_eq!(flags & 0b11, 0b11, "HAS_FLAGS | READ_ONLY");
    assert!(reply[10..].iter().all(|&b| b == 0));
    // An unknown name has no error reply: the server hangs up.
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    s.read_exact(&mut hello).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s.write_all(b"IHAVEOPT\0\0\0\x01\0\0\0\x02xx").unwrap();
    assert!(hung_up(&mut s));
}
