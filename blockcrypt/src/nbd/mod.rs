//! An NBD server for unlocked volumes (the protocol subset is in NBD.md): fixed-newstyle
//! handshake, structured replies, `base:allocation`, multi-connection, over a Unix socket or TCP.

pub mod handshake;
pub mod proto;
pub mod transmission;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::disk::Disk;
use proto::*;

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// A disk offered under a name.
pub struct Export {
    pub name: String,
    pub description: String,
    pub disk: Arc<Disk>,
}

/// Any byte stream a client talks over: Unix, TCP, or either inside TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

pub struct Server {
    exports: Vec<Arc<Export>>,
    /// Whether TRIM punches holes in the ciphertext (it reveals which sectors are unused).
    pub discard: bool,
    /// With TLS configured every client must upgrade (STARTTLS) before anything else.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    pub fn new(exports: Vec<Export>, discard: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        Server { exports: exports.into_iter().map(Arc::new).collect(), discard, tls }
    }

    pub fn exports(&self) -> &[Arc<Export>] {
        &self.exports
    }

    /// The export called `name`; the empty name is the default export, the first one.
    pub fn export(&self, name: &str) -> Option<Arc<Export>> {
        if name.is_empty() {
            return self.exports.first().cloned();
        }
        self.exports.iter().find(|e| e.name == name).cloned()
    }

    pub fn transmission_flags(&self, e: &Export) -> u16 {
        // Multi-conn is honest: every connection shares the export's one descriptor, so a FLUSH
        // on any of them syncs every write that any of them has had acknowledged.
        let mut f = TF_HAS_FLAGS
            | TF_SEND_FLUSH
            | TF_SEND_FUA
            | TF_SEND_WRITE_ZEROES
            | TF_SEND_FAST_ZERO
            | TF_SEND_DF
            | TF_CAN_MULTI_CONN;
        if e.disk.read_only() {
            f |= TF_READ_ONLY;
        }
        if self.discard {
            f |= TF_SEND_TRIM;
        }
        f
    }

    /// Serves one client to the end; protocol errors end only this connection.
    pub async fn handle<S: Stream + 'static>(self: Arc<Self>, stream: S, peer: String) {
        let result = async {
            match handshake::negotiate(Box::new(stream), &self).await? {
                (stream, Some(session)) => {
                    tracing::info!(%peer, export = %session.export.name, "client connected");
                    transmission::transmit(stream, session, self.clone()).await
                }
                (_, None) => Ok(()),
            }
        }
        .await;
        match result {
            Ok(()) => tracing::debug!(%peer, "client disconnected"),
            Err(ProtoError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!(%peer, "client hung up")
            }
            Err(e) => tracing::warn!(%peer, "connection closed: {e}"),
        }
    }

    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(self.clone().handle(stream, "unix".into()));
        }
    }

    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(self.clone().handle(stream, peer.to_string()));
        }
    }

    /// Syncs every export (at shutdown: whatever was acknowledged without FUA or FLUSH too).
    pub fn flush_all(&self) {
        for e in &self.exports {
            if let Err(err) = e.disk.flush() {
                tracing::error!(export = %e.name, "flush at shutdown failed: {err}");
            }
        }
    }
}
