//! kmsfs: an encrypting filesystem whose per-volume data key is generated and wrapped by the KMS.
//! This crate holds the on-disk format (FORMAT.md) so far: the key hierarchy, file contents,
//! file names and the volume config. The FUSE mount and the CLI come next (issue 8).

pub mod content;
pub mod keys;
pub mod names;
pub mod volume;
