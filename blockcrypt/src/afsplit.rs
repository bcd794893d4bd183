//! LUKS1 anti-forensic split: a key is spread over `stripes` blocks so that destroying any part of
//! the keyslot area destroys the key (FORMAT.md §2). The diffusion hashes each digest-sized
//! chunk of the buffer prefixed with its big-endian index.

use openssl::hash::{Hasher, MessageDigest};
use zeroize::Zeroizing;

fn diffuse(buf: &mut [u8], md: MessageDigest) {
    let ds = md.size();
    for (i, chunk) in buf.chunks_mut(ds).enumerate() {
        let mut h = Hasher::new(md).expect("hash");
        h.update(&(i as u32).to_be_bytes()).expect("hash");
        h.update(chunk).expect("hash");
        let d = h.finish().expect("hash");
        let n = chunk.len();
        chunk.copy_from_slice(&d[..n]);
    }
}

fn xor_into(acc: &mut [u8], x: &[u8]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a ^= b;
    }
}

/// Splits `key` into `stripes` blocks of its length, all random but the last.
pub fn split(key: &[u8], stripes: usize, md: MessageDigest) -> Zeroizing<Vec<u8>> {
    let n = key.len();
    let mut out = Zeroizing::new(vec![0u8; n * stripes]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut out[..n * (stripes - 1)]);
    let mut acc = Zeroizing::new(vec![0u8; n]);
    for stripe in out[..n * (stripes - 1)].chunks_exact(n) {
        xor_into(&mut acc, stripe);
        diffuse(&mut acc, md);
    }
    xor_into(&mut acc, key);
    out[n * (stripes - 1)..].copy_from_slice(&acc);
    out
}

/// The key that `material` (`stripes` blocks of `n` bytes) was split from.
pub fn merge(material: &[u8], n: usize, stripes: usize, md: MessageDigest) -> Zeroizing<Vec<u8>> {
    let mut acc = Zeroizing::new(vec![0u8; n]);
    for stripe in material[..n * (stripes - 1)].chunks_exact(n) {
        xor_into(&mut acc, stripe);
        diffuse(&mut acc, md);
    }
    xor_into(&mut acc, &material[n * (stripes - 1)..n * stripes]);
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_partial_digest_chunks() {
        // 20-byte SHA-1 digests over a 64-byte key leave a 4-byte last chunk.
        for md in [MessageDigest::sha1(), MessageDigest::sha256(), MessageDigest::sha512()] {
            let key: Vec<u8> = (0..64).collect();
            let m = split(&key, 4000, md);
            assert_eq!(&merge(&m, 64, 4000, md)[..], &key[..]);
            let mut broken = m.to_vec();
            broken[100] ^= 1;
            assert_ne!(&merge(&broken, 64, 4000, md)[..], &key[..]);
        }
    }
}
