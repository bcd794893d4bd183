//! TLS material both servers load – the sidecar's HTTPS listener and blockcrypt's NBD-over-TLS
//! listener – kept here, in the crate both reach, so neither server depends on the other.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Paths of the material in use.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Only for a generated certificate.
    pub ca: Option<PathBuf>,
}

/// A server configuration for the certificate chain and key in `files` (HTTP/1.1 over ALPN).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(
        &mut fs::read(&files.cert).map_err(|e| format!("{}: {e}", files.cert.display()))?.as_slice(),
    )
    .collect::<Result<_, _>>()
    .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(
        &mut fs::read(&files.key).map_err(|e| format!("{}: {e}", files.key.display()))?.as_slice(),
    )
    .map_err(|e| format!("{}: {e}", files.key.display()))?
    .ok_or_else(|| format!("{}: no private key", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
