//! Binding the Kubernetes sockets safely and serving gRPC on them. The sidecar may run as root
//! (kube-apiserver and the CSI driver do), so it never follows a path someone else could have
//! planted: the directory must not be writable by others, and what is at the path already is
//! replaced only if it is a socket (left by an earlier run), never a file or a link.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

use crate::start_error::StartError;

pub fn bind(path: &Path, setting: &str) -> Result<UnixListener, StartError> {
    let bad = |why: String| StartError::Config(format!("{setting} {}: {why}", path.display()));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let meta = std::fs::symlink_metadata(dir).map_err(|e| bad(format!("its directory: {e}")))?;
    if !meta.is_dir() {
        return Err(bad("its directory is not a directory (a link is not followed)".into()));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o002 != 0 && !sticky {
        return Err(bad("its directory is writable by everyone: another user could plant the socket".into()));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A sticky world-writable directory (/tmp) lets only the owner remove the entry:
            // refuse one that is not ours.
            if sticky && m.uid() != effective_uid() {
                return Err(bad("a socket of another user is there".into()));
            }
            std::fs::remove_file(path).map_err(|e| bad(format!("removing the old socket: {e}")))?;
        }
        Ok(_) => return Err(bad("something other than a socket is there; not replacing it".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(e.to_string())),
    }
    let l = UnixListener::bind(path).map_err(|e| StartError::listen(setting, &path.display().to_string(), e))?;
    // Only the sidecar's user (root next to kube-apiserver and the driver) may connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| bad(e.to_string()))?;
    Ok(l)
}

/// The effective user id, read from what this process just created (no libc call needed).
fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

/// Serves a tonic service on `listener` until `shutdown` flips.
pub fn serve<S>(service: S, listener: UnixListener, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()>
where
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        let stream = UnixListenerStream::new(listener);
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) =
            tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(stream, stop).await
        {
            tracing::error!(error = %e, "kubernetes socket stopped");
        }
    })
}
