//! FUSE over io_uring (Linux 6.14+, module parameter `fuse.enable_uring=1`).
//!
//! The kernel keeps one request queue per possible CPU and hands each request to the queue of
//! the CPU its caller runs on. The threads serving a queue are pinned to that CPU (while they
//! serve small requests, see `Policy`), so the caller, the daemon and the reply stay on one
//! CPU: the caller sleeps, the daemon thread runs where it just was, and the reply wakes the
//! caller locally. With `/dev/fuse` the request is
//! picked up by whichever reader was woken, usually on another (idle) CPU, and both wake-ups
//! cross CPUs – that round trip, not the filesystem's work, bounds small synchronous requests.
//!
//! Each thread owns one ring entry: a header buffer (`struct fuse_uring_req_header`) and a
//! payload buffer, registered with `FUSE_IO_URING_CMD_REGISTER`; every reply is committed
//! together with the fetch of the next request (`FUSE_IO_URING_CMD_COMMIT_AND_FETCH`), one
//! `io_uring_enter` per request. FORGET and INTERRUPT still come over `/dev/fuse`.
//!
//! Requests are rebuilt in the `/dev/fuse` layout (in header, op struct, payload) right in front
//! of the payload, so the existing parser and dispatch serve both transports.
//!
//! This file is ours, not upstream's: CI lints it with clippy (`.ci/clippy-vendored`), and every
//! `unsafe` block in it carries a `SAFETY:` comment saying why it is sound.
#![warn(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]

use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::mpsc;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::error;
use log::warn;

use crate::Filesystem;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// `struct fuse_uring_req_header`: `in_out[128]`, `op_in[128]`, `fuse_uring_ent_in_out`
/// (`flags: u64, commit_id: u64, payload_sz: u32, padding: u32, reserved: u64`).
const OP_IN: usize = 128;
const ENT_IN_OUT: usize = 256;
const HEADER_LEN: usize = 288;
/// `struct fuse_in_header` / `struct fuse_out_header`.
const IN_HEADER_LEN: usize = 40;
const OUT_HEADER_LEN: usize = 16;
/// Requests moving at least this much data are served off the queue's CPU (see `handle`).
const HEAVY: usize = 64 * 1024;
const FUSE_READ: u32 = 15;
const FUSE_FORGET: u32 = 2;
const FUSE_BATCH_FORGET: u32 = 42;
/// Room in front of the payload for the in header and the largest op struct.
const PREFIX: usize = IN_HEADER_LEN + OP_IN;

/// The kernel's number of queues: `num_possible_cpus()`.
pub(crate) fn queue_count() -> usize {
    let count = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|list| cpu_list_len(list.trim()));
    count.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The number of CPUs in a kernel CPU list such as `0-3,8,10-11`.
fn cpu_list_len(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse::<usize>().ok()?)? + 1,
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
    }
    Some(n)
}

/// Where a ring request's reply waits until its thread commits it. Replies are copied here
/// rather than into the payload buffer because the request being answered (a WRITE's data)
/// may still be borrowed from that buffer when the filesystem replies.
#[derive(Debug, Clone, Default)]
pub(crate) struct RingReply(Arc<ReplySlot>);

#[derive(Debug, Default)]
struct ReplySlot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    bytes: Vec<u8>,
    full: bool,
}

impl RingReply {
    /// Called once per request by the reply (possibly from another thread).
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.bytes.clear();
        for part in data {
            state.bytes.extend_from_slice(part);
        }
        state.full = true;
        self.0.ready.notify_one();
    }

    /// Waits for the reply and passes it (out header and body) to `f`.
    fn take<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        while !state.full {
            state = self.0.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.full = false;
        f(&state.bytes)
    }
}

/// One ring entry's memory, shared with the kernel. The kernel writes a request into it (in
/// this thread's context, before the completion is posted) and reads the reply from it during
/// the commit (inside this thread's `io_uring_enter`); in between only this thread touches it,
/// through slices made after a completion and dropped before the next submission.
struct Entry {
    header: *mut u8,
    data: *mut u8,
    capacity: usize,
    _header: Vec<u64>,
    _data: Vec<u64>,
    iov: Box<[libc::iovec; 2]>,
}

// SAFETY: an entry is handled by one thread at a time: its ring thread, or the helper the ring
// thread hands it to and waits for; the raw pointers are only dereferenced by that thread.
unsafe impl Sync for Entry {}
// SAFETY: as for `Sync`: moving an entry to the helper thread hands it over whole (the ring
// thread waits for it back), and the buffers the pointers name move with it inside the `Vec`s.
unsafe impl Send for Entry {}

