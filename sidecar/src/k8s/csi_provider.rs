//! The Secrets Store CSI driver's provider: `Mount` returns the files of a pod's secrets volume.
//!
//! The pod's namespace and service account (attributes the driver sets) choose the principal it
//! reads as (`[[kubernetes.csi.workloads]]`); a pod no entry matches gets nothing. Each object is
//! a GetSecretValue as that principal – the engine's authorisation, the audit trail (user agent
//! `kubernetes-csi; pod=<namespace>/<name>`). A secret that cannot be read (deleted, its CMK
//! disabled, not allowed) fails the whole mount with the API's error: never an empty or partial
//! volume. Each object is reported with the version read, so on the driver's rotation
//! reconcile a moved stage shows up as a new version (and new file contents) and an unmoved one
//! as the same.

use std::sync::Arc;

use kms_core::api::{decode_base64, Action};
use kms_core::{Caller, KmsError, Principal};
use tonic::{Request, Response, Status};

use super::objects::{self, SecretObject};
use super::proto::csi::csi_driver_provider_server::CsiDriverProvider;
use super::proto::csi::*;
use super::CsiConfig;
use crate::server::{call_internal, AppState, Internal};
use crate::wire::params::Params;

/// The driver syncs volumes into Kubernetes Secrets only under 1 MiB; over 4 MiB its gRPC
/// messages fail. A volume larger than this is refused with a clear error instead.
const MAX_VOLUME_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

const NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
const POD: &str = "csi.storage.k8s.io/pod.name";

pub struct CsiProvider {
    app: Arc<AppState>,
    workloads: Vec<(String, String, Principal)>,
}

impl CsiProvider {
    pub fn new(app: Arc<AppState>, cfg: &CsiConfig) -> Result<CsiProvider, String> {
        let mut workloads = Vec::new();
        for w in &cfg.workloads {
            let p =
                crate::config::parse_principal(&w.principal).map_err(|e| format!("kubernetes.csi.workloads: {e}"))?;
            if matches!(p, Principal::Owner) {
                return Err(format!(
                    "kubernetes.csi.workloads: pods of {}/{} would read as the owner – every secret; name a user whose policies allow theirs",
                    w.namespace, w.service_account
                ));
            }
            workloads.push((w.namespace.clone(), w.service_account.clone(), p));
        }
        Ok(CsiProvider { app, workloads })
    }

    /// The principal for a pod: an exact service-account entry first, then the namespace's `*`.
    fn principal_for(&self, namespace: &str, service_account: &str) -> Option<&Principal> {
        let exact = self.workloads.iter().find(|(n, s, _)| n == namespace && s == service_account);
        exact.or_else(|| self.workloads.iter().find(|(n, s, _)| n == namespace && s == "*")).map(|(_, _, p)| p)
    }
}

fn status_of(object: &str, e: &KmsError) -> Status {
    let msg = format!("{object}: {} (HTTP {}): {}", e.code().code(), e.http_status(), e.message());
    match e.http_status() {
        400 => Status::invalid_argument(msg),
        403 => Status::permission_denied(msg),
        404 => Status::not_found(msg),
        429 => Status::resource_exhausted(msg),
        503 => Status::unavailable(msg),
        _ => Status::failed_precondition(msg),
    }
}

/// The files' mode from the request's `permission` (a decimal number in JSON; 420 = 0644).
fn mode(permission: &str) -> Result<i32, Status> {
    if permission.trim().is_empty() {
        return Ok(0o644);
    }
    let m: i64 = serde_json::from_str(permission.trim())
        .map_err(|_| Status::invalid_argument(format!("permission {permission:?} is not a number")))?;
    if !(0..=0o777).contains(&m) {
        return Err(Status::invalid_argument(format!("permission {m} is not a file mode (0 to 511)")));
    }
    Ok(m as i32)
}

#[tonic::async_trait]
impl CsiDriverProvider for CsiProvider {
    async fn version(&self, _: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "kms-sidecar".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }

