//! The fixed-newstyle handshake: options until the client picks an export (GO or EXPORT_NAME),
//! aborts or breaks the protocol. Malformed options get an error reply and the loop goes on;
//! only a wrong magic, an oversized option or a closed socket end the connection.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proto::*;
use super::{BoxStream, Export, ProtoError, Server};

/// What the client negotiated before transmission.
pub struct Session {
    pub export: Arc<Export>,
    pub structured: bool,
    pub base_allocation: bool,
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, opt: u32, kind: u32, data: &[u8]) -> Result<(), ProtoError> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    w.write_all(&b).await?;
    Ok(())
}

async fn error<W: AsyncWrite + Unpin>(w: &mut W, opt: u32, kind: u32, msg: &str) -> Result<(), ProtoError> {
    tracing::debug!(opt, kind, msg, "option refused");
    reply(w, opt, kind, msg.as_bytes()).await
}

/// A cursor over an option's payload that reports truncation instead of panicking.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Runs the option phase; the stream comes back (upgraded to TLS if the client asked for it) with
/// the session, or with `None` when the client aborted.
pub async fn negotiate(mut stream: BoxStream, server: &Server) -> Result<(BoxStream, Option<Session>), ProtoError> {
    let session = options(&mut stream, server).await?;
    Ok((stream, session))
}