impl Entry {
    fn new(payload: usize) -> Entry {
        let mut header = vec![0u64; HEADER_LEN / 8];
        let mut data = vec![0u64; (PREFIX + payload).div_ceil(8)];
        let header_ptr = header.as_mut_ptr().cast::<u8>();
        let data_ptr = data.as_mut_ptr().cast::<u8>();
        let iov = Box::new([
            libc::iovec {
                iov_base: header_ptr.cast(),
                iov_len: HEADER_LEN,
            },
            libc::iovec {
                // SAFETY: `data` holds PREFIX + payload bytes.
                iov_base: unsafe { data_ptr.add(PREFIX) }.cast(),
                iov_len: payload,
            },
        ]);
        Entry {
            header: header_ptr,
            data: data_ptr,
            capacity: payload,
            _header: header,
            _data: data,
            iov,
        }
    }
}

fn command(fd: types::Fd, op: u32, qid: u16, commit_id: u64, iov: Option<&[libc::iovec; 2]>) -> squeue::Entry128 {
    // struct fuse_uring_cmd_req { flags: u64, commit_id: u64, qid: u16, padding: [u8; 6] }
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let mut sqe = opcode::UringCmd80::new(fd, op).cmd(cmd);
    let Some(iov) = iov else {
        return sqe.build();
    };
    sqe = sqe.addr(Some(iov.as_ptr() as u64));
    // REGISTER also needs `sqe->len` (the iovec count), which UringCmd80 does not set.
    // SAFETY: Entry128 is `#[repr(C)]` over (`io_uring_sqe`, `[u8; 64]`): 128 bytes of integers
    // (and unions of integers) without padding, so it round-trips through a byte array; bytes
    // 24..28 are `io_uring_sqe.len`.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe.build()) };
    raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    // SAFETY: as above: every 128-byte pattern is a valid Entry128 (integers and unions of
    // integers only), and this one is a built entry with one integer field changed.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is a plain bit array: all zeroes is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t; CPU_SET bounds-checks `cpu` against its size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 names this thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        warn!("io_uring queue {cpu}: cannot pin to its CPU ({})", io::Error::last_os_error());
    }
}

/// Serves one ring entry of queue `qid` until the filesystem is unmounted.
pub(crate) fn serve_queue<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    qid: usize,
    payload: usize,
    sched_idle: bool,
) -> io::Result<()> {
    let entry = Entry::new(payload);
    let reply = RingReply::default();
    let (result, released) = std::thread::scope(|scope| {
        // Large reads and writes are mostly cipher work: a helper thread, free to run on any
        // CPU, serves them beside their caller (a sequential reader consuming the previous
        // block while the kernel reads ahead) instead of queueing behind it on this CPU. It is
        // started before this thread is pinned so that it inherits neither the pinning nor
        // SCHED_IDLE.
        let (to_helper, jobs) = mpsc::sync_channel::<()>(0);
        let (done, from_helper) = mpsc::sync_channel::<u64>(0);
        let (entry, reply) = (&entry, &reply);
        let helper = std::thread::Builder::new().name(se.thread_name.replace("ring", "bulk"));
        let spawned = helper.spawn_scoped(scope, move || {
            for () in jobs {
                if done.send(handle(se, entry, reply)).is_err() {
                    break;
                }
            }
        });
        if let Err(e) = spawned {
            warn!("io_uring queue {qid}: no helper thread ({e}); large requests served in place");
        }
        let mut policy = Policy::new(sched_idle, qid);
        let serve = |entry: &Entry| {
            let heavy = is_heavy(entry);
            policy.note(heavy);
            // In a run of large requests this thread is free to run anywhere already.
            if heavy && policy.pinned && to_helper.send(()).is_ok() {
                from_helper.recv().map_err(|_| io::Error::other("io_uring helper thread gone"))
            } else {
                Ok(handle(se, entry, reply))
            }
        };
        ring_loop(se, qid, entry, serve)
    });
    if !released {
        // The kernel may still write into this entry: its memory is never freed.
        std::mem::forget(entry);
    }
    result
}

