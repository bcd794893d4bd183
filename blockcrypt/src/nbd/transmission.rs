//! The transmission phase: requests are read in order and run concurrently on the blocking pool
//! (disk I/O and XTS); each reply goes out when its work is done, so replies may overtake each
//! other as the protocol allows. A byte budget bounds the requests in flight per connection.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::handshake::Session;
use super::proto::*;
use super::{Export, ProtoError, Server};

/// Payload bytes (KiB) a connection may have in flight before it stops reading requests: room
/// for nbdcopy's 64 × 256 KiB or two 32 MiB requests, and a bound on what a client can make us hold.
const BUDGET_KIB: u32 = 64 << 10;
/// Requests up to this size run on the async workers; larger ones, FLUSH and FUA writes
/// (fdatasync can take milliseconds) go to the blocking pool. 256 KiB is what nbdcopy and the
/// kernel's readahead send: its pread and XTS take ~80 µs, less than the hop to the blocking
/// pool and back cost (two thread wake-ups: sequential reads took 1.0 CPU-s/GiB at 128 KiB,
/// 0.7 at 256 KiB).
const INLINE_MAX: u32 = 256 << 10;
/// Extents one BLOCK_STATUS reply holds at most.
const MAX_EXTENTS: usize = 1024;

struct Request {
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    length: u32,
}

fn simple_reply(cookie: u64, error: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b
}

fn chunk_header(b: &mut Vec<u8>, cookie: u64, kind: u16, len: u32) {
    b.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&cookie.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
}

/// An error reply in the form the command needs: a structured ERROR chunk (with a message the
/// client can show) for reads and block status once structured replies are on, else simple.
fn error_reply(structured: bool, req: &Request, error: u32, msg: &str) -> Vec<u8> {
    if !(structured && matches!(req.kind, CMD_READ | CMD_BLOCK_STATUS)) {
        return simple_reply(req.cookie, error);
    }
    let msg = &msg.as_bytes()[..msg.len().min(4096)];
    let mut b = Vec::with_capacity(26 + msg.len());
    chunk_header(&mut b, req.cookie, REPLY_TYPE_ERROR, 6 + msg.len() as u32);
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

fn errno_of(e: &io::Error) -> u32 {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EROFS) => EPERM,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ENOSPC,
        Some(libc::ENOMEM) => ENOMEM,
        _ if e.kind() == io::ErrorKind::InvalidInput => EINVAL,
        _ => EIO,
    }
}

/// Checks a request against the export before any work: (errno, reason) when it is refused.
fn validate(req: &Request, s: &Session, server: &Server) -> Result<(), (u32, &'static str)> {
    let known = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;
    if req.flags & !known != 0 {
        return Err((EINVAL, "unknown command flags"));
    }
    let disk = &s.export.disk;
    let writes = matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM);
    if writes && disk.read_only() {
        return Err((EPERM, "the export is read-only"));
    }
    let in_bounds = req.offset.checked_add(req.length as u64).is_some_and(|end| end <= disk.size());
    match req.kind {
        CMD_READ | CMD_WRITE if req.length > MAX_PAYLOAD => Err((EINVAL, "request larger than the 32 MiB maximum")),
        CMD_WRITE | CMD_WRITE_ZEROES if !in_bounds => Err((ENOSPC, "write beyond the end of the disk")),
        CMD_READ | CMD_TRIM | CMD_BLOCK_STATUS if !in_bounds => Err((EINVAL, "request beyond the end of the disk")),
        CMD_TRIM if !server.discard => Err((EINVAL, "TRIM is not enabled on this export")),
        CMD_BLOCK_STATUS if !s.base_allocation => Err((EINVAL, "no meta context was negotiated")),
        CMD_READ | CMD_WRITE | CMD_FLUSH | CMD_TRIM | CMD_WRITE_ZEROES | CMD_BLOCK_STATUS => Ok(()),
        _ => Err((EINVAL, "unknown command")),
    }
}

