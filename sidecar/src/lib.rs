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

    /// The files a SecretProviderClass's `objects` would become.
    pub fn csi_objects(objects: &str, translate: Option<&str>) -> Result<Vec<String>, String> {
        let parsed = crate::k8s::objects::parse(objects, translate)?;
        Ok(parsed
            .into_iter()
            .flat_map(|o| std::iter::once(o.file).chain(o.parts.into_iter().map(|(_, f)| f)))
            .collect())
    }

    pub fn jmes_select(value: &str, path: &str) -> Result<Vec<u8>, String> {
        crate::k8s::objects::select(value, path)
    }
}
