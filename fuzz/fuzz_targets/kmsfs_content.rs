//! A kmsfs backing file: the 24-byte header, the plaintext size from the stored size, and every
//! stored block opened (holes, short and over-long blocks, forged tags).
#![no_main]
use kms_core::crypto::Algorithm;
use kmsfs::content::{FileCrypto, FileHeader, Layout, HEADER_LEN};
use kmsfs::keys::VolumeKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shift, data)) = data.split_first() else { return };
    let Ok(header) = FileHeader::decode(data) else { return };
    let layout = Layout { block_size: 512 << (shift % 4) };
    if let Ok(plain @ 1..) = layout.plain_size(data.len() as u64) {
        assert_eq!(layout.stored_size(plain), data.len() as u64);
    }
    let keys = VolumeKeys::derive(&[1u8; 32], &[2u8; 16], Algorithm::Aes256Gcm).unwrap();
    let fc = FileCrypto::new(&keys, header, layout);
    let mut out = vec![0u8; layout.block_size];
    for (n, stored) in data[HEADER_LEN.min(data.len())..].chunks(layout.stored_block_len()).enumerate() {
        let _ = fc.open_block(n as u64, stored, &mut out);
    }
});