/// Registers `entry` and serves requests with `serve` until unmount. Returns whether the kernel
/// has released the entry (so its memory may be freed).
fn ring_loop<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    qid: usize,
    entry: &Entry,
    mut serve: impl FnMut(&Entry) -> io::Result<u64>,
) -> (io::Result<()>, bool) {
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> = match IoUring::builder().build(2) {
        Ok(ring) => ring,
        Err(e) => return (Err(e), true),
    };
    let Ok(qid16) = u16::try_from(qid) else {
        return (Err(io::Error::other("too many CPUs for FUSE io_uring")), true);
    };
    let fd = types::Fd(se.ch.as_fd().as_raw_fd());
    let mut next = command(fd, CMD_REGISTER, qid16, 0, Some(&entry.iov));
    let mut registered = false;
    loop {
        // SAFETY: the buffers and the iovec the command points to live in `entry`, which
        // outlives every command (it is freed only once the kernel has released it).
        if unsafe { ring.submission().push(&next) }.is_err() {
            return (Err(io::Error::other("io_uring submission queue full")), !registered);
        }
        let result = loop {
            if let Some(cqe) = ring.completion().next() {
                break cqe.result();
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return (Err(e), false),
            }
        };
        match -result {
            0 => {
                registered = true;
                match serve(entry) {
                    Ok(commit_id) => next = command(fd, CMD_COMMIT_AND_FETCH, qid16, commit_id, None),
                    Err(e) => return (Err(e), false),
                }
            }
            libc::EINTR => {}
            libc::EAGAIN => std::thread::sleep(std::time::Duration::from_millis(1)),
            // Unmounted or aborted: the kernel has released this entry for good.
            libc::ENOTCONN | libc::ECONNABORTED | libc::ENODEV => return (Ok(()), true),
            errno => {
                let e = io::Error::from_raw_os_error(errno);
                if registered {
                    error!("io_uring queue {qid}: commit failed: {e}");
                    return (Err(e), false);
                }
                warn!("io_uring queue {qid}: registration refused ({e}); requests stay on /dev/fuse");
                return (Ok(()), true);
            }
        }
    }
}

/// Whether the request in `entry` moves at least `HEAVY` bytes (a WRITE's payload, a READ's size).
fn is_heavy(entry: &Entry) -> bool {
    // SAFETY: see `Entry`; read-only and dropped before the request is handled.
    let header = unsafe { std::slice::from_raw_parts(entry.header, HEADER_LEN) };
    let word = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().unwrap()) as usize;
    // fuse_read_in { fh: u64, offset: u64, size: u32, .. }
    word(ENT_IN_OUT + 16) >= HEAVY || (word(4) == FUSE_READ as usize && word(OP_IN + 16) >= HEAVY)
}

/// Where and how the ring thread runs. Serving small requests it is pinned to its queue's CPU
/// and SCHED_IDLE: the scheduler then leaves a caller woken by a reply on this CPU (it counts
/// as idle), which halves the round trip of small synchronous requests. But a SCHED_IDLE thread
/// also waits for the CPU to be free before it takes a request, so a sequential reader's
/// readahead would start only when the reader blocks; in a run of large requests the thread is
/// therefore an ordinary unpinned thread, like a `/dev/fuse` reader (hysteresis over the last
/// few requests). Leaving SCHED_IDLE needs CAP_SYS_NICE (or a raised RLIMIT_NICE); without it
/// the thread stays pinned and SCHED_IDLE and hands large requests to its helper.
struct Policy {
    qid: usize,
    adaptive: bool,
    pinned: bool,
    idle: bool,
    /// The CPUs the process may use (what an unpinned thread gets back).
    anywhere: Option<libc::cpu_set_t>,
    /// Grows with large requests, shrinks with small ones (0..=HEAVY_RUN).
    heavy_run: u8,
}

const HEAVY_RUN: u8 = 4;

impl Policy {
    fn new(sched_idle: bool, qid: usize) -> Policy {
        // SAFETY: cpu_set_t is a plain bit array: all zeroes is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a writable cpu_set_t of the size passed; 0 names this thread.
        let got = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        let anywhere = (got == 0).then_some(set);
        pin_to_cpu(qid);
        let mut policy = Policy {
            qid,
            adaptive: sched_idle,
            pinned: true,
            idle: false,
            anywhere,
            heavy_run: 0,
        };
        if sched_idle && !policy.set_scheduler(libc::SCHED_IDLE) {
            warn!("io_uring queue {qid}: cannot use SCHED_IDLE ({})", io::Error::last_os_error());
            policy.adaptive = false;
        }
        policy
    }

    fn set_scheduler(&mut self, policy: i32) -> bool {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a plain syscall on the calling thread with a valid parameter block.
        let done = unsafe { libc::sched_setscheduler(0, policy, &param) } == 0;
        if done {
            self.idle = policy == libc::SCHED_IDLE;
        }
        done
    }

