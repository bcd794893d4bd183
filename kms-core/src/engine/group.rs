//! Group commit of writes decided before the lock (`STORE.md`, "Writes without a round trip
//! under the lock"): a node's early decisions queue here; one thread at a time leads, taking
//! every queued decision into one pipeline – one lock acquisition and one WAL flush for all of
//! them – while the next batch gathers behind it. The others wait for their outcome.
//!
//! A batch keeps a decision only if it read nothing an earlier decision of the batch touches
//! (both were made on the state before the batch; the later one commits after the earlier), and
//! commits whole or not at all: a refused batch sends every decision back to be decided again
//! under the lock.

use std::collections::BTreeSet;
use std::time::Instant;

use super::combine::Combiner;
use super::{feed, Engine};
use crate::store::{Decided, Early, StoreError};

/// Decisions one batch takes at most.
const MAX_BATCH: usize = 64;

/// What became of one early decision.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Committed,
    /// Not written: decide again under the lock.
    Conflict,
    /// The store failed (its outcome already resolved by the store where it could be).
    Failed(StoreError),
}

/// Early decisions waiting to be committed together.
pub(super) type Batcher = Combiner<Early, Outcome>;

impl Engine {
    /// Queues `early` for the next batch and waits for its outcome, leading a batch when no
    /// other thread is.
    pub(super) fn commit_early(&self, early: Early) -> Outcome {
        self.batcher.submit(early, MAX_BATCH, |batch| self.run_batch(batch))
    }

    fn run_batch(&self, batch: Vec<(u64, Early)>) -> Vec<(u64, Outcome)> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let (mut tickets, mut kept) = (Vec::new(), Vec::new());
        let mut touched = BTreeSet::new();
        for (ticket, e) in batch {
            if e.reads.names.iter().any(|n| touched.contains(n)) {
                outcomes.push((ticket, Outcome::Conflict));
                continue;
            }
            touched.extend(e.touched.iter().cloned());
            tickets.push(ticket);
            kept.push(e);
        }
        if kept.is_empty() {
            return outcomes;
        }
        let t0 = Instant::now();
        let decided = self.store().write_early(kept);
        let outcome = match decided {
            Ok(Decided::Committed { sets }) => {
                // Under the lock the store read every list before these: the cache, brought up
                // to them, is current as of `t0`.
                feed::apply_sets(&mut self.state.write(), &self.ciphers, &sets);
                self.freshness.mark(t0);
                Outcome::Committed
            }
            Ok(Decided::Conflict) => Outcome::Conflict,
            Err(e) => Outcome::Failed(e),
        };
        outcomes.extend(tickets.into_iter().map(|t| (t, outcome.clone())));
        outcomes
    }
}
