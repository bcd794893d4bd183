//! Our volumes opened by the standard tools, and theirs by us: qemu's LUKS driver, cryptsetup,
//! nbdkit's luks filter, luksmeta, and RustCrypto's XTS as an independent cipher.

mod common;

use blockcrypt::luks1::Header;
use common::*;

/// AES-256-XTS decryption of one 512-byte sector by an independent implementation (RustCrypto's
/// `xts-mode`; tweak = little-endian sector number).
fn xts_decrypt(vk: &[u8], sector: u64, data: &[u8]) -> Vec<u8> {
    use aes::cipher::KeyInit;
    let xts = xts_mode::Xts128::new(
        aes::Aes256::new_from_slice(&vk[..32]).unwrap(),
        aes::Aes256::new_from_slice(&vk[32..]).unwrap(),
    );
    let mut out = data.to_vec();
    xts.decrypt_sector(&mut out, xts_mode::get_tweak_default(sector as u128));
    out
}

/// cryptsetup's view of the volume key, via the keyslot passphrase blockcrypt prints.
fn dump_volume_key(w: &Workdir, header_file: &str, pass: &str) -> Vec<u8> {
    let vk = w.p("vk.bin");
    let _ = std::fs::remove_file(&vk);
    tool(
        "cryptsetup",
        &["luksDump", "--dump-volume-key", "--volume-key-file", &vk, "--key-file", pass, "--batch-mode", header_file],
    );
    std::fs::read(vk).unwrap()
}

#[test]
fn qemu_cryptsetup_nbdkit_and_luksmeta_open_our_volume() {
    let w = Workdir::new();
    let img = w.create("disk.img", &["--size", "32M"]);
    let pass = w.passphrase_file(&img, None);

    // cryptsetup parses the header; the volume key it recovers is the one the header's digest names.
    let dump = tool("cryptsetup", &["luksDump", &img]);
    assert!(
        dump.contains("Cipher name:   \taes") && dump.contains("xts-plain64") && dump.contains("MK bits:       \t512"),
        "{dump}"
    );
    let vk = dump_volume_key(&w, &img, &pass);
    let hdr = Header::parse(&std::fs::read(&img).unwrap()[..592]).unwrap();
    hdr.check_key(&vk).expect("cryptsetup's volume key opens the digest");

    // luksmeta finds our record in its slot.
    let show = tool("luksmeta", &["show", "-d", &img]);
    assert!(show.contains("active 7b6c2f1e-8a4d-4c55-9d3a-b10c4c7e5a01"), "{show}");
    let record = tool("luksmeta", &["load", "-d", &img, "-s", "0"]);
    assert!(record.contains("\"ciphertext_blob\"") && record.contains("blockcrypt:disk-id"), "{record}");

    // qemu writes through its own LUKS driver.
    let data = pattern(1 << 20, 7);
    std::fs::write(w.path("data.bin"), &data).unwrap();
    qemu_ok(&qemu_io_luks(&img, &pass, None, &["write -P 0x5a 0 4096", "write -P 0xc3 1048576 512"]));

    // An independent XTS decrypts what qemu wrote with the volume key (payload at 2 MiB, sector 0 there).
    let raw = std::fs::read(&img).unwrap();
    let base = 2 << 20;
    assert_eq!(xts_decrypt(&vk, 0, &raw[base..base + 512]), vec![0x5a; 512]);
    assert_eq!(xts_decrypt(&vk, 2048, &raw[base + (1 << 20)..base + (1 << 20) + 512]), vec![0xc3; 512]);

    // blockcrypt serves what qemu wrote; what we write through NBD, qemu and nbdkit read back.
    let mut srv = w.serve(&[&img], &[]);
    let mut c = Client::connect(&srv.socket, "disk.img");
    assert_eq!(c.read(0, 4096).unwrap(), vec![0x5a; 4096]);
    assert_eq!(c.read(1 << 20, 512).unwrap(), vec![0xc3; 512]);
    assert_eq!(c.write(8 << 20, &data), 0);
    assert_eq!(c.write(100, b"unaligned bytes"), 0);
    assert_eq!(c.flush(), 0);
    drop(c);
    srv.stop();
    qemu_ok(&qemu_io_luks(&img, &pass, None, &["read -P 0x5a 0 100", "read -P 0x5a 115 3981"]));
    let out = w.p("via-nbdkit.raw");
    tool(
        "nbdkit",
        &[
            "-U",
            "-",
            "file",
            &img,
            "--filter=luks",
            &format!("passphrase=+{pass}"),
            "--run",
            &format!("nbdcopy \"$uri\" {out}"),
        ],
    );
    let plain = std::fs::read(&out).unwrap();
    assert_eq!(plain.len(), 32 << 20, "--size is the disk as clients see it");
    assert_eq!(&plain[8 << 20..9 << 20], &data[..]);
    assert_eq!(&plain[100..115], b"unaligned bytes");
    assert_eq!(&plain[..100], &[0x5a; 100][..]);
}

