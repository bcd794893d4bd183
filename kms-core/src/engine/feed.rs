//! Keeping a node's cache coherent with a shared store, and refusing to serve from it when it
//! may be stale.
//!
//! A follower thread holds its own connection, `LISTEN`s for new change lists and fetches what
//! follows its position on each notification of a list it has not applied (a node's own writes
//! apply theirs as they commit) and at least every `lease / 4`; it applies each list
//! to the cache (dropping replaced or deleted material from the cipher cache) in sequence order.
//!
//! **The bound.** Before each fetch the follower reads the monotonic clock (`t0`); when the fetch
//! returns everything after the cache's position, the cache is known to include every list
//! committed before `t0` (the fetch's snapshot starts after `t0`), and `t0` becomes the cache's
//! *fresh-at*. A request is served from the cache only while `now − fresh-at ≤ lease`. So a key
//! disabled by a commit at time `c` on any node is refused by this node for every request decided
//! after `c + lease`: serving it stale would need a fresh-at before `c`, hence a decision before
//! `c + lease`. A node that cannot reach the store stops serving after `lease`, with
//! `ServiceUnavailableTemporary` (a retriable 503).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::cache::CipherCache;
use super::state::State;
use crate::error::{ErrorCode, KmsError, Result};
use crate::store::postgres::FeedPage;
use crate::store::{CatchUp, ChangeSet, PgFeed};

/// How many lists one fetch takes at most.
const PAGE: i64 = 1000;
/// The least time between the starts of two fetches prompted by notifications, once they come
/// in a stream. Under a steady stream of writes from other nodes a fetch per notification would
/// cost the database a round trip per list on every node (as much as the writes themselves);
/// waiting this long takes every list announced meanwhile in one fetch. A follower whose last two
/// fetches were further apart than this fetches at once, so a lone change – or a change right
/// after one – still arrives in a round trip; in a stream it arrives at most this much later, far
/// inside any lease.
const MIN_FETCH_GAP: Duration = Duration::from_millis(3);

/// When the cache was last known to be current.
pub(crate) struct Freshness {
    base: Instant,
    /// Nanoseconds after `base`; only moves forward.
    fresh_at: AtomicU64,
    lease: Duration,
    shared: bool,
}

impl Freshness {
    /// An unshared store: the cache is the only writer's, always current.
    pub fn unshared() -> Freshness {
        Freshness { base: Instant::now(), fresh_at: AtomicU64::new(0), lease: Duration::MAX, shared: false }
    }

    /// A shared store whose cache is current as of `t0`.
    pub fn shared(lease: Duration, t0: Instant) -> Freshness {
        Freshness { base: t0, fresh_at: AtomicU64::new(0), lease, shared: true }
    }

    /// The cache includes everything committed before `t0`.
    pub fn mark(&self, t0: Instant) {
        let n = t0.saturating_duration_since(self.base).as_nanos() as u64;
        self.fresh_at.fetch_max(n, Ordering::AcqRel);
    }

    /// How old the cache may be: `None` on an unshared store.
    pub fn age(&self) -> Option<Duration> {
        if !self.shared {
            return None;
        }
        let at = self.base + Duration::from_nanos(self.fresh_at.load(Ordering::Acquire));
        Some(Instant::now().saturating_duration_since(at))
    }

    /// Refuses when the cache may be older than the lease.
    pub fn check(&self) -> Result<()> {
        match self.age() {
            Some(age) if age > self.lease => Err(KmsError::with_detail(
                ErrorCode::ServiceUnavailableTemporary,
                format_args!(
                    "this node has not heard from the shared store for {} ms (the limit is {} ms); retry",
                    age.as_millis(),
                    self.lease.as_millis()
                ),
            )),
            _ => Ok(()),
        }
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }
}

/// Applies the lists that follow the cache's position, in order; skips those it already has.
pub(crate) fn apply_sets(st: &mut State, ciphers: &CipherCache, sets: &[ChangeSet]) {
    for set in sets {
        if set.seq <= st.applied_seq {
            continue;
        }
        if set.seq != st.applied_seq + 1 {
            // Cannot happen (fetches are gapless); the next fetch starts from the position again.
            tracing::warn!(have = st.applied_seq, got = set.seq, "change feed out of order; refetching");
            return;
        }
        st.apply_list(Some(set.seq), &set.changes, ciphers);
        st.applied_seq = set.seq;
    }
}

