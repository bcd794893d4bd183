//! blockcrypt: encrypted virtual disks whose per-volume data key is generated and wrapped by the
//! KMS (like ECS cloud-disk encryption), stored as LUKS1-compatible images and served over NBD.
//! The on-disk format is in FORMAT.md, the NBD subset in nbd/NBD.md.

pub mod afsplit;
pub mod crc32c;
pub mod luks1;
pub mod luksmeta;
pub mod xts;

pub use kms_client::envelope as kms;
pub mod disk;
pub mod image_lock;
pub mod lifecycle;
pub mod nbd;
pub mod record;
pub mod snapshot_socket;
pub mod sparse;
pub mod volume;
