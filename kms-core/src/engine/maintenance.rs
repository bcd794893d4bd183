//! Background work: automatic rotation and the deletion of keys whose window has passed. One pass
//! is [`Engine::run_maintenance`], safe to call at any time (tests call it after moving a manual
//! clock); [`Engine::spawn_maintenance`] runs passes periodically on a thread.
//!
//! On a shared store only the node holding the `maintenance` lease runs passes. The lease is a
//! row timed by the database's clock, renewed every second for [`LEASE_SECS`]; a dead leader's
//! lease passes to another node within that. Each job is exactly-once regardless: it is a
//! mutation, re-checked under the store's write lock on caught-up state, so a job two nodes both
//! attempt (a lease that changed hands mid-pass) is done by the first and found not due by the
//! second.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::view::View;
use super::Engine;
use crate::model::{KeyState, Origin, ProtectionLevel};
use crate::store::Change;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// `(key id, new version id)` for each rotation.
    pub rotated: Vec<(String, String)>,
    pub deleted: Vec<String>,
    /// Keys whose imported material expired (and was deleted).
    pub material_expired: Vec<String>,
    /// Import tokens past their 24 hours, forgotten.
    pub tokens_purged: usize,
    /// Secrets whose recovery window ended.
    pub secrets_purged: Vec<String>,
    /// Steps that failed (they are retried on the next pass).
    pub failures: usize,
}

impl Engine {
    pub fn run_maintenance(&self) -> MaintenanceReport {
        let mut report = MaintenanceReport::default();
        let now = self.now();
        // What is due is read from the store (each job is re-checked under the write lock).
        let due = match View::new(self, Default::default()).due(now) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "maintenance could not read what is due");
                report.failures += 1;
                return report;
            }
        };
        let (due_rotation, due_deletion) = (due.rotation, due.deletion);
        let (due_expiry, due_tokens, due_secrets) = (due.material_expiry, due.import_tokens, due.secret_purge);
        for id in due_rotation {
            // Re-checked under the writer lock: the key may have changed since the scan.
            let r = self.mutate(|st, now| match st.key(&id)?.filter(|k| rotation_due(k, now)) {
                Some(k) => {
                    let (changes, v) = self.rotation_changes(&k, now)?;
                    Ok((changes, Some(v.version_id)))
                }
                None => Ok((Vec::new(), None)),
            });
            match r {
                Ok(Some(v)) => {
                    tracing::info!(key_id = %id, version = %v, "key rotated automatically");
                    report.rotated.push((id, v));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(key_id = %id, error = %e, "automatic rotation failed");
                    report.failures += 1;
                }
            }
        }
        for id in due_deletion {
            let mut token_objects = Vec::new();
            let r = self.mutate(|st, now| match st.key(&id)?.filter(|k| deletion_due(k, now)) {
                Some(k) => {
                    if k.protection == ProtectionLevel::Hsm {
                        token_objects = k.versions.iter().filter_map(|v| super::hsm::record_label(&v.sealed)).collect();
                    }
                    Ok((vec![Change::DeleteKey(id.clone())], true))
                }
                None => Ok((Vec::new(), false)),
            });
            match r {
                Ok(true) => {
                    tracing::info!(key_id = %id, "key deleted after its pending window");
                    // The store no longer names them; destroy the token objects too.
                    self.destroy_token_objects(&id, &token_objects);
                    report.deleted.push(id);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(key_id = %id, error = %e, "key deletion failed");
                    report.failures += 1;
                }
            }
        }
        let (expired, purged) = self.expire_imports(due_expiry, due_tokens);
        report.material_expired = expired;
        report.tokens_purged = purged;
        report.secrets_purged = self.purge_secrets(due_secrets);
        if let Err(e) = self.store().purge_nonces(now) {
            tracing::warn!(error = %e, "purging expired request nonces failed");
            report.failures += 1;
        }
        if let Err(e) = self.store().prune_changes() {
            tracing::warn!(error = %e, "pruning the change feed failed");
            report.failures += 1;
        }
        report
    }

    /// Takes or renews the maintenance lease; `true` while this node holds it (always on an
    /// unshared store).
    pub fn lead_maintenance(&self) -> bool {
        match self.store().lead("maintenance", &self.node_id, LEASE_SECS) {
            Ok(leader) => leader,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the maintenance lease");
                false
            }
        }
    }

    /// Runs [`Engine::run_maintenance`] every `every` (while this node leads) until the handle is
    /// dropped.
    pub fn spawn_maintenance(self: &Arc<Self>, every: Duration) -> MaintenanceHandle {
        let (stop, stopped) = mpsc::channel::<()>();
        let engine = Arc::downgrade(self);
        let tick = every.min(RENEW_EVERY);
        let thread = std::thread::Builder::new()
            .name("kms-maintenance".into())
            .spawn(move || {
                let mut last_pass = Instant::now();
                let mut leading = false;
                loop {
                    match stopped.recv_timeout(tick) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let Some(e) = engine.upgrade() else { return };
                    let lead = e.lead_maintenance();
                    if lead != leading {
                        tracing::info!(node = %e.node_id, leading = lead, "maintenance lease");
                        leading = lead;
                    }
                    if lead && last_pass.elapsed() >= every {
                        last_pass = Instant::now();
                        e.run_maintenance();
                    }
                }
            })
            .expect("spawn maintenance thread");
        MaintenanceHandle { stop: Some(stop), thread: Some(thread) }
    }
}

/// How long a maintenance lease lasts without renewal.
pub const LEASE_SECS: u32 = 5;
const RENEW_EVERY: Duration = Duration::from_secs(1);

fn rotation_due(k: &crate::model::KeyRecord, now: i64) -> bool {
    k.state == KeyState::Enabled
        && k.origin == Origin::AliyunKms
        && k.spec.is_symmetric()
        && k.next_rotation().is_some_and(|t| now >= t)
}

fn deletion_due(k: &crate::model::KeyRecord, now: i64) -> bool {
    k.state == KeyState::PendingDeletion && k.delete_date.is_some_and(|t| now >= t)
}

/// Stops the maintenance thread when dropped.
pub struct MaintenanceHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
