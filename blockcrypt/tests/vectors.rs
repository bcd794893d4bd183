//! Frozen disks (gocryptfs's example filesystems are the model): `tests/vectors/<cipher>/` holds a
//! disk an earlier build wrote – a detached header (the LUKS1 header and the KMS record with the
//! wrapped data key), its 64 KiB data file, and the embedded KMS store (with its root key) that
//! wraps the key. Every build must `check` it and `export` exactly the bytes that were imported;
//! for AES-XTS, `cryptsetup` must also read the header and accept the keyslot passphrase. A change
//! to the header, the record, the keyslot or the sector cipher (FORMAT.md) cannot slip in
//! unnoticed.
//!
//! Regenerate only for an intended, documented format change:
//!     BLOCKCRYPT_WRITE_VECTORS=1 cargo test -p blockcrypt --test vectors

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{ok, run, tool, Kms};

const CIPHERS: [&str; 2] = ["aes-xts-plain64", "sm4-xts-plain64"];

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The plaintext every frozen disk holds.
fn contents() -> Vec<u8> {
    (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

#[test]
fn frozen_disks_still_check_and_export() {
    if std::env::var_os("BLOCKCRYPT_WRITE_VECTORS").is_some() {
        for cipher in CIPHERS {
            write_vector(cipher);
        }
    }
    for cipher in CIPHERS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("kms")).unwrap();
        for f in ["kms/kms.db", "kms/root.key", "disk.hdr", "disk.img"] {
            fs::copy(vectors().join(cipher).join(f), d.join(f)).unwrap();
        }
        // A checkout makes every file world-readable; these must not be.
        use std::os::unix::fs::PermissionsExt;
        for f in ["kms/root.key", "disk.hdr", "disk.img"] {
            fs::set_permissions(d.join(f), fs::Permissions::from_mode(0o600)).unwrap();
        }
        let kms = Kms::embedded(&d.join("kms"));
        let (hdr, img, raw) = (d.join("disk.hdr"), d.join("disk.img"), d.join("out.raw"));
        let (hdr, img, raw) = (hdr.to_str().unwrap(), img.to_str().unwrap(), raw.to_str().unwrap());
        ok(&run(&kms, &["check", "--header", hdr, img]));
        ok(&run(&kms, &["export", "--header", hdr, img, raw]));
        let (got, want) = (fs::read(raw).unwrap(), contents());
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(got.len() == want.len() && first_diff.is_none(), "{cipher}: differs at byte {first_diff:?}");
        if cipher == "aes-xts-plain64" {
            // The header as LUKS1 tools read it, and the keyslot opened by its passphrase.
            let dump = tool("cryptsetup", &["luksDump", hdr]);
            assert!(dump.contains("Version:       \t1") || dump.contains("Version:"), "{dump}");
            let pass = d.join("pass");
            let p = ok(&run(&kms, &["passphrase", "--header", hdr, img]));
            fs::write(&pass, p.trim_end_matches('\n')).unwrap();
            tool(
                "cryptsetup",
                &["open", "--test-passphrase", "--header", hdr, img, "--key-file", pass.to_str().unwrap()],
            );
        }
    }
}

/// Writes `tests/vectors/<cipher>/` anew with this build (see the module comment).
fn write_vector(cipher: &str) {
    let out = vectors().join(cipher);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    let raw = out.join("plain.raw");
    fs::write(&raw, contents()).unwrap();
    let kms = Kms::embedded(&out.join("kms"));
    let (hdr, img) = (out.join("disk.hdr"), out.join("disk.img"));
    ok(&run(
        &kms,
        &[
            "import",
            "--cipher",
            cipher,
            "--header",
            hdr.to_str().unwrap(),
            raw.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    ));
    fs::remove_file(&raw).unwrap();
    // Everything into the database file itself; only the store and its root key are kept.
    let db = rusqlite::Connection::open(out.join("kms/kms.db")).unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    db.pragma_update(None, "journal_mode", "DELETE").unwrap();
    drop(db);
    for entry in fs::read_dir(out.join("kms")).unwrap() {
        let p = entry.unwrap().path();
        if !["kms.db", "root.key"].contains(&p.file_name().unwrap().to_str().unwrap()) {
            fs::remove_file(&p).unwrap();
        }
    }
}
