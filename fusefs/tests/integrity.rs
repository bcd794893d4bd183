//! Tampering with the cipher directory: a flipped byte in a block, a header or a name, a block
//! moved within or between files, swapped headers, a forged symlink target or xattr value. Each
//! read of the damaged part fails with EIO (logged with the backing path) – never wrong
//! plaintext – the rest stays readable, and fsck names every problem.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const BS: u64 = 4096;
const HDR: u64 = 24;
const STORED: u64 = BS + 28;

fn read_err(p: &Path, off: u64) -> Option<i32> {
    let f = fs::File::open(p).map_err(|e| e.raw_os_error()).ok()?;
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, off).err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// Runs `tamper` on the unmounted cipher directory, mounts, runs `check`, and puts every backing
/// file back as it was.
fn case(m: &mut common::Mount, what: &str, tamper: impl FnOnce(&[PathBuf]), check: impl FnOnce(&common::Mount)) {
    m.unmount();
    let files = m.backing_files();
    let saved: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    tamper(&files);
    let fsck = m.fsck();
    assert_eq!(fsck.status.code(), Some(7), "{what}: fsck must report it: {}", String::from_utf8_lossy(&fsck.stdout));
    m.mount();
    check(m);
    m.unmount();
    for (f, b) in files.iter().zip(saved) {
        fs::write(f, b).unwrap();
    }
    m.mount();
}

fn patch(p: &Path, off: u64, bytes: &[u8]) {
    fs::OpenOptions::new().write(true).open(p).unwrap().write_all_at(bytes, off).unwrap();
}

/// Inverts the byte at `off` (writing a constant would leave it alone 1 time in 256).
fn flip(p: &Path, off: u64) {
    let b = read_at(p, off, 1)[0];
    patch(p, off, &[!b]);
}

fn read_at(p: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    fs::File::open(p).unwrap().read_exact_at(&mut b, off).unwrap();
    b
}

#[test]
fn tampering_is_detected_never_decrypted() {
    let mut m = common::Mount::new();
    fs::write(m.mnt.join("a"), vec![b'a'; 3 * BS as usize]).unwrap();
    fs::write(m.mnt.join("b"), vec![b'b'; 3 * BS as usize]).unwrap();
    m.unmount();
    // Which backing file is which: by their plaintext through a mount, so order the two by size
    // after marking one.
    m.mount();
    fs::write(m.mnt.join("b"), vec![b'b'; 3 * BS as usize + 1]).unwrap();
    m.unmount();
    let mut files = m.backing_files();
    files.sort_by_key(|f| fs::metadata(f).unwrap().len());
    let (a, b) = (files[0].clone(), files[1].clone());
    m.mount();
    let (pa, pb) = (m.mnt.join("a"), m.mnt.join("b"));
    let eio = Some(5);

    case(
        &mut m,
        "flipped byte in block 1",
        |_| flip(&a, HDR + STORED + 100),
        |m| {
            assert_eq!(read_err(&pa, BS + 10), eio);
            assert_eq!(read_at(&pa, 0, 10), vec![b'a'; 10], "other blocks stay readable");
            let log = m.log_text();
            assert!(log.contains(a.file_name().unwrap().to_str().unwrap()), "the log names the backing file");
            assert!(log.contains("integrity error in /a (backing "), "and the file in the volume: {log}");
        },
    );
    case(
        &mut m,
        "flipped byte in the header",
        |_| flip(&a, 10),
        |_| {
            assert_eq!(read_err(&pa, 0), eio);
        },
    );
    case(
        &mut m,
        "block moved within the file",
        |_| {
            let blk0 = read_at(&a, HDR, STORED as usize);
            patch(&a, HDR + STORED, &blk0);
        },
        |_| {
            assert_eq!(read_err(&pa, BS), eio);
        },
    );
    case(
        &mut m,
        "block moved between files",
        |_| {
            let blk = read_at(&b, HDR + STORED, STORED as usize);
            patch(&a, HDR + STORED, &blk);
        },
        |_| {
            assert_eq!(read_err(&pa, BS), eio);
        },
    );
    case(
        &mut m,
        "headers swapped",
        |_| {
            let (ha, hb) = (read_at(&a, 0, HDR as usize), read_at(&b, 0, HDR as usize));
            patch(&a, 0, &hb);
            patch(&b, 0, &ha);
        },
        |_| {
            assert_eq!(read_err(&pa, 0), eio);
            assert_eq!(read_err(&pb, 0), eio);
        },
    );

    // A forged name: the entry is not shown (and not guessed), fsck names it.
    m.unmount();
    let name = a.file_name().unwrap().to_str().unwrap().to_string();
    let mut forged = name.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = a.with_file_name(String::from_utf8(forged).unwrap());
    fs::rename(&a, &forged).unwrap();
    assert_eq!(m.fsck().status.code(), Some(7));
    m.mount();
    let listed: Vec<String> =
        fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(listed, vec!["b".to_string()], "the damaged entry is left out");
    m.unmount();
    fs::rename(&forged, &a).unwrap();
    m.mount();

    // Symlink targets and xattr values are sealed too.
    std::os::unix::fs::symlink("target", m.mnt.join("ln")).unwrap();
    rustix::fs::setxattr(pa.to_str().unwrap(), "user.k", b"v", rustix::fs::XattrFlags::empty()).unwrap();
    m.unmount();
    let ln = fs::read_dir(&m.cipher).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_symlink()).unwrap();
    let mut t = fs::read_link(&ln).unwrap().into_os_string().into_string().unwrap().into_bytes();
    t[20] = if t[20] == b'A' { b'B' } else { b'A' };
    fs::remove_file(&ln).unwrap();
    std::os::unix::fs::symlink(String::from_utf8(t).unwrap(), &ln).unwrap();
    let mut names = vec![0u8; 1024];
    let n = rustix::fs::listxattr(a.to_str().unwrap(), &mut names[..]).unwrap();
    let xname = String::from_utf8(names[..n].split(|&b| b == 0).next().unwrap().to_vec()).unwrap();
    let mut v = vec![0u8; 1024];
    let n = rustix::fs::getxattr(a.to_str().unwrap(), xname.as_str(), &mut v[..]).unwrap();
    v.truncate(n);
    v[n - 1] ^= 1;
    rustix::fs::setxattr(a.to_str().unwrap(), xname.as_str(), &v, rustix::fs::XattrFlags::empty()).unwrap();
    let out = m.fsck();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{report}");
    assert!(report.contains("symlink target") && report.contains("value does not authenticate"), "{report}");
    m.mount();
    assert_eq!(fs::read_link(m.mnt.join("ln")).unwrap_err().raw_os_error(), eio);
    let mut buf = [0u8; 16];
    assert_eq!(rustix::fs::getxattr(pa.to_str().unwrap(), "user.k", &mut buf[..]).unwrap_err(), rustix::io::Errno::IO);
    assert_eq!(read_at(&pa, 0, 4), b"aaaa", "the file itself is fine");
}
