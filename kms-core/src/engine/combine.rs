//! Combining: callers of one operation that arrive while it runs queue up, and the next run takes
//! them all at once – one thread at a time leads (runs the operation for everyone queued), the
//! others wait for their own result. Under load a round trip to the store then serves many
//! requests; alone, a caller leads at once and pays nothing extra.

use std::collections::HashMap;

use parking_lot::{Condvar, Mutex, MutexGuard};

pub(super) struct Combiner<T, R> {
    queue: Mutex<Queue<T, R>>,
    turn: Condvar,
}

struct Queue<T, R> {
    waiting: Vec<(u64, T)>,
    done: HashMap<u64, R>,
    leading: bool,
    next: u64,
}

impl<T, R> Default for Combiner<T, R> {
    fn default() -> Self {
        Combiner {
            queue: Mutex::new(Queue { waiting: Vec::new(), done: HashMap::new(), leading: false, next: 0 }),
            turn: Condvar::new(),
        }
    }
}

impl<T, R> Combiner<T, R> {
    /// Queues `item` and waits for its result, leading runs while no other thread does. `run`
    /// takes up to `max` queued items (with their tickets) and returns a result for each ticket.
    pub fn submit(&self, item: T, max: usize, mut run: impl FnMut(Vec<(u64, T)>) -> Vec<(u64, R)>) -> R {
        let mut q = self.queue.lock();
        let ticket = q.next;
        q.next += 1;
        q.waiting.push((ticket, item));
        loop {
            if let Some(r) = q.done.remove(&ticket) {
                return r;
            }
            if !q.leading {
                q.leading = true;
                let take = q.waiting.len().min(max.max(1));
                let batch: Vec<(u64, T)> = q.waiting.drain(..take).collect();
                let results = MutexGuard::unlocked(&mut q, || run(batch));
                q.done.extend(results);
                q.leading = false;
                self.turn.notify_all();
                continue;
            }
            self.turn.wait(&mut q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_share_runs_and_each_gets_its_own_result() {
        let c: Arc<Combiner<u64, u64>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16u64)
            .map(|i| {
                let (c, runs) = (c.clone(), runs.clone());
                std::thread::spawn(move || {
                    c.submit(i, 4, |batch| {
                        assert!(batch.len() <= 4);
                        runs.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        batch.into_iter().map(|(t, x)| (t, x * 10)).collect()
                    })
                })
            })
            .collect();
        let got: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(got, (0..16).map(|i| i * 10).collect::<Vec<_>>());
        assert!(runs.load(Ordering::Relaxed) >= 4);
    }
}
