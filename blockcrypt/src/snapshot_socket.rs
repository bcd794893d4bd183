//! Online snapshots where the filesystem cannot clone a file: the server that writes a disk makes
//! the copy itself, between two of its writes.
//!
//! `blockcrypt serve` listens, for each disk it serves, on an abstract Unix socket named after
//! the data file's device and inode (`blockcrypt/snapshot/<dev>/<ino>`, hex): nothing on disk to
//! plant or leave behind, and binding fails while another process serves the same file. A
//! snapshot asks over it by sending one byte and two descriptors (`SCM_RIGHTS`): the disk's data
//! file, opened by the asker – the proof that it may read the disk, which is all a snapshot
//! reveals – and the empty file it created for the copy. The server never opens a path for
//! anyone: it writes only into the descriptor it was given.
//!
//! The server then copies the file's data extents into the given file while writes go on,
//! noting which 1 MiB chunks they change, and holds writes back (in-flight ones finish first)
//! only to recopy those chunks ([`Disk::copy_to`]); so the copy holds every write that completed
//! before that moment and none after – what a crash then would leave, as a cloud disk's snapshot
//! does – and writes wait only for what changed during the copy, not for the disk. The reply is
//! `OK` or `ERR <why>`, one line. One snapshot at a time per disk.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use crate::disk::Disk;

/// The request's one byte.
const SNAPSHOT: u8 = b'S';
/// How long an asker may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket's name for the file `f`.
fn name_for(f: &File) -> io::Result<Vec<u8>> {
    let m = f.metadata()?;
    Ok(format!("blockcrypt/snapshot/{:x}/{:x}", m.dev(), m.ino()).into_bytes())
}

/// Starts answering snapshot requests for `disk` on a thread of its own.
pub fn listen(disk: Arc<Disk>) -> io::Result<()> {
    let addr = SocketAddr::from_abstract_name(name_for(disk.file())?)?;
    let listener = UnixListener::bind_addr(&addr)?;
    std::thread::Builder::new().name("blockcrypt-snapshots".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let reply = match answer(&disk, &conn) {
                Ok(()) => "OK\n".to_string(),
                Err(e) => format!("ERR {e}\n"),
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    })?;
    Ok(())
}

/// Reads one request from `conn` and makes the copy it asks for.
fn answer(disk: &Disk, conn: &UnixStream) -> io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(conn, &mut [io::IoSliceMut::new(&mut byte)], &mut cmsg, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if got.bytes != 1 || byte[0] != SNAPSHOT || fds.len() != 2 {
        return Err(invalid("expected a snapshot request with the disk's file and the copy's"));
    }
    let copy = File::from(fds.pop().expect("two"));
    let shown = File::from(fds.pop().expect("two"));
    let (disk_meta, shown_meta, copy_meta) = (disk.file().metadata()?, shown.metadata()?, copy.metadata()?);
    if (shown_meta.dev(), shown_meta.ino()) != (disk_meta.dev(), disk_meta.ino()) {
        return Err(invalid("the first descriptor is not the served disk's file"));
    }
    // Open for reading: an O_PATH descriptor can be had without read permission, so it proves
    // nothing.
    if !open_for(&shown, rustix::fs::OFlags::WRONLY)? {
        return Err(invalid("the disk's file is not open for reading"));
    }
    if !copy_meta.file_type().is_file()
        || copy_meta.len() != 0
        || (copy_meta.dev(), copy_meta.ino()) == (disk_meta.dev(), disk_meta.ino())
    {
        return Err(invalid("the copy must go to an empty regular file"));
    }
    // Writes wait while the changed chunks are recopied: into a file on another filesystem (one
    // its asker serves through FUSE, say) that wait would be the asker's to make endless.
    if copy_meta.dev() != disk_meta.dev() {
        return Err(invalid("the copy must be on the disk's filesystem"));
    }
    if !open_for(&copy, rustix::fs::OFlags::RDONLY)? {
        return Err(invalid("the copy's file is not open for writing"));
    }
    let held = disk.copy_to(&copy)?;
    tracing::info!(writes_held_ms = held.as_millis() as u64, "online snapshot copied");
    copy.sync_all()
}

/// Whether `f` is a real open file description (not `O_PATH`) whose access mode is not `other`
/// – the mode that excludes what is asked for (`WRONLY` to read, `RDONLY` to write).
fn open_for(f: &File, other: rustix::fs::OFlags) -> io::Result<bool> {
    let flags = rustix::fs::fcntl_getfl(f)?;
    Ok(!flags.contains(rustix::fs::OFlags::PATH) && flags & rustix::fs::OFlags::RWMODE != other)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Why a server could not make the copy.
#[derive(Debug)]
pub enum AskError {
    /// No server on this host (in this network namespace) serves the file.
    NotServed,
    /// The server refused or failed, with its reason.
    Failed(String),
}

/// Asks the server of the disk whose data file is `data` to copy it into `copy` (empty, open for
/// writing), and waits for the copy.
pub fn ask(data: &File, copy: &File) -> Result<(), AskError> {
    let failed = |e: io::Error| AskError::Failed(e.to_string());
    let addr = SocketAddr::from_abstract_name(name_for(data).map_err(failed)?).map_err(failed)?;
    let mut conn = match UnixStream::connect_addr(&addr) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) => {
            return Err(AskError::NotServed)
        }
        Err(e) => return Err(failed(e)),
    };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [data.as_fd(), copy.as_fd()];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(&conn, &[io::IoSlice::new(&[SNAPSHOT])], &mut cmsg, SendFlags::empty())
        .map_err(|e| failed(e.into()))?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).map_err(failed)?;
    match reply.trim_end().strip_prefix("ERR ") {
        None if reply == "OK\n" => Ok(()),
        None => Err(AskError::Failed(format!("unexpected reply {reply:?}"))),
        Some(why) => Err(AskError::Failed(why.to_string())),
    }
}
