//! How a PostgreSQL connection is secured. `sslmode=require` in the store URL means TLS with the
//! server's certificate verified – its chain against `sslrootcert=<file>` (libpq's name; the
//! system's CAs when absent) and its name or IP against the URL's host – which is libpq's
//! `verify-full`: a KMS does not send sealed key material and nonces to whoever answers. Without
//! it the connection is plain (`disable`; `prefer` too: it would otherwise fail against servers
//! with self-signed certificates users never asked to trust), so keep such a database on a
//! trusted network.

use openssl::ssl::{SslConnector, SslMethod};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;

use super::StoreError;

/// The URL without the parameters this module takes out of it, and the CA file it named.
pub(crate) fn split_url(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let (mut kept, mut ca) = (Vec::new(), None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => ca = Some(percent_decode(v)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (url, ca)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The TLS connector for `mode`: `None` for a plain connection.
pub(crate) fn connector(mode: SslMode, ca_file: Option<&str>) -> Result<Option<MakeTlsConnector>, StoreError> {
    if mode != SslMode::Require {
        return Ok(None);
    }
    let fail = |e: openssl::error::ErrorStack| StoreError(format!("TLS to PostgreSQL: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(fail)?;
    match ca_file {
        Some(f) => b.set_ca_file(f).map_err(|e| StoreError(format!("TLS to PostgreSQL: sslrootcert {f}: {e}")))?,
        None => b.set_default_verify_paths().map_err(fail)?,
    }
    Ok(Some(MakeTlsConnector::new(b.build())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_file_is_taken_out_of_the_url() {
        assert_eq!(
            split_url("postgres://u@h/db?sslmode=require&sslrootcert=%2Fetc%2Fca.pem&application_name=x"),
            ("postgres://u@h/db?sslmode=require&application_name=x".into(), Some("/etc/ca.pem".into()))
        );
        assert_eq!(
            split_url("postgres://u@h/db?sslrootcert=/c.pem"),
            ("postgres://u@h/db".into(), Some("/c.pem".into()))
        );
        assert_eq!(split_url("postgres://u@h/db"), ("postgres://u@h/db".into(), None));
    }
}