/// Handles a write transaction's catch-up step.
pub(crate) fn catch_up(state: &RwLock<State>, ciphers: &CipherCache, cu: CatchUp) {
    match cu {
        CatchUp::Sets(sets) if sets.is_empty() => {}
        CatchUp::Sets(sets) => apply_sets(&mut state.write(), ciphers, &sets),
        CatchUp::Reset(seq) => reset(state, ciphers, seq),
    }
}

/// Forgets the cache and resumes at `seq` (unless already past it).
fn reset(state: &RwLock<State>, ciphers: &CipherCache, seq: u64) {
    let mut st = state.write();
    if seq >= st.applied_seq {
        st.reset(seq, ciphers);
    }
}

/// Stops the follower thread when dropped. The thread notices within one poll interval and
/// exits on its own (not joined: dropping an engine should not wait on the network).
pub(crate) struct Follower {
    stop: Arc<AtomicBool>,
    _thread: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Starts following the store at `url`.
pub(crate) fn spawn(
    mut feed: PgFeed,
    state: Arc<RwLock<State>>,
    ciphers: Arc<CipherCache>,
    fresh: Arc<Freshness>,
) -> Follower {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    // Often enough that a healthy follower is never near the lease; the wait is also how soon
    // the thread notices `stop`.
    let poll = (fresh.lease() / 4).clamp(Duration::from_millis(20), Duration::from_millis(500));
    let thread = std::thread::Builder::new()
        .name("kms-feed".into())
        .spawn(move || {
            let mut failing_since: Option<Instant> = None;
            // When the fetch before this one started: two fetches closer than the gap are a
            // stream of changes, which the gap then paces.
            let mut last_t0: Option<Instant> = None;
            while !stopping.load(Ordering::Acquire) {
                let t0 = Instant::now();
                let streaming = last_t0.is_some_and(|l| t0.duration_since(l) < MIN_FETCH_GAP);
                last_t0 = Some(t0);
                let applied = state.read().applied_seq;
                let step = match feed.fetch(applied, PAGE) {
                    Ok(FeedPage::Sets(sets)) => {
                        let complete = (sets.len() as i64) < PAGE;
                        if !sets.is_empty() {
                            apply_sets(&mut state.write(), &ciphers, &sets);
                        }
                        if complete {
                            fresh.mark(t0);
                        }
                        Ok(complete)
                    }
                    Ok(FeedPage::Behind) => feed.head().map(|seq| {
                        reset(&state, &ciphers, seq);
                        fresh.mark(t0);
                        true
                    }),
                    Err(e) => Err(e),
                };
                match step {
                    Ok(false) => continue, // more pages waiting
                    Ok(true) => {
                        if let Some(since) = failing_since.take() {
                            tracing::info!(after_ms = since.elapsed().as_millis() as u64, "change feed restored");
                        }
                        // Until a list this node has not applied is announced – its own writes
                        // apply theirs as they commit – or the poll is due (counted from this
                        // fetch, so the lease is renewed however many lists are announced).
                        let due = t0 + poll;
                        loop {
                            let left = due.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break;
                            }
                            match feed.wait(left) {
                                Ok(Some(seq)) if seq <= state.read().applied_seq => continue,
                                Ok(Some(seq)) => {
                                    let gap = (t0 + MIN_FETCH_GAP).saturating_duration_since(Instant::now());
                                    if streaming && !gap.is_zero() {
                                        std::thread::sleep(gap);
                                    }
                                    // A node that writes too brings its cache up to each of its
                                    // commits (the lists in between come with it): what was
                                    // announced may be applied by now, and need not be fetched.
                                    if seq <= state.read().applied_seq {
                                        continue;
                                    }
                                    break;
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::debug!(error = %e, "change feed wait failed");
                                    feed.reset();
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        if failing_since.is_none() {
                            tracing::warn!(error = %e, "change feed lost; this node refuses requests once its view is older than the lease");
                            failing_since = Some(Instant::now());
                        }
                        feed.reset();
                        std::thread::sleep(poll.min(Duration::from_millis(100)));
                    }
                }
            }
        })
        .expect("spawn change feed thread");
    Follower { stop, _thread: thread }
}