async fn options(stream: &mut BoxStream, server: &Server) -> Result<Option<Session>, ProtoError> {
    let s = stream;
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello).await?;
    let client_flags = s.read_u32().await?;
    if client_flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
        return Err(ProtoError::Protocol(format!("unknown client flags {client_flags:#x}")));
    }
    let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;
    let mut structured = false;
    let mut base_allocation = false;
    let mut tls_up = false;
    loop {
        if s.read_u64().await? != IHAVEOPT {
            return Err(ProtoError::Protocol("bad option magic".into()));
        }
        let opt = s.read_u32().await?;
        let len = s.read_u32().await?;
        if len > MAX_OPTION {
            // Too long to skip safely; the client is broken or hostile.
            let _ = error(s, opt, REP_ERR_TOO_BIG, "option too long").await;
            return Err(ProtoError::Protocol(format!("option {opt} of {len} bytes")));
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await?;
        // FORCEDTLS: with TLS configured, nothing but STARTTLS and ABORT before the upgrade.
        if server.tls.is_some() && !tls_up && !matches!(opt, OPT_STARTTLS | OPT_ABORT) {
            if opt == OPT_EXPORT_NAME {
                return Err(ProtoError::Protocol("EXPORT_NAME before STARTTLS on a TLS-only server".into()));
            }
            error(s, opt, REP_ERR_TLS_REQD, "this server requires TLS: send STARTTLS first").await?;
            continue;
        }
        match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data);
                let Some(export) = server.export(&name) else {
                    // This option has no error reply: the only answer is to hang up.
                    return Err(ProtoError::Protocol(format!("no export named {name:?}")));
                };
                let mut b = Vec::with_capacity(10 + 124);
                b.extend_from_slice(&export.disk.size().to_be_bytes());
                b.extend_from_slice(&server.transmission_flags(&export).to_be_bytes());
                if !no_zeroes {
                    b.resize(b.len() + 124, 0);
                }
                s.write_all(&b).await?;
                return Ok(Some(Session { export, structured, base_allocation }));
            }
            OPT_ABORT => {
                let _ = reply(s, opt, REP_ACK, &[]).await;
                return Ok(None);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    error(s, opt, REP_ERR_INVALID, "LIST takes no data").await?;
                    continue;
                }
                for e in server.exports() {
                    let mut b = (e.name.len() as u32).to_be_bytes().to_vec();
                    b.extend_from_slice(e.name.as_bytes());
                    reply(s, opt, REP_SERVER, &b).await?;
                }
                reply(s, opt, REP_ACK, &[]).await?;
            }
            OPT_INFO | OPT_GO => {
                let mut c = Cursor(&data);
                let parsed = (|| {
                    let name = c.string()?;
                    let n = c.u16()?;
                    let reqs: Option<Vec<u16>> = (0..n).map(|_| c.u16()).collect();
                    c.0.is_empty().then_some((name, reqs?))
                })();
                let Some((name, requests)) = parsed else {
                    error(s, opt, REP_ERR_INVALID, "malformed INFO/GO request").await?;
                    continue;
                };
                let Some(export) = server.export(&name) else {
                    error(s, opt, REP_ERR_UNKNOWN, &format!("no export named {name:?}")).await?;
                    continue;
                };
                let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                info.extend_from_slice(&export.disk.size().to_be_bytes());
                info.extend_from_slice(&server.transmission_flags(&export).to_be_bytes());
                reply(s, opt, REP_INFO, &info).await?;
                // Always sent: our minimum block size is not the protocol's default of 1.
                let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                for v in [MIN_BLOCK, PREFERRED_BLOCK, MAX_PAYLOAD] {
                    bs.extend_from_slice(&v.to_be_bytes());
                }
                reply(s, opt, REP_INFO, &bs).await?;
                if requests.contains(&INFO_NAME) {
                    let mut b = INFO_NAME.to_be_bytes().to_vec();
                    b.extend_from_slice(export.name.as_bytes());
                    reply(s, opt, REP_INFO, &b).await?;
                }
                if requests.contains(&INFO_DESCRIPTION) {
                    let mut b = INFO_DESCRIPTION.to_be_bytes().to_vec();
                    b.extend_from_slice(export.description.as_bytes());
                    reply(s, opt, REP_INFO, &b).await?;
                }
                reply(s, opt, REP_ACK, &[]).await?;
                if opt == OPT_GO {
                    return Ok(Some(Session { export, structured, base_allocation }));
                }
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    error(s, opt, REP_ERR_INVALID, "STRUCTURED_REPLY takes no data").await?;
                    continue;
                }
                structured = true;
                reply(s, opt, REP_ACK, &[]).await?;
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = opt == OPT_SET_META_CONTEXT;
                let mut c = Cursor(&data);
                let parsed = (|| {
                    let name = c.string()?;
                    let n = c.u32()?;
                    let qs: Option<Vec<String>> = (0..n).map(|_| c.string()).collect();
                    c.0.is_empty().then_some((name, qs?))
                })();
                let Some((name, queries)) = parsed else {
                    error(s, opt, REP_ERR_INVALID, "malformed meta context request").await?;
                    continue;
                };
                if set && !structured {
                    error(s, opt, REP_ERR_INVALID, "SET_META_CONTEXT needs structured replies").await?;
                    continue;
                }
                if server.export(&name).is_none() {
                    error(s, opt, REP_ERR_UNKNOWN, &format!("no export named {name:?}")).await?;
                    continue;
                }
                // LIST with no queries, or the namespace "base:", lists everything we have.
                let wanted = queries.iter().any(|q| q == BASE_ALLOCATION || (!set && q == "base:"))
                    || (!set && queries.is_empty());
                if set {
                    base_allocation = wanted;
                }
                if wanted {
                    let mut b = BASE_ALLOCATION_ID.to_be_bytes().to_vec();
                    b.extend_from_slice(BASE_ALLOCATION.as_bytes());
                    reply(s, opt, REP_META_CONTEXT, &b).await?;
                }
                reply(s, opt, REP_ACK, &[]).await?;
            }
            OPT_STARTTLS => {
                let Some(acceptor) = server.tls.clone() else {
                    error(s, opt, REP_ERR_UNSUP, "TLS is not configured on this server").await?;
                    continue;
                };
                if tls_up || !data.is_empty() {
                    error(s, opt, REP_ERR_INVALID, "STARTTLS twice, or with data").await?;
                    continue;
                }
                reply(s, opt, REP_ACK, &[]).await?;
                // The option haggling starts over inside TLS; what was negotiated before is dropped.
                let plain = std::mem::replace(s, Box::new(tokio::io::empty()));
                *s = Box::new(acceptor.accept(plain).await?);
                tls_up = true;
                structured = false;
                base_allocation = false;
            }
            _ => error(s, opt, REP_ERR_UNSUP, "option not supported").await?,
        }
    }
}