/// Does the work of one request on the blocking pool and builds its reply.
fn execute(req: &Request, payload: Vec<u8>, export: &Export, structured: bool) -> Vec<u8> {
    let disk = &export.disk;
    let fail = |e: io::Error| {
        tracing::warn!(export = %export.name, cmd = req.kind, offset = req.offset, len = req.length, "I/O error: {e}");
        error_reply(structured, req, errno_of(&e), &e.to_string())
    };
    let fua = |r: io::Result<()>| r.and_then(|_| if req.flags & CMD_FLAG_FUA != 0 { disk.flush() } else { Ok(()) });
    match req.kind {
        CMD_READ => {
            let prefix = if structured { 28 } else { 16 };
            let mut b = Vec::with_capacity(prefix + req.length as usize);
            if structured {
                chunk_header(&mut b, req.cookie, REPLY_TYPE_OFFSET_DATA, 8 + req.length);
                b.extend_from_slice(&req.offset.to_be_bytes());
            } else {
                b.extend_from_slice(&simple_reply(req.cookie, 0));
            }
            match disk.read_append(req.offset, req.length as usize, &mut b) {
                Ok(()) => b,
                Err(e) => fail(e),
            }
        }
        CMD_WRITE => {
            let mut payload = payload;
            match fua(disk.write_at(req.offset, &mut payload)) {
                Ok(()) => simple_reply(req.cookie, 0),
                Err(e) => fail(e),
            }
        }
        CMD_WRITE_ZEROES => {
            let allocate = req.flags & CMD_FLAG_NO_HOLE != 0;
            if allocate && req.flags & CMD_FLAG_FAST_ZERO != 0 {
                // Encrypted zeroes cost a full write: tell the client to do it its own way.
                return simple_reply(req.cookie, ENOTSUP);
            }
            match fua(disk.write_zeroes(req.offset, req.length as u64, allocate)) {
                Ok(()) => simple_reply(req.cookie, 0),
                Err(e) => fail(e),
            }
        }
        CMD_TRIM => match fua(disk.discard(req.offset, req.length as u64)) {
            Ok(()) => simple_reply(req.cookie, 0),
            Err(e) => fail(e),
        },
        CMD_FLUSH => match disk.flush() {
            Ok(()) => simple_reply(req.cookie, 0),
            Err(e) => fail(e),
        },
        CMD_BLOCK_STATUS => {
            // Unwritten sectors are holes of the file and read as zeroes.
            let mut runs = match disk.map(req.offset, req.length as u64) {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            // One extent if asked; and a bounded reply however fragmented the file is (the
            // client asks again from where the reply ends).
            runs.truncate(if req.flags & CMD_FLAG_REQ_ONE != 0 { 1 } else { MAX_EXTENTS });
            let mut b = Vec::with_capacity(20 + 8 * runs.len());
            chunk_header(&mut b, req.cookie, REPLY_TYPE_BLOCK_STATUS, 4 + 8 * runs.len() as u32);
            b.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
            for (len, hole) in runs {
                b.extend_from_slice(&(len as u32).to_be_bytes());
                b.extend_from_slice(&(if hole { STATE_HOLE | STATE_ZERO } else { 0u32 }).to_be_bytes());
            }
            b
        }
        _ => unreachable!("validated"),
    }
}

pub async fn transmit<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    session: Session,
    server: Arc<Server>,
) -> Result<(), ProtoError> {
    let (mut rd, wr) = tokio::io::split(stream);
    // Each reply travels with the budget it holds, released only once the bytes are written to
    // the socket: a client that sends requests and never reads the replies stalls at the budget
    // instead of growing the queue.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, OwnedSemaphorePermit)>();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(256 << 10, wr);
        let mut written = Vec::new();
        while let Some((first, permit)) = rx.recv().await {
            w.write_all(&first).await?;
            written.push(permit);
            // Write out whatever else is ready before flushing: fewer syscalls under load.
            while let Ok((more, permit)) = rx.try_recv() {
                w.write_all(&more).await?;
                written.push(permit);
            }
            w.flush().await?;
            written.clear();
        }
        w.shutdown().await
    });
    let budget = Arc::new(Semaphore::new(BUDGET_KIB as usize));
    let session = Arc::new(session);
    let result = loop {
        let mut hdr = [0u8; 28];
        match rd.read_exact(&mut hdr).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e.into()),
        }
        let be16 = |at: usize| u16::from_be_bytes([hdr[at], hdr[at + 1]]);
        if u32::from_be_bytes(hdr[..4].try_into().unwrap()) != REQUEST_MAGIC {
            break Err(ProtoError::Protocol("bad request magic".into()));
        }
        let req = Request {
            flags: be16(4),
            kind: be16(6),
            cookie: u64::from_be_bytes(hdr[8..16].try_into().unwrap()),
            offset: u64::from_be_bytes(hdr[16..24].try_into().unwrap()),
            length: u32::from_be_bytes(hdr[24..28].try_into().unwrap()),
        };
        if req.kind == CMD_DISC {
            break Ok(());
        }
        // A write's payload follows on the wire whatever we think of the request.
        let mut payload = Vec::new();
        if req.kind == CMD_WRITE {
            if req.length > MAX_PAYLOAD {
                break Err(ProtoError::Protocol(format!("write payload of {} bytes", req.length)));
            }
            // Read into the vector's spare capacity: no zero-filling of what the socket overwrites.
            payload.reserve_exact(req.length as usize);
            let mut failed = None;
            while payload.len() < req.length as usize {
                let left = (req.length as usize - payload.len()) as u64;
                match (&mut rd).take(left).read_buf(&mut payload).await {
                    Ok(0) => failed = Some(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    Ok(_) => continue,
                    Err(e) => failed = Some(e),
                }
                break;
            }
            if let Some(e) = failed {
                break Err(e.into());
            }
        }
        if let Err((errno, why)) = validate(&req, &session, &server) {
            tracing::debug!(cmd = req.kind, offset = req.offset, len = req.length, "refused: {why}");
            // Error replies are small but cost budget too: a stream of bad requests is bounded.
            let permit = budget.clone().acquire_many_owned(1).await.expect("never closed");
            let _ = tx.send((error_reply(session.structured, &req, errno, why), permit));
            continue;
        }
        let cost = (req.length / 1024).clamp(1, BUDGET_KIB);
        let permit = budget.clone().acquire_many_owned(cost).await.expect("never closed");
        let (tx, session, cookie) = (tx.clone(), session.clone(), req.cookie);
        let syncs = req.kind == CMD_FLUSH || req.flags & CMD_FLAG_FUA != 0;
        if !syncs && req.length <= INLINE_MAX {
            // Small requests cost a few microseconds of pread/pwrite on the page cache and XTS:
            // run them on a runtime worker (another one keeps reading the socket) instead of
            // paying a hop to the blocking pool and back.
            tokio::spawn(async move {
                let _ = tx.send((execute(&req, payload, &session.export, session.structured), permit));
            });
            continue;
        }
        tokio::spawn(async move {
            let export = session.export.clone();
            let structured = session.structured;
            let done = tokio::task::spawn_blocking(move || execute(&req, payload, &export, structured)).await;
            let reply = done.unwrap_or_else(|e| {
                tracing::error!("request failed: {e}");
                simple_reply(cookie, EIO)
            });
            let _ = tx.send((reply, permit));
        });
    };
    // Every request already read gets its reply before the connection closes.
    drop(tx);
    let _ = budget.acquire_many(BUDGET_KIB).await;
    writer.await.map_err(|e| ProtoError::Protocol(e.to_string()))??;
    result
}
