//! The symmetric ciphertext blob (kms-core/FORMAT.md §1): a self-describing header naming the key
//! and version, the nonce, then ciphertext and tag. The header and the canonical
//! EncryptionContext are the AAD, so neither can be changed without the tag failing.

use uuid::Uuid;
use zeroize::Zeroizing;

use super::aead::{random_nonce, Algorithm, BlobAead, SymCipher, NONCE_LEN, TAG_LEN};
use super::seal::SealError;
use crate::error::{KmsError, Result};

pub const MAGIC: [u8; 2] = *b"km";
pub const FORMAT_V1: u8 = 1;
pub const MAX_KEY_ID_LEN: usize = 64;
const FIXED_LEN: usize = MAGIC.len() + 1 + 1 + 1; // magic, format, algorithm, key id length

/// The parsed header of a blob; borrows the key id from the blob bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHeader<'a> {
    pub algorithm: Algorithm,
    pub key_id: &'a str,
    pub version_id: Uuid,
    pub nonce: [u8; NONCE_LEN],
    /// Length of the header, nonce included: the AAD prefix and the start of the ciphertext.
    pub len: usize,
}

fn malformed(why: &str) -> KmsError {
    KmsError::invalid("CiphertextBlob", format_args!("not a ciphertext of this service ({why})"))
}

/// Parses the header. Errors are `InvalidParameter` on `CiphertextBlob`.
pub fn parse(blob: &[u8]) -> Result<BlobHeader<'_>> {
    if blob.len() < FIXED_LEN || blob[..2] != MAGIC {
        return Err(malformed("bad magic"));
    }
    if blob[2] != FORMAT_V1 {
        return Err(malformed("unknown format version"));
    }
    let algorithm = Algorithm::from_byte(blob[3]).ok_or_else(|| malformed("unknown algorithm"))?;
    let id_len = blob[4] as usize;
    if id_len == 0 || id_len > MAX_KEY_ID_LEN {
        return Err(malformed("bad key id length"));
    }
    let len = FIXED_LEN + id_len + 16 + NONCE_LEN;
    if blob.len() < len + TAG_LEN {
        return Err(malformed("truncated"));
    }
    let key_id = std::str::from_utf8(&blob[FIXED_LEN..FIXED_LEN + id_len])
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| malformed("bad key id"))?;
    let v = FIXED_LEN + id_len;
    let version_id = Uuid::from_slice(&blob[v..v + 16]).map_err(|_| malformed("bad version"))?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&blob[v + 16..len]);
    Ok(BlobHeader { algorithm, key_id, version_id, nonce, len })
}

/// Encrypts `plaintext` into a new blob naming `key_id`/`version_id`, with a cipher in this process
/// or a key in a token.
pub fn seal_with(
    cipher: &dyn BlobAead,
    key_id: &str,
    version_id: &Uuid,
    context: &[u8],
    plaintext: &[u8],
) -> std::result::Result<Vec<u8>, SealError> {
    if let Some(c) = cipher.as_sym() {
        return Ok(seal(c, key_id, version_id, context, plaintext));
    }
    let nonce = random_nonce();
    let mut out = header(cipher.algorithm(), key_id, version_id, &nonce);
    let ct = cipher.seal_detached(&nonce, &aad(&out, context), plaintext)?;
    out.extend_from_slice(&ct);
    Ok(out)
}

fn header(alg: Algorithm, key_id: &str, version_id: &Uuid, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + key_id.len() + 16 + NONCE_LEN + 64);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_V1);
    out.push(alg as u8);
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(version_id.as_bytes());
    out.extend_from_slice(nonce);
    out
}

/// Opens a blob with a cipher in this process or a key in a token.
pub fn open_with(
    cipher: &dyn BlobAead,
    header: &BlobHeader<'_>,
    blob: &[u8],
    context: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(c) = cipher.as_sym() {
        return open(c, header, blob, context);
    }
    let (h, body) = blob.split_at(header.len);
    cipher.open_checked(&header.nonce, &aad(h, context), body)?.ok_or_else(tag_failure)
}

fn tag_failure() -> KmsError {
    KmsError::invalid(
        "CiphertextBlob",
        "it cannot be decrypted: the EncryptionContext differs from the one used to encrypt, or the ciphertext was modified",
    )
}

