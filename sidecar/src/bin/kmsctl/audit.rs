//! `kmsctl audit verify|query`: the audit trail read and checked offline.

use crate::args::AuditCmd;

pub fn audit(cmd: &AuditCmd) -> Result<(), String> {
    use kms_sidecar::audit;
    let default_dir = || kms_sidecar::config::default_data_dir().join("audit");
    match cmd {
        AuditCmd::Verify { config, data_dir, dir, allow_pruned } => {
            let mut cfg = match config {
                Some(p) => kms_sidecar::config::Config::load(p)?,
                None => kms_sidecar::config::Config::default(),
            };
            if let Some(d) = data_dir {
                cfg.data_dir = Some(d.clone());
            }
            if let Some(d) = dir {
                cfg.audit.dir = Some(d.clone());
            }
            let r = audit::verify_configured(&cfg, *allow_pruned)?;
            for f in &r.findings {
                println!("{f}");
            }
            let anchored = match r.anchored_seq {
                Some(a) => format!("anchored at seq {a}, {} newer events not yet anchored", r.unanchored),
                None => "never anchored".into(),
            };
            let pruned = r.pruned_before.map(|p| format!("; events before {p} pruned")).unwrap_or_default();
            let legacy = match r.legacy_events {
                0 => String::new(),
                n => format!("; {n} events from before lines were keyed (hash-chained only)"),
            };
            let summary = format!(
                "{} events in {} files; head seq {} mac {}; {anchored}{pruned}{legacy}",
                r.events, r.files, r.last_seq, r.last_mac
            );
            if r.ok() {
                println!("audit log OK: {summary}");
                Ok(())
            } else {
                Err(format!("audit log BROKEN: {} findings; {summary}", r.findings.len()))
            }
        }
        AuditCmd::Query { dir, since, until, principal, action, key } => {
            let dir = dir.clone().unwrap_or_else(default_dir);
            let q = audit::Query {
                since: since.clone(),
                until: until.clone(),
                principal: principal.clone(),
                action: action.clone(),
                resource: key.clone(),
            };
            for e in audit::query(&dir, &q)? {
                println!("{}", serde_json::to_string(&e).unwrap());
            }
            Ok(())
        }
    }
}