    async fn mount(&self, req: Request<MountRequest>) -> Result<Response<MountResponse>, Status> {
        let r = req.into_inner();
        let attrs: std::collections::HashMap<String, String> = serde_json::from_str(&r.attributes)
            .map_err(|e| Status::invalid_argument(format!("attributes are not a JSON object of strings: {e}")))?;
        let get = |k: &str| attrs.get(k).map(String::as_str).unwrap_or("");
        let (namespace, account, pod) = (get(NAMESPACE), get(SERVICE_ACCOUNT), get(POD));
        let principal = self.principal_for(namespace, account).cloned().ok_or_else(|| {
            Status::permission_denied(format!(
                "no [[kubernetes.csi.workloads]] entry for service account {account:?} in namespace {namespace:?}"
            ))
        })?;
        let mode = mode(&r.permission)?;
        let wanted = objects::parse(get("objects"), attrs.get("pathTranslation").map(String::as_str))
            .map_err(Status::invalid_argument)?;
        let mut files = Vec::new();
        let mut versions = Vec::new();
        let mut total = 0usize;
        for o in &wanted {
            let (version, value) = self.read(&principal, namespace, pod, o).await?;
            let mut add = |path: &str, contents: Vec<u8>| -> Result<(), Status> {
                total += contents.len();
                if total > MAX_VOLUME_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "the volume's files exceed {MAX_VOLUME_BYTES} bytes"
                    )));
                }
                versions.push(ObjectVersion { id: path.to_string(), version: version.clone() });
                files.push(File { path: path.to_string(), mode, contents });
                Ok(())
            };
            for (path, file) in &o.parts {
                let text = std::str::from_utf8(&value).map_err(|_| {
                    Status::failed_precondition(format!("{}: jmesPath needs a text secret", o.secret_name))
                })?;
                let part = objects::select(text, path)
                    .map_err(|e| Status::failed_precondition(format!("{}: {e}", o.secret_name)))?;
                add(file, part)?;
            }
            add(&o.file, value.to_vec())?;
        }
        let previous: std::collections::HashMap<&str, &str> =
            r.current_object_version.iter().map(|v| (v.id.as_str(), v.version.as_str())).collect();
        let changed = versions.iter().filter(|v| previous.get(v.id.as_str()) != Some(&v.version.as_str())).count();
        tracing::info!(pod = %format!("{namespace}/{pod}"), objects = versions.len(), changed, "csi mount");
        Ok(Response::new(MountResponse { object_version: versions, error: None, files }))
    }
}

impl CsiProvider {
    /// One secret's version id and value (binary secrets decoded), as `principal`.
    async fn read(
        &self,
        principal: &Principal,
        namespace: &str,
        pod: &str,
        o: &SecretObject,
    ) -> Result<(String, zeroize::Zeroizing<Vec<u8>>), Status> {
        let mut params = vec![("SecretName".to_string(), o.secret_name.clone())];
        if let Some(v) = &o.version_id {
            params.push(("VersionId".into(), v.clone()));
        }
        if let Some(s) = &o.version_stage {
            params.push(("VersionStage".into(), s.clone()));
        }
        let who = Internal {
            caller: Caller::new(principal.clone()),
            access_key_id: "kubernetes-csi",
            source_ip: "unix".into(),
            user_agent: format!("kubernetes-csi; pod={namespace}/{pod}"),
        };
        let v = call_internal(&self.app, who, Action::GetSecretValue, Params::from_pairs(params))
            .await
            .map_err(|e| status_of(&o.secret_name, &e))?;
        let data = v["SecretData"].as_str().unwrap_or("");
        let value = if v["SecretDataType"] == "binary" {
            decode_base64("SecretData", data).map_err(|e| status_of(&o.secret_name, &e))?
        } else {
            data.as_bytes().to_vec()
        };
        Ok((v["VersionId"].as_str().unwrap_or("").to_string(), zeroize::Zeroizing::new(value)))
    }
}
