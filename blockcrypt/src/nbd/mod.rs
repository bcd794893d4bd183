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

/// An accepted connection, or `None` after a failed accept: logged, and after a pause when the
/// process is out of descriptors (EMFILE/ENFILE would otherwise fail again at once), so the
/// server keeps serving instead of ending.
async fn accepted<T>(r: std::io::Result<T>) -> Option<T> {
    match r {
        Ok(t) => Some(t),
        Err(e) => {
            let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
            tracing::warn!("accept failed: {e}");
            let pause = if out_of_fds { 100 } else { 10 };
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            None
        }
    }
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

/// What one server lets its clients hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// From accept to the end of the option phase (STARTTLS included).
    pub handshake_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 64, handshake_timeout: std::time::Duration::from_secs(10) }
    }
}

pub struct Server {
    exports: Vec<Arc<Export>>,
    limits: Limits,
    connections: Arc<tokio::sync::Semaphore>,
    /// Whether TRIM punches holes in the ciphertext (it reveals which sectors are unused).
    pub discard: bool,
    /// With TLS configured every client must upgrade (STARTTLS) before anything else.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    pub fn new(exports: Vec<Export>, discard: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
        Self::with_limits(exports, discard, tls, Limits::default())
    }

    pub fn with_limits(
        exports: Vec<Export>,
        discard: bool,
        tls: Option<tokio_rustls::TlsAcceptor>,
        limits: Limits,
    ) -> Server {
        Server {
            exports: exports.into_iter().map(Arc::new).collect(),
            connections: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            limits,
            discard,
            tls,
        }
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

    /// Serves one client to the end; protocol errors end only this connection. The option phase
    /// must end within the handshake timeout (a client that connects and says nothing, or stalls
    /// in STARTTLS, is dropped).
    pub async fn handle<S: Stream + 'static>(self: Arc<Self>, stream: S, peer: String) {
        let result = async {
            let negotiated =
                tokio::time::timeout(self.limits.handshake_timeout, handshake::negotiate(Box::new(stream), &self))
                    .await
                    .map_err(|_| ProtoError::Protocol("the handshake did not finish in time".into()))?;
            match negotiated? {
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

    /// Takes a connection slot, or closes the connection (over the cap) and logs it.
    fn admit<S>(&self, stream: S, peer: &str) -> Option<(S, tokio::sync::OwnedSemaphorePermit)> {
        match self.connections.clone().try_acquire_owned() {
            Ok(p) => Some((stream, p)),
            Err(_) => {
                tracing::warn!(%peer, max = self.limits.max_connections, "connection refused: at the connection limit");
                None
            }
        }
    }

    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) -> std::io::Result<()> {
        loop {
            let Some(stream) = accepted(listener.accept().await.map(|(s, _)| s)).await else { continue };
            if let Some((stream, slot)) = self.admit(stream, "unix") {
                let server = self.clone();
                tokio::spawn(async move {
                    server.handle(stream, "unix".into()).await;
                    drop(slot);
                });
            }
        }
    }

    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let Some((stream, peer)) = accepted(listener.accept().await).await else { continue };
            let _ = stream.set_nodelay(true);
            let peer = peer.to_string();
            if let Some((stream, slot)) = self.admit(stream, &peer) {
                let server = self.clone();
                tokio::spawn(async move {
                    server.handle(stream, peer).await;
                    drop(slot);
                });
            }
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
