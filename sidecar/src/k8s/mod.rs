//! The two gRPC APIs Kubernetes speaks to a node-local KMS over Unix sockets (K8S.md):
//! the KMS provider plugin v2 that kube-apiserver encrypts Secrets' data keys with
//! (`kms_plugin`), and the Secrets Store CSI driver's provider that mounts secrets into pods
//! (`csi_provider`). Both run every action through the same path as a signed API request
//! (`server::call_internal`): the engine's authorisation as a configured principal, the throttle,
//! the audit trail.

pub mod csi_provider;
pub mod kms_plugin;
pub mod objects;
mod socket;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::server::AppState;
use crate::start_error::StartError;

/// The generated gRPC code (`proto/*.proto`).
pub mod proto {
    /// `k8s.io/kms/apis/v2`.
    pub mod kms_v2 {
        tonic::include_proto!("v2");
    }
    /// `sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1`.
    pub mod csi {
        tonic::include_proto!("v1alpha1");
    }
}

/// `[kubernetes]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    pub kms: Option<KmsPluginConfig>,
    pub csi: Option<CsiConfig>,
}

/// `[kubernetes.kms]`: the KMS v2 plugin socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsPluginConfig {
    /// The socket kube-apiserver's EncryptionConfiguration names (`unix:///…`).
    pub socket: PathBuf,
    /// The CMK (id, alias or ARN); default the service key `alias/acs/ack`, made on first use.
    #[serde(default = "default_ack_key")]
    pub key_id: String,
    /// Whom the plugin acts as; default `service:ack`.
    #[serde(default = "default_ack_principal")]
    pub principal: String,
}

fn default_ack_key() -> String {
    "alias/acs/ack".into()
}

fn default_ack_principal() -> String {
    "service:ack".into()
}

/// `[kubernetes.csi]`: the Secrets Store CSI provider socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsiConfig {
    /// Where the driver looks for providers: `<providers dir>/<provider name>.sock`.
    pub socket: PathBuf,
    /// Which principal reads for which pods; a pod no entry matches gets nothing.
    #[serde(default)]
    pub workloads: Vec<Workload>,
}

/// Pods of `namespace` running as `service_account` (`*`: any) read as `principal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
    pub principal: String,
}

/// A gRPC channel to one of these sockets – what kube-apiserver or the CSI driver opens; the
/// tests and `bench/k8s.sh` use it. (The URI is a placeholder: gRPC needs one, the socket
/// decides.)
pub async fn connect(path: &std::path::Path) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://[::]:0")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
}

/// Starts the configured sockets; each serves until `shutdown` flips.
pub fn start(
    cfg: &KubernetesConfig,
    state: Arc<AppState>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut tasks = Vec::new();
    if let Some(kms) = &cfg.kms {
        let service = kms_plugin::KmsPlugin::new(state.clone(), kms).map_err(StartError::Config)?;
        let listener = socket::bind(&kms.socket, "kubernetes.kms.socket")?;
        let server = proto::kms_v2::key_management_service_server::KeyManagementServiceServer::new(service);
        tasks.push(socket::serve(server, listener, shutdown.clone()));
    }
    if let Some(csi) = &cfg.csi {
        let service = csi_provider::CsiProvider::new(state, csi).map_err(StartError::Config)?;
        let listener = socket::bind(&csi.socket, "kubernetes.csi.socket")?;
        let server = proto::csi::csi_driver_provider_server::CsiDriverProviderServer::new(service);
        tasks.push(socket::serve(server, listener, shutdown));
    }
    Ok(tasks)
}
