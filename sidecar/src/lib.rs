//! The KMS sidecar: serves a `kms_core::Engine` over the Alibaba Cloud KMS 2016-01-20 RPC wire
//! protocol (both signature schemes). The Rust client kmsctl, kmsfs and blockcrypt use is the
//! `kms-client` crate.
//! The wire decisions are written down in `WIRE.md`.

pub mod actions;
pub mod agent;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod config;
pub mod conn;
pub mod console;
pub mod k8s;
pub mod metrics;
pub mod server;
pub mod start_error;
pub mod throttle;
pub mod tls;
pub mod wire;

/// Entry points for the fuzz targets in `fuzz/` (built with `--cfg fuzzing` only).
#[cfg(fuzzing)]
pub mod fuzzing {
    pub fn percent_decode(s: &str) -> String {
        crate::agent::percent_decode(s)
    }
}
