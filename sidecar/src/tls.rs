//! HTTPS: a supplied certificate and key, or a local CA and server certificate generated on first
//! start (saved in `<data-dir>/tls/`, the CA as `ca.pem` for clients to trust).

use std::fs;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::config::write_private;

pub use kms_client::tls::{server_config, TlsFiles};

/// The generated set in `dir`, created if missing. The server certificate names `localhost`,
/// `127.0.0.1` and `::1` plus `extra_names`.
pub fn ensure_generated(dir: &Path, extra_names: &[String]) -> Result<TlsFiles, String> {
    let files = TlsFiles { cert: dir.join("server.pem"), key: dir.join("server.key"), ca: Some(dir.join("ca.pem")) };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let e = |e: rcgen::Error| format!("certificate generation: {e}");
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "kms-sidecar local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    names.extend(extra_names.iter().cloned());
    let srv_key = KeyPair::generate().map_err(e)?;
    let mut srv = CertificateParams::new(names).map_err(e)?;
    srv.distinguished_name.push(DnType::CommonName, "localhost");
    let srv_cert = srv.signed_by(&srv_key, &ca_cert, &ca_key).map_err(e)?;
    fs::create_dir_all(dir).map_err(|x| format!("{}: {x}", dir.display()))?;
    write_private(files.ca.as_ref().unwrap(), ca_cert.pem().as_bytes())?;
    write_private(&files.key, srv_key.serialize_pem().as_bytes())?;
    write_private(&files.cert, srv_cert.pem().as_bytes())?;
    // The CA private key is not kept: nothing else is ever signed with it.
    tracing::info!(ca = %files.ca.as_ref().unwrap().display(), "generated a local CA and server certificate");
    Ok(files)
}
