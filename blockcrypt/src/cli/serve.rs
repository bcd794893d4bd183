//! `blockcrypt serve`: unlock every export through the KMS first (fail fast, before listening),
//! lock each volume against a second server, then serve until SIGTERM/SIGINT, syncing at exit.

use std::path::PathBuf;
use std::sync::Arc;

use blockcrypt::kms::KeyService;
use blockcrypt::nbd::{Export, Limits, Server};
use blockcrypt::volume::{self, Location};
use blockcrypt::{image_lock, snapshot_socket};
use rustix::fs::FlockOperation;

use super::commands::fail;
use super::{Failure, EXIT_IN_USE, EXIT_OTHER};

/// `[NAME=]PATH[,header=HEADER]`.
fn parse_export(spec: &str) -> Result<(String, Location), Failure> {
    let (name, rest) = match spec.split_once('=') {
        Some((n, r)) if !n.contains(',') && !n.contains('/') => (Some(n.to_string()), r),
        _ => (None, spec),
    };
    let mut parts = rest.split(',');
    let path = PathBuf::from(parts.next().unwrap_or_default());
    let mut header = None;
    for p in parts {
        match p.split_once('=') {
            Some(("header", h)) => header = Some(PathBuf::from(h)),
            _ => return Err(Failure::new(2, format!("export {spec:?}: unknown part {p:?} (expected header=PATH)"))),
        }
    }
    if path.as_os_str().is_empty() {
        return Err(Failure::new(2, format!("export {spec:?}: no path")));
    }
    let name = name.unwrap_or_else(|| path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
    Ok((name, Location::new(path, header)))
}

pub fn serve(kms: &dyn KeyService, specs: &[String], opts: super::ServeArgs) -> Result<(), Failure> {
    let super::ServeArgs {
        socket,
        tcp,
        read_only,
        discard,
        tls_cert,
        tls_key,
        max_connections,
        handshake_timeout_secs,
    } = opts;
    let limits = Limits {
        max_connections: max_connections.max(1),
        handshake_timeout: std::time::Duration::from_secs(handshake_timeout_secs.max(1)),
    };
    let tls = match tls_cert.zip(tls_key) {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let mut exports = Vec::new();
    for spec in specs {
        let (name, loc) = parse_export(spec)?;
        if exports.iter().any(|e: &Export| e.name == name) {
            return Err(Failure::new(2, format!("two exports are named {name:?}")));
        }
        let v = volume::open(&loc, kms, read_only).map_err(fail)?;
        rustix::fs::flock(v.disk.file(), FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            Failure::new(EXIT_IN_USE, format!("{}: the volume is being served already", loc.data.display()))
        })?;
        // And the locks qemu looks for, so neither opens a disk the other is using.
        let access = if read_only { image_lock::Access::ReadOnly } else { image_lock::Access::ReadWrite };
        image_lock::lock(v.disk.file(), access)
            .map_err(|e| Failure::new(EXIT_IN_USE, format!("{}: {e}", loc.data.display())))?;
        // Snapshots of the disk while it is served, on filesystems that cannot clone a file.
        if let Err(e) = snapshot_socket::listen(v.disk.clone()) {
            tracing::warn!(export = %name, error = %e, "online snapshots without reflink are unavailable for this disk");
        }
        tracing::info!(export = %name, size = v.disk.size(), cipher = v.area.record.cipher.spec(), key = %v.area.record.key_id, "unlocked");
        let description = format!("{} ({})", v.area.record.disk_id, v.area.record.cipher.spec());
        exports.push(Export { name, description, disk: v.disk });
    }
    let server = Arc::new(Server::with_limits(exports, discard, tls, limits));
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failure::new(EXIT_OTHER, e))?;
    let result = rt.block_on(async {
        let listening = match (&socket, &tcp) {
            (Some(path), _) => {
                remove_stale_socket(path)?;
                let l = tokio::net::UnixListener::bind(path)
                    .map_err(|e| Failure::new(EXIT_OTHER, format!("{}: {e}", path.display())))?;
                tracing::info!(socket = %path.display(), "serving");
                tokio::spawn(server.clone().serve_unix(l))
            }
            (None, Some(addr)) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Failure::new(EXIT_OTHER, format!("{addr}: {e}")))?;
                tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
                tokio::spawn(server.clone().serve_tcp(l))
            }
            (None, None) => return Err(Failure::new(2, "give --socket or --tcp")),
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::new(EXIT_OTHER, e))?;
        tokio::select! {
            r = listening => match r {
                Ok(Err(e)) => Err(Failure::new(EXIT_OTHER, format!("accept: {e}"))),
                _ => Ok(()),
            },
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    server.flush_all();
    if let Some(path) = &socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    // Connections still open are dropped with the runtime; their unacknowledged writes were never promised.
    rt.shutdown_background();
    result
}

/// X.509 TLS from a PEM certificate chain and key (the sidecar's loader; NBD negotiates no ALPN).
fn tls_acceptor(cert: PathBuf, key: PathBuf) -> Result<tokio_rustls::TlsAcceptor, Failure> {
    let files = kms_client::tls::TlsFiles { cert, key, ca: None };
    let mut cfg =
        Arc::unwrap_or_clone(kms_client::tls::server_config(&files).map_err(|e| Failure::new(EXIT_OTHER, e))?);
    cfg.alpn_protocols.clear();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// A socket file nobody listens on (a server killed without cleanup) is replaced; a live one is not.
fn remove_stale_socket(path: &std::path::Path) -> Result<(), Failure> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(Failure::new(EXIT_OTHER, format!("{}: exists and is not a socket", path.display())))
        }
        Ok(_) => {}
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Failure::new(EXIT_IN_USE, format!("{}: another server is listening there", path.display())));
    }
    std::fs::remove_file(path).map_err(|e| Failure::new(EXIT_OTHER, format!("{}: {e}", path.display())))
}
