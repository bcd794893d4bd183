//! `kms-core`: a local Key Management Service engine with the data model of Alibaba Cloud KMS
//! (API 2016-01-20).
//!
//! An [`Engine`] owns one SQLite store. Customer master keys (`Aliyun_AES_256`, `Aliyun_SM4`)
//! have versions, rotate automatically, carry aliases and go through the documented key states;
//! Encrypt/Decrypt/GenerateDataKey bind an EncryptionContext as AAD and produce self-describing
//! ciphertext blobs (`FORMAT.md`). Key material is sealed under a root key before it is stored.
//! No HTTP lives here: the sidecar crate maps the wire protocol onto these calls.

pub mod api;
pub mod clock;
pub mod config;
pub mod context;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod ids;
pub mod interval;
pub mod model;
pub mod policy;
pub mod store;
#[cfg(feature = "test-store")]
pub mod test_store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{EngineConfig, Limits};
pub use engine::{Caller, Engine, EngineOptions, MaintenanceReport, OpenError, Principal};
pub use error::{ErrorCode, KmsError, Result};
pub use store::StoreLocation;
