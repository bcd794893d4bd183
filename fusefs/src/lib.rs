//! kmsfs: an encrypting filesystem whose per-volume data key is generated and wrapped by the KMS.
//! So far: the on-disk format (FORMAT.md: key hierarchy, file contents, file names, volume
//! config), the volume lifecycle against the KMS (init, unlock, rewrap; through the sidecar or
//! an embedded engine) and plaintext I/O at any offset of an encrypted file (read-modify-write of
//! partial blocks, sparse extension, truncation), directories, and fsck. The FUSE mount and the
//! CLI come next (issue 8).

pub mod content;
pub mod dirs;
pub mod file_io;
pub mod fsck;
pub mod keys;
pub mod kms;
pub mod lifecycle;
pub mod names;
pub mod volume;