    fn note(&mut self, heavy: bool) {
        if !self.adaptive {
            return;
        }
        self.heavy_run = if heavy { (self.heavy_run + 1).min(HEAVY_RUN) } else { self.heavy_run.saturating_sub(1) };
        match self.heavy_run {
            HEAVY_RUN if self.pinned => {
                let Some(anywhere) = self.anywhere else {
                    self.adaptive = false;
                    return;
                };
                if !self.set_scheduler(libc::SCHED_OTHER) {
                    // Not allowed back to SCHED_OTHER: stay as we are for good.
                    self.adaptive = false;
                    return;
                }
                // SAFETY: `anywhere` came from sched_getaffinity.
                if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &anywhere) } == 0 {
                    self.pinned = false;
                }
            }
            0 if !self.pinned || !self.idle => {
                pin_to_cpu(self.qid);
                self.pinned = true;
                self.set_scheduler(libc::SCHED_IDLE);
            }
            _ => {}
        }
    }
}

/// Answers the request in `entry`; returns the commit id to hand back with the reply.
fn handle<FS: Filesystem>(se: &SessionEventLoop<FS>, entry: &Entry, reply: &RingReply) -> u64 {
    // SAFETY: see `Entry`: the kernel is done writing, and these slices end with this call.
    let header = unsafe { std::slice::from_raw_parts_mut(entry.header, HEADER_LEN) };
    // SAFETY: as for `header`; `data` points at PREFIX + capacity bytes (`Entry::new`), a
    // separate allocation, so the two slices never overlap.
    let data = unsafe { std::slice::from_raw_parts_mut(entry.data, PREFIX + entry.capacity) };
    let word = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    let long = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
    let commit_id = long(header, ENT_IN_OUT + 8);
    let payload_len = word(header, ENT_IN_OUT + 16) as usize;
    let unique = long(header, 8);
    // `len` counts the in header, the op struct (`op_in`) and the payload.
    let op_len = (word(header, 0) as usize)
        .checked_sub(IN_HEADER_LEN + payload_len)
        .filter(|&n| n <= OP_IN && payload_len <= entry.capacity);
    let Some(op_len) = op_len else {
        error!("io_uring: malformed request {unique} (opcode {})", word(header, 4));
        write_error(header, unique, libc::EIO);
        return commit_id;
    };
    let start = PREFIX - op_len - IN_HEADER_LEN;
    data[start..start + IN_HEADER_LEN].copy_from_slice(&header[..IN_HEADER_LEN]);
    data[PREFIX - op_len..PREFIX].copy_from_slice(&header[OP_IN..OP_IN + op_len]);
    let opcode = word(header, 4);
    match RequestWithSender::new_ring(se.ch.sender(), &data[start..PREFIX + payload_len], reply.clone()) {
        // FORGET has no reply (and the kernel sends it over /dev/fuse): nothing to wait for.
        Some(request) if opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET => {
            request.dispatch(se);
            write_error(header, unique, 0);
            return commit_id;
        }
        Some(request) => request.dispatch(se),
        None => {
            write_error(header, unique, libc::EIO);
            return commit_id;
        }
    }
    reply.take(|bytes| {
        let body = bytes.get(OUT_HEADER_LEN..).unwrap_or_default();
        if bytes.len() < OUT_HEADER_LEN || body.len() > entry.capacity {
            error!("io_uring: reply to {unique} does not fit ({} bytes)", bytes.len());
            write_error(header, unique, libc::EIO);
            return;
        }
        header[..OUT_HEADER_LEN].copy_from_slice(&bytes[..OUT_HEADER_LEN]);
        data[PREFIX..PREFIX + body.len()].copy_from_slice(body);
        header[ENT_IN_OUT + 16..ENT_IN_OUT + 20].copy_from_slice(&(body.len() as u32).to_ne_bytes());
    });
    commit_id
}

/// An out header with `-errno` (0: success without a body) and an empty payload.
fn write_error(header: &mut [u8], unique: u64, errno: i32) {
    header[..4].copy_from_slice(&(OUT_HEADER_LEN as u32).to_ne_bytes());
    header[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    header[8..16].copy_from_slice(&unique.to_ne_bytes());
    header[ENT_IN_OUT + 16..ENT_IN_OUT + 20].copy_from_slice(&0u32.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::cpu_list_len;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list_len("0"), Some(1));
        assert_eq!(cpu_list_len("0-1"), Some(2));
        assert_eq!(cpu_list_len("0-3,8,10-11"), Some(7));
        assert_eq!(cpu_list_len("x"), None);
    }
}
