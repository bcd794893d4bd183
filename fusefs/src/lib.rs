//! kmsfs: an encrypting filesystem whose per-volume data key is generated and wrapped by the KMS.
//! This crate holds the on-disk format (FORMAT.md): the key hierarchy and file contents so far.

pub mod content;
pub mod keys;
pub mod names;
