//! End-to-end helpers: the `blockcrypt` binary against an embedded KMS store or a real sidecar,
//! `serve` as a child process on a Unix socket, the real NBD/LUKS tools, and a small raw NBD
//! client for what the tools cannot do (broken requests, exact flush points).
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_blockcrypt"))
}

/// How `blockcrypt` reaches the KMS: flags for every call.
#[derive(Clone)]
pub struct Kms(pub Vec<String>);

impl Kms {
    pub fn embedded(dir: &Path) -> Kms {
        Kms(vec!["--embedded".into(), dir.display().to_string()])
    }
}

pub fn run(kms: &Kms, args: &[&str]) -> Output {
    Command::new(bin()).args(&kms.0).args(args).stdin(Stdio::null()).output().expect("run blockcrypt")
}

pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "blockcrypt failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (exit code, stderr) of a command expected to fail.
pub fn code(out: &Output) -> (Option<i32>, String) {
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs a tool and insists it succeeds; returns stdout.
pub fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e} (installed by .ci/setup)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn tool_fails(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(!out.status.success(), "{cmd} {args:?} succeeded unexpectedly");
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// Pseudo-random bytes from a seed (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A temporary directory with an embedded KMS store in it.
pub struct Workdir {
    pub dir: tempfile::TempDir,
    pub kms: Kms,
}

impl Workdir {
    pub fn new() -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let kms = Kms::embedded(&dir.path().join("kms"));
        Workdir { dir, kms }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run(&self.kms, args)
    }

    /// Creates a volume and writes its passphrase next to it as `<name>.pass` (no newline).
    pub fn create(&self, name: &str, extra: &[&str]) -> String {
        let img = self.p(name);
        let mut args = vec!["create", &img];
        args.extend_from_slice(extra);
        ok(&self.run(&args));
        img
    }

    pub fn passphrase_file(&self, img: &str, header: Option<&str>) -> String {
        let file = format!("{img}.pass");
        let mut args = vec!["passphrase", img, "--qemu-secret", &file];
        if let Some(h) = header {
            args.extend_from_slice(&["--header", h]);
        }
        ok(&self.run(&args));
        file
    }

    pub fn serve(&self, exports: &[&str], extra: &[&str]) -> Server {
        Server::start(&self.kms.0, &self.path("nbd.sock"), exports, extra)
    }
}

/// `blockcrypt serve` on a Unix socket, killed when dropped (the workspace's one harness).
pub use kms_e2e::NbdServer as Server;

/// qemu-io on a volume file through qemu's own LUKS driver (no blockcrypt involved).
pub fn qemu_io_luks(img: &str, pass: &str, header: Option<&str>, cmds: &[&str]) -> Output {
    let mut opts = format!("driver=luks,key-secret=s0,file.filename={img}");
    if let Some(h) = header {
        opts.push_str(&format!(",header.filename={h}"));
    }
    let mut c = Command::new("qemu-io");
    c.args(["--object", &format!("secret,id=s0,file={pass}"), "--image-opts", &opts]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c.output().expect("qemu-io")
}

/// qemu-io output must show no failure (it exits 0 even when a pattern check fails).
pub fn qemu_ok(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && !text.contains("failed")
            && !text.contains("Pattern verification")
            && !text.contains("error"),
        "qemu-io: {text}"
    );
    text
}

// ---- A raw NBD client ----

use blockcrypt::nbd::proto::{CMD_FLUSH, CMD_READ, CMD_WRITE};

pub struct Client {
    pub s: UnixStream,
    pub size: u64,
    pub flags: u16,
    cookie: u64,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

impl Client {
    /// Handshake with OPT_GO (simple replies) for `export`.
    pub fn connect(socket: &Path, export: &str) -> Client {
        Client::connect_with(socket, export, false)
    }

    /// Handshake with OPT_GO, after OPT_STRUCTURED_REPLY when `structured`.
    pub fn connect_with(socket: &Path, export: &str, structured: bool) -> Client {
        let mut s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], b"NBDMAGIC");
        s.write_all(&3u32.to_be_bytes()).unwrap();
        if structured {
            s.write_all(b"IHAVEOPT\0\0\0\x08\0\0\0\0").unwrap();
            let mut h = [0u8; 20];
            s.read_exact(&mut h).unwrap();
            assert_eq!(be32(&h[12..]), 1, "structured replies acknowledged");
        }
        let mut opt = Vec::new();
        opt.extend_from_slice(b"IHAVEOPT");
        opt.extend_from_slice(&7u32.to_be_bytes());
        opt.extend_from_slice(&(4 + export.len() as u32 + 2).to_be_bytes());
        opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
        opt.extend_from_slice(export.as_bytes());
        opt.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&opt).unwrap();
        let (mut size, mut flags) = (0, 0);
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).unwrap();
            let (kind, len) = (be32(&h[12..]), be32(&h[16..]));
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data).unwrap();
            match kind {
                1 => break,
                3 if data[..2] == [0, 0] => {
                    size = u64::from_be_bytes(data[2..10].try_into().unwrap());
                    flags = u16::from_be_bytes([data[10], data[11]]);
                }
                3 => {}
                other => panic!("GO refused: {other:#x} {}", String::from_utf8_lossy(&data)),
            }
        }
        Client { s, size, flags, cookie: 0 }
    }

    /// Sends a request (and payload); returns its cookie.
    pub fn send(&mut self, kind: u16, flags: u16, offset: u64, len: u32, payload: &[u8]) -> u64 {
        self.cookie += 1;
        let mut b = Vec::with_capacity(28 + payload.len());
        b.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&self.cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(payload);
        self.s.write_all(&b).unwrap();
        self.cookie
    }

    /// Reads one simple reply: (cookie, error); `data_len` bytes follow a successful read.
    pub fn reply(&mut self, data: Option<&mut [u8]>) -> (u64, u32) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(be32(&h), 0x6744_6698, "simple reply magic");
        let (err, cookie) = (be32(&h[4..]), u64::from_be_bytes(h[8..16].try_into().unwrap()));
        if err == 0 {
            if let Some(d) = data {
                self.s.read_exact(d).unwrap();
            }
        }
        (cookie, err)
    }

    /// One request, one reply: the error code.
    pub fn call(&mut self, kind: u16, flags: u16, offset: u64, len: u32, payload: &[u8]) -> u32 {
        let c = self.send(kind, flags, offset, len, payload);
        let (cookie, err) = self.reply(None);
        assert_eq!(cookie, c);
        err
    }

    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, u32> {
        let c = self.send(CMD_READ, 0, offset, len as u32, &[]);
        let mut buf = vec![0u8; len];
        let (cookie, err) = self.reply(Some(&mut buf));
        assert_eq!(cookie, c);
        if err == 0 {
            Ok(buf)
        } else {
            Err(err)
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> u32 {
        self.call(CMD_WRITE, 0, offset, data.len() as u32, data)
    }

    /// One structured reply chunk: (flags, type, cookie, payload).
    pub fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(be32(&h), 0x668e_33ef, "structured reply magic");
        let mut data = vec![0u8; be32(&h[16..]) as usize];
        self.s.read_exact(&mut data).unwrap();
        let flags = u16::from_be_bytes([h[4], h[5]]);
        let kind = u16::from_be_bytes([h[6], h[7]]);
        (flags, kind, u64::from_be_bytes(h[8..16].try_into().unwrap()), data)
    }

    pub fn flush(&mut self) -> u32 {
        self.call(CMD_FLUSH, 0, 0, 0, &[])
    }
}
