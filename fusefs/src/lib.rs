//! kmsfs: an encrypting filesystem whose per-volume data key is generated and wrapped by the KMS.
//! The on-disk format is in FORMAT.md; one module per part of it (keys, content, names, dirs,
//! records, xattrs, volume), the volume lifecycle against the KMS (lifecycle, kms), plaintext I/O
//! on an encrypted file (file_io; large writes go through to disk: streaming), fsck, and the FUSE
//! mount (mount). The `kmsfs` binary is a thin CLI over these.

pub mod block_aead;
pub mod content;
pub mod dirs;
pub mod file_io;
pub mod fsck;
pub mod keys;
pub use kms_client::envelope as kms;
pub mod lifecycle;
pub mod links;
pub mod mount;
pub mod names;
pub mod records;
pub mod streaming;
pub mod volume;
pub mod xattrs;