/// Encrypts `plaintext` under `cipher` into a new blob naming `key_id`/`version_id`.
pub fn seal(cipher: &SymCipher, key_id: &str, version_id: &Uuid, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    debug_assert!(!key_id.is_empty() && key_id.len() <= MAX_KEY_ID_LEN);
    let nonce = random_nonce();
    let header_len = FIXED_LEN + key_id.len() + 16 + NONCE_LEN;
    let mut out = Vec::with_capacity(header_len + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_V1);
    out.push(cipher.algorithm() as u8);
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(version_id.as_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let (header, body) = out.split_at_mut(header_len);
    let tag = if context.is_empty() {
        cipher.seal_in_place(&nonce, header, body)
    } else {
        cipher.seal_in_place(&nonce, &aad(header, context), body)
    };
    out.extend_from_slice(&tag);
    out
}

/// Decrypts a blob whose header was parsed by [`parse`]. A failed tag is `InvalidParameter`: the
/// blob was modified, or the EncryptionContext differs from the one it was made with.
pub fn open(cipher: &SymCipher, header: &BlobHeader<'_>, blob: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (h, body) = blob.split_at(header.len);
    let pt = if context.is_empty() {
        cipher.open(&header.nonce, h, body)
    } else {
        cipher.open(&header.nonce, &aad(h, context), body)
    };
    pt.ok_or_else(tag_failure)
}

fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(header.len() + context.len());
    a.extend_from_slice(header);
    a.extend_from_slice(context);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cipher(alg: Algorithm) -> SymCipher {
        SymCipher::new(alg, &vec![7u8; alg.key_len()]).unwrap()
    }

    #[test]
    fn header_names_key_and_version() {
        let v = Uuid::new_v4();
        let c = cipher(Algorithm::Aes256Gcm);
        let blob = seal(&c, "key-abc", &v, b"", b"hello");
        let h = parse(&blob).unwrap();
        assert_eq!((h.key_id, h.version_id, h.algorithm), ("key-abc", v, Algorithm::Aes256Gcm));
        assert_eq!(blob.len(), h.len + 5 + TAG_LEN);
        assert_eq!(&open(&c, &h, &blob, b"").unwrap()[..], b"hello");
    }

    #[test]
    fn garbage_is_refused_as_invalid_parameter() {
        for bad in [&b""[..], b"km", b"xx\x01\x01\x03abc", &[b'k', b'm', 9, 1, 1, b'a']] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::InvalidParameter);
        }
    }

    proptest! {
        #[test]
        fn round_trip(pt in proptest::collection::vec(any::<u8>(), 0..2048),
                      ctx in proptest::collection::vec(any::<u8>(), 0..64),
                      sm4 in any::<bool>()) {
            let c = cipher(if sm4 { Algorithm::Sm4Gcm } else { Algorithm::Aes256Gcm });
            let blob = seal(&c, "key-prop", &Uuid::new_v4(), &ctx, &pt);
            let h = parse(&blob).unwrap();
            prop_assert_eq!(&open(&c, &h, &blob, &ctx).unwrap()[..], &pt[..]);
        }

        #[test]
        fn any_flipped_bit_is_rejected(pt in proptest::collection::vec(any::<u8>(), 0..256),
                                       pos in any::<proptest::sample::Index>(),
                                       bit in 0u8..8) {
            let c = cipher(Algorithm::Aes256Gcm);
            let v = Uuid::new_v4();
            let ctx = br#"{"a":"b"}"#;
            let mut blob = seal(&c, "key-prop", &v, ctx, &pt);
            let i = pos.index(blob.len());
            blob[i] ^= 1 << bit;
            // Either the header no longer parses, or it names another key/version (which the
            // engine cannot find), or the tag fails. Never plaintext.
            if let Ok(h) = parse(&blob) {
                if h.key_id == "key-prop" && h.version_id == v && h.algorithm == Algorithm::Aes256Gcm {
                    let opened = open(&c, &h, &blob, ctx);
                    prop_assert!(opened.is_err());
                }
            }
        }

        #[test]
        fn other_context_is_rejected(pt in proptest::collection::vec(any::<u8>(), 0..64),
                                     a in "[a-z]{0,8}", b in "[a-z]{0,8}") {
            prop_assume!(a != b);
            let c = cipher(Algorithm::Sm4Gcm);
            let blob = seal(&c, "key-prop", &Uuid::new_v4(), a.as_bytes(), &pt);
            let h = parse(&blob).unwrap();
            prop_assert!(open(&c, &h, &blob, b.as_bytes()).is_err());
        }
    }
}
