//! `kms-xts [SECONDS]`: blockcrypt's sector cipher (XTS-plain64 over whole sectors, as
//! `blockcrypt serve` runs it per request) against OpenSSL's own XTS mode run the same way – one
//! data unit per 512-byte sector, its IV reset for each – on one core, at the request sizes that
//! matter: 4 KiB (random I/O), 64 KiB and 256 KiB (nbdcopy's and the kernel's readahead). Both
//! produce the same bytes (blockcrypt's tests check it); the ratio is blockcrypt's speed over
//! OpenSSL's.

use std::time::Instant;

use blockcrypt::xts::{Algorithm, SectorCipher, SECTOR};
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;

const SIZES: [usize; 3] = [4 << 10, 64 << 10, 256 << 10];

fn main() {
    let secs: f64 = std::env::args().nth(1).map(|s| s.parse().expect("SECONDS: a number")).unwrap_or(2.0);
    let key: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    println!("| cipher, request | blockcrypt encrypt GiB/s | decrypt | OpenSSL XTS per sector, encrypt | ratio |");
    println!("|---|---:|---:|---:|---:|");
    for (alg, key, name) in [(Algorithm::Aes, &key[..], "AES-256-XTS"), (Algorithm::Sm4, &key[..32], "SM4-XTS")] {
        let ours = SectorCipher::new(alg, key).expect("key");
        for size in SIZES {
            let mut buf = vec![0x5a; size];
            let enc = rate(secs, size, |n| ours.encrypt(n, &mut buf));
            let dec = rate(secs, size, |n| ours.decrypt(n, &mut buf));
            // OpenSSL 3.0 has no SM4-XTS (3.2 added it): blockcrypt's alone there.
            let (peer, ratio) = if alg == Algorithm::Aes {
                let peer = openssl_per_sector(Cipher::aes_256_xts(), key, secs, size);
                (format!("{peer:.2}"), format!("{:.2}×", enc / peer))
            } else {
                ("–".into(), "–".into())
            };
            println!("| {name}, {} KiB | {enc:.2} | {dec:.2} | {peer} | {ratio} |", size >> 10);
        }
    }
}

/// GiB/s of `op` over requests of `size` bytes, each at the next sector number, for `secs`.
fn rate(secs: f64, size: usize, mut op: impl FnMut(u64)) -> f64 {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            op(n * (size / SECTOR) as u64);
            n += 1;
        }
    }
    (n as f64 * size as f64) / (1u64 << 30) as f64 / t.elapsed().as_secs_f64()
}

/// OpenSSL's XTS mode as dm-crypt's layout needs it: a keyed context, its IV set to each
/// sector's `plain64` number before that sector's 512 bytes.
fn openssl_per_sector(cipher: &'static openssl::cipher::CipherRef, key: &[u8], secs: f64, size: usize) -> f64 {
    let mut ctx = CipherCtx::new().expect("context");
    ctx.encrypt_init(Some(cipher), Some(key), None).expect("key");
    let buf = vec![0x5a; size];
    let mut out = vec![0u8; size + 16];
    rate(secs, size, |first| {
        for (i, sector) in buf.chunks(SECTOR).enumerate() {
            let mut iv = [0u8; 16];
            iv[..8].copy_from_slice(&(first + i as u64).to_le_bytes());
            ctx.encrypt_init(None, None, Some(&iv)).expect("IV");
            ctx.cipher_update(sector, Some(&mut out[i * SECTOR..(i + 1) * SECTOR + 16])).expect("XTS");
        }
    })
}
