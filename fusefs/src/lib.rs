//! kmsfs: an encrypting filesystem whose per-volume data key is generated and wrapped by the KMS.
//! So far: the on-disk format (FORMAT.md: key hierarchy, file contents, file names, volume
//! config) and the volume lifecycle against the KMS (init, unlock, rewrap; through the sidecar or
//! an embedded engine). The FUSE mount and the CLI come next (issue 8).

pub mod content;
pub mod keys;
pub mod kms;
pub mod lifecycle;
pub mod names;
pub mod volume;