#[test]
fn detached_header_leaves_pure_ciphertext() {
    let w = Workdir::new();
    let (data, hdr) = (w.p("disk.data"), w.p("disk.hdr"));
    ok(&w.run(&["create", &data, "--header", &hdr, "--size", "8M"]));
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 8 << 20, "no header in the data file");
    let pass = w.passphrase_file(&data, Some(&hdr));
    qemu_ok(&qemu_io_luks(&data, &pass, Some(&hdr), &["write -P 0x77 0 512"]));
    let vk = dump_volume_key(&w, &hdr, &pass);
    let raw = std::fs::read(&data).unwrap();
    assert_eq!(xts_decrypt(&vk, 0, &raw[..512]), vec![0x77; 512], "data file sector 0 is XTS sector 0");
    let info = ok(&w.run(&["info", &data, "--header", &hdr, "--json"]));
    assert!(info.contains("\"payload_offset\": 0"), "{info}");

    let export = format!("d={data},header={hdr}");
    let srv = w.serve(&[&export], &[]);
    let mut c = Client::connect(&srv.socket, "d");
    assert_eq!(c.read(0, 512).unwrap(), vec![0x77; 512]);
    // Without the header the data file is not a volume.
    let (code, err) = code(&w.run(&["info", &data]));
    assert_eq!(code, Some(3), "{err}");
}

#[test]
fn sm4_volumes_are_ours_alone() {
    let w = Workdir::new();
    let img = w.create("sm4.img", &["--size", "4M", "--cipher", "sm4-xts"]);
    let dump = tool("cryptsetup", &["luksDump", &img]);
    assert!(dump.contains("sm4") && dump.contains("MK bits:       \t256"), "{dump}");
    let pass = w.passphrase_file(&img, None);
    // qemu has no SM4 here and says so; nothing is misread.
    let out = qemu_io_luks(&img, &pass, None, &["read 0 512"]);
    assert!(!out.status.success(), "qemu opened an SM4 volume?");
    let srv = w.serve(&[&img], &[]);
    let mut c = Client::connect(&srv.socket, "sm4.img");
    let data = pattern(64 << 10, 3);
    assert_eq!(c.write(4096, &data), 0);
    assert_eq!(c.read(4096, data.len()).unwrap(), data);
    let raw = std::fs::read(&img).unwrap();
    assert_ne!(&raw[(2 << 20) + 4096..(2 << 20) + 4096 + data.len()], &data[..], "stored encrypted");
}

/// A LUKS1 image made by qemu itself has no blockcrypt record: refused with a clear message.
#[test]
fn foreign_luks_images_are_refused() {
    let w = Workdir::new();
    let pass = w.path("p.txt");
    std::fs::write(&pass, "secret").unwrap();
    let img = w.p("qemu.luks");
    tool(
        "qemu-img",
        &[
            "create",
            "-f",
            "luks",
            "--object",
            &format!("secret,id=s0,file={}", pass.display()),
            "-o",
            "key-secret=s0,iter-time=10",
            &img,
            "4M",
        ],
    );
    let (code, err) = code(&w.run(&["info", &img]));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("no blockcrypt record"), "{err}");
}

/// qemu's image locks: qemu refuses a disk `serve` has open, read-write or read-only, and `serve`
/// refuses one qemu has open – so the two never write one disk at once.
#[test]
fn qemu_and_serve_refuse_each_others_disk() {
    let w = Workdir::new();
    let img = w.create("disk.img", &["--size", "8M"]);
    let pass = w.passphrase_file(&img, None);
    let mut srv = w.serve(&[&img], &[]);
    for cmds in [&["write -P 0x11 0 512"][..], &["read 0 512"][..]] {
        let out = qemu_io_luks(&img, &pass, None, cmds);
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Failed to get") && text.contains("lock"), "qemu-io {cmds:?} was let in: {text}");
    }
    srv.stop();
    // Once serve has stopped, qemu opens it; while qemu holds it, serve is refused.
    let opts = format!("driver=luks,key-secret=s0,file.filename={img}");
    let mut qemu = std::process::Command::new("qemu-io")
        .args(["--object", &format!("secret,id=s0,file={pass}"), "--image-opts", &opts])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // qemu-io waits for commands with the image open (its locks show in /proc/locks).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&img).unwrap());
    let held = || {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        locks.lines().any(|l| {
            l.contains("OFDLCK") && l.split_whitespace().nth(5).is_some_and(|f| f.ends_with(&format!(":{ino}")))
        })
    };
    while !held() {
        assert!(std::time::Instant::now() < deadline, "qemu-io never took its locks");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = w.run(&["serve", "--socket", w.p("b.sock").as_str(), &img]);
    let (c, err) = code(&out);
    assert_eq!(c, Some(6), "serve must refuse a disk qemu has open: {err}");
    assert!(err.contains("write") && err.contains("qemu"), "{err}");
    drop(qemu.stdin.take());
    qemu.wait().unwrap();
    let _srv = w.serve(&[&img], &[]);
}
