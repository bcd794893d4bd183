//! Several engines ("nodes") on one PostgreSQL database: coherence, the staleness bound, concurrent
//! writers, exactly-once maintenance, shared nonces, the leader lease. These always run on
//! PostgreSQL (a throw-away cluster), whatever `KMS_TEST_STORE` says.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use pg_harness::within;

use super::*;
use crate::api::*;
use crate::clock::{ManualClock, DAY};
use crate::crypto::seal::SoftwareRootKey;
use crate::ErrorCode as E;
use crate::Limits;

const T0: i64 = 1_700_000_000;
const LEASE: Duration = Duration::from_millis(500);
/// How long to wait for something that only has to happen eventually (a loaded CI machine).
const SETTLE: Duration = Duration::from_secs(10);

fn owner() -> Caller {
    Caller::owner()
}

/// `n` nodes on one fresh database, sharing one root key and one manual clock.
struct Cluster {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    url: String,
    nodes: Vec<Engine>,
}

fn config() -> EngineConfig {
    EngineConfig { limits: Limits { min_manual_version_interval_secs: 0, ..Limits::default() }, ..Default::default() }
}

fn node_on(url: &str, dir: &Path, clock: Arc<ManualClock>, name: &str) -> Engine {
    let root = SoftwareRootKey::load_or_create(&dir.join("root.key")).unwrap();
    Engine::open(EngineOptions {
        config: config(),
        store: StoreLocation::Postgres(url.to_string()),
        node_id: name.into(),
        store_lease: LEASE,
        protector: Arc::new(root),
        clock,
        token: None,
    })
    .unwrap()
}

fn cluster(n: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let url = pg_harness::fresh_database("shared");
    let nodes = (0..n).map(|i| node_on(&url, dir.path(), clock.clone(), &format!("node-{i}"))).collect();
    Cluster { _dir: dir, clock, url, nodes }
}

fn create_key(e: &Engine) -> String {
    e.create_key(&owner(), CreateKeyRequest::default()).unwrap().key_metadata.key_id
}

fn encrypt(e: &Engine, key: &str) -> Result<EncryptResponse> {
    e.encrypt(
        &owner(),
        EncryptRequest {
            key_id: key.into(),
            plaintext: SecretBytes::from(&b"x"[..]),
            encryption_context: None,
            dry_run: false,
        },
    )
}

#[test]
fn what_one_node_writes_every_node_uses() {
    let c = cluster(3);
    let key = create_key(&c.nodes[0]);
    c.nodes[0].create_alias(&owner(), "alias/shared", &key).unwrap();
    // Node 1 encrypts through the alias, node 2 decrypts. Each follows the feed on its own, so
    // each may see the new key up to the lease later (STORE.md: no read-your-writes across nodes).
    within(SETTLE, || encrypt(&c.nodes[1], "alias/shared").is_ok());
    let blob = encrypt(&c.nodes[1], "alias/shared").unwrap().ciphertext_blob;
    let decrypt = || {
        c.nodes[2].decrypt(
            &owner(),
            DecryptRequest { ciphertext_blob: blob.clone(), encryption_context: None, dry_run: false },
        )
    };
    within(SETTLE, || decrypt().is_ok());
    assert_eq!(decrypt().unwrap().plaintext.expose(), b"x");
    // A node opened later loads everything.
    let late = node_on(&c.url, c._dir.path(), c.clock.clone(), "late");
    assert!(encrypt(&late, &key).is_ok());
}

#[test]
fn a_disabled_key_is_refused_by_every_node_within_the_lease() {
    let c = cluster(3);
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let key = create_key(&c.nodes[0]);
        for n in &c.nodes {
            within(SETTLE, || encrypt(n, &key).is_ok());
        }
        c.nodes[0].disable_key(&owner(), &key).unwrap();
        for n in &c.nodes[1..] {
            // Refused either way: Disabled once the change arrived, or (on a starved machine)
            // ServiceUnavailableTemporary because the node could not confirm its view in time.
            let took = within(LEASE, || {
                encrypt(n, &key).is_err_and(|e| matches!(e.code(), E::Disabled | E::ServiceUnavailableTemporary))
            });
            worst = worst.max(took);
        }
    }
    // Notifications make it far quicker than the bound; the bound is what is asserted.
    assert!(worst <= LEASE, "{worst:?}");
}

#[test]
fn writers_on_three_nodes_keep_versions_and_stages_consistent() {
    let c = cluster(3);
    let key = create_key(&c.nodes[0]);
    crate::engine::tests_shared::create_secret(&c.nodes[0], "db-pass");
    // Every node caches both, so the check below compares caches kept by the feed.
    for n in &c.nodes {
        within(SETTLE, || encrypt(n, &key).is_ok());
        within(SETTLE, || {
            n.describe_secret(&owner(), DescribeSecretRequest { secret_name: "db-pass".into(), ..Default::default() })
                .is_ok()
        });
    }
    let start = Arc::new(Barrier::new(3));
    std::thread::scope(|s| {
        for (i, n) in c.nodes.iter().enumerate() {
            let (key, start) = (key.clone(), start.clone());
            s.spawn(move || {
                start.wait();
                for j in 0..8 {
                    n.create_key_version(&owner(), &key).unwrap();
                    put_secret(n, "db-pass", &format!("n{i}-v{j}"));
                }
            });
        }
    });
    let last = c.nodes.iter().map(|n| n.state.read().applied_seq).max().unwrap();
    for n in &c.nodes {
        within(SETTLE, || n.state.read().applied_seq == last);
        let k = n.cached_key(&key).expect("kept in the cache");
        let versions: Vec<&str> = k.versions.iter().map(|v| v.version_id.as_str()).collect();
        assert_eq!(versions.len(), 1 + 3 * 8, "every version, once");
        let unique: std::collections::HashSet<_> = versions.iter().collect();
        assert_eq!(unique.len(), versions.len());
        assert_eq!(k.primary_version.as_deref(), versions.last().copied(), "the newest is primary");
        let secret = n.cached_secret("db-pass").expect("kept in the cache");
        let sv = &secret.versions;
        assert_eq!(sv.len(), 1 + 3 * 8);
        let current: Vec<_> = sv.iter().filter(|v| v.stages.iter().any(|s| s == "ACSCurrent")).collect();
        let previous: Vec<_> = sv.iter().filter(|v| v.stages.iter().any(|s| s == "ACSPrevious")).collect();
        assert_eq!((current.len(), previous.len()), (1, 1), "exactly one ACSCurrent and one ACSPrevious");
        assert_eq!(current[0].version_id, sv.last().unwrap().version_id);
    }
    // Every node's cache equals what the database holds.
    let stored = c.nodes[0].stored_key(&key).unwrap();
    let stored_secret = c.nodes[0].stored_secret("db-pass").unwrap();
    for n in &c.nodes {
        let k = n.cached_key(&key).unwrap();
        assert_eq!(format!("{:?}", k.versions), format!("{:?}", stored.versions));
        assert_eq!(k.key, stored.key);
        let s = n.cached_secret("db-pass").unwrap();
        assert_eq!(format!("{:?}", s.versions), format!("{:?}", stored_secret.versions));
        assert_eq!(s.secret, stored_secret.secret);
    }
}

#[test]
fn early_decisions_batched_on_every_node_keep_versions_stages_aliases_and_limits() {
    // Four writers on each of three nodes: their early decisions are batched per node and raced
    // across nodes; conflicting ones (one key's versions, one secret's stages, one alias) must be
    // refused by the guard or the batch and decided again, and independent ones (new keys) must
    // stop at the key limit exactly.
    let c = cluster(3);
    let key = create_key(&c.nodes[0]);
    let targets: Vec<String> = (0..3).map(|_| create_key(&c.nodes[0])).collect();
    c.nodes[0].create_alias(&owner(), "alias/moving", &targets[0]).unwrap();
    create_secret(&c.nodes[0], "hot");
    let start = Arc::new(Barrier::new(12));
    let created = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (i, n) in c.nodes.iter().enumerate() {
            for w in 0..4 {
                let (key, targets, start, created) = (key.clone(), targets.clone(), start.clone(), &created);
                s.spawn(move || {
                    start.wait();
                    for j in 0..4 {
                        n.create_key_version(&owner(), &key).unwrap();
                        put_secret(n, "hot", &format!("n{i}-w{w}-v{j}"));
                        n.update_alias(&owner(), "alias/moving", &targets[(i + w + j) % 3]).unwrap();
                    }
                    loop {
                        match n.create_key(&owner(), CreateKeyRequest::default()) {
                            Ok(_) => created.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                            Err(e) if e.code() == E::LimitExceeded => break,
                            Err(e) => panic!("{e}"),
                        };
                    }
                });
            }
        }
    });
    let last = c.nodes.iter().map(|n| n.state.read().applied_seq).max().unwrap();
    let stored = c.nodes[0].stored_key(&key).unwrap();
    let stored_secret = c.nodes[0].stored_secret("hot").unwrap();
    assert_eq!(stored.versions.len(), 1 + 12 * 4, "every version, once");
    let ids: std::collections::HashSet<_> = stored.versions.iter().map(|v| &v.version_id).collect();
    assert_eq!(ids.len(), stored.versions.len());
    assert_eq!(stored.key.primary_version.as_ref(), Some(&stored.versions.last().unwrap().version_id));
    let sv = &stored_secret.versions;
    assert_eq!(sv.len(), 1 + 12 * 4);
    let current = sv.iter().filter(|v| v.stages.iter().any(|s| s == "ACSCurrent")).count();
    let previous = sv.iter().filter(|v| v.stages.iter().any(|s| s == "ACSPrevious")).count();
    assert_eq!((current, previous), (1, 1), "exactly one ACSCurrent and one ACSPrevious");
    let max = Limits::default().max_keys;
    let user_keys = c.nodes[0]
        .reader
        .run(|db| crate::store::rows::first(db, "SELECT count(*) FROM keys WHERE service IS NULL", &[], |r| r.int(0)))
        .unwrap()
        .unwrap() as usize;
    assert_eq!(user_keys, max, "user keys stop at the limit, not past it");
    assert_eq!(created.load(std::sync::atomic::Ordering::Relaxed), max - 1 - 3, "every acknowledged key is there");
    for n in &c.nodes {
        within(SETTLE, || n.state.read().applied_seq == last);
        let k = n.cached_key(&key).expect("kept in the cache");
        assert_eq!(format!("{:?}", k.versions), format!("{:?}", stored.versions), "the cache equals the store");
        let target = n.describe_key(&owner(), "alias/moving").unwrap().key_metadata.key_id;
        assert!(targets.contains(&target));
    }
}

pub(super) fn create_secret(e: &Engine, name: &str) {
    e.create_secret(
        &owner(),
        CreateSecretRequest {
            secret_name: name.into(),
            secret_data: SecretString::new("v0".into()),
            version_id: "v0".into(),
            ..Default::default()
        },
    )
    .unwrap();
}

fn put_secret(e: &Engine, name: &str, version: &str) {
    e.put_secret_value(
        &owner(),
        PutSecretValueRequest {
            secret_name: name.into(),
            version_id: version.into(),
            secret_data: SecretString::new(version.into()),
            secret_data_type: None,
            version_stages: None,
        },
    )
    .unwrap();
}

#[test]
fn each_due_rotation_runs_once_across_nodes() {
    let c = cluster(3);
    let keys: Vec<String> = (0..6).map(|_| create_key(&c.nodes[0])).collect();
    for k in &keys {
        c.nodes[0]
            .update_rotation_policy(
                &owner(),
                UpdateRotationPolicyRequest {
                    key_id: k.clone(),
                    enable_automatic_rotation: true,
                    rotation_interval: Some("604800s".into()),
                },
            )
            .unwrap();
    }
    c.clock.advance(8 * DAY);
    // Every node believes it should run the pass (as when a lease changes hands mid-pass).
    let start = Arc::new(Barrier::new(3));
    let reports: Vec<MaintenanceReport> = std::thread::scope(|s| {
        let hs: Vec<_> = c
            .nodes
            .iter()
            .map(|n| {
                let (start, keys) = (start.clone(), &keys);
                s.spawn(move || {
                    within(SETTLE, || {
                        keys.iter().all(|k| {
                            n.describe_key(&owner(), k).is_ok_and(|d| d.key_metadata.automatic_rotation == "Enabled")
                        })
                    });
                    start.wait();
                    n.run_maintenance()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut rotated: Vec<String> = reports.iter().flat_map(|r| r.rotated.iter().map(|(k, _)| k.clone())).collect();
    rotated.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(rotated, want, "each key rotated exactly once: {reports:?}");
    assert!(keys.iter().all(|k| c.nodes[1].stored_key(k).unwrap().versions.len() == 2));
}

#[test]
fn a_nonce_claimed_on_one_node_is_a_replay_on_another() {
    let c = cluster(2);
    c.nodes[0].claim_nonce("AK", "nonce-1", T0 + 900).unwrap();
    let e = c.nodes[1].claim_nonce("AK", "nonce-1", T0 + 900).unwrap_err();
    assert_eq!(e.code(), E::SignatureNonceUsed);
    c.nodes[1].claim_nonce("AK", "nonce-2", T0 + 900).unwrap();
}

#[test]
fn one_leader_at_a_time_and_the_lease_moves_when_it_stops_renewing() {
    let c = cluster(2);
    assert!(c.nodes[0].lead_maintenance());
    assert!(!c.nodes[1].lead_maintenance(), "the lease is held");
    assert!(c.nodes[0].lead_maintenance(), "renewal by the holder");
    // Node 0 stops renewing (dies): node 1 leads once the lease expires on the database clock.
    let took = within(Duration::from_secs(LEASE_SECS as u64 + 2), || c.nodes[1].lead_maintenance());
    assert!(took >= Duration::from_secs(LEASE_SECS as u64 - 1), "not before the lease ran out: {took:?}");
    assert!(!c.nodes[0].lead_maintenance());
}

#[test]
fn a_node_that_loses_the_database_refuses_then_recovers() {
    // An owned cluster: this test stops the server.
    let pg = pg_harness::Cluster::start(&[]).unwrap();
    let url = pg.create_database("kms").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let a = node_on(&url, dir.path(), clock.clone(), "a");
    let key = create_key(&a);
    assert!(encrypt(&a, &key).is_ok());
    pg.kill9();
    // Crypto keeps working from the cache for at most the lease, then is refused retriably.
    let refused = within(LEASE + Duration::from_millis(300), || {
        encrypt(&a, &key).is_err_and(|e| e.code() == E::ServiceUnavailableTemporary)
    });
    assert!(refused >= LEASE / 2, "served from the cache until it was stale: {refused:?}");
    let e = a.create_key(&owner(), CreateKeyRequest::default()).unwrap_err();
    assert_eq!(e.code(), E::ServiceUnavailableTemporary, "{e}");
    pg.restart().unwrap();
    within(Duration::from_secs(10), || encrypt(&a, &key).is_ok());
    // Nothing acknowledged was lost, and writes work again.
    let b = node_on(&url, dir.path(), clock, "b");
    assert!(encrypt(&b, &key).is_ok());
    create_key(&a);
}

#[test]
fn a_killed_feed_connection_catches_up_or_refuses() {
    let c = cluster(2);
    let key = create_key(&c.nodes[0]);
    within(SETTLE, || encrypt(&c.nodes[1], &key).is_ok());
    let db = c.url.rsplit('/').next().unwrap().to_string();
    for _ in 0..5 {
        // Every LISTEN connection of this database is cut, then the key is disabled at once.
        pg_harness::shared()
            .sql(
                "postgres",
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE 'LISTEN%'"
                ),
            )
            .unwrap();
        c.nodes[0].disable_key(&owner(), &key).unwrap();
        within(LEASE, || encrypt(&c.nodes[1], &key).is_err());
        c.nodes[0].enable_key(&owner(), &key).unwrap();
        within(SETTLE, || encrypt(&c.nodes[1], &key).is_ok());
    }
}

#[test]
fn a_url_that_requires_tls_is_refused_not_downgraded() {
    let url = pg_harness::fresh_database("tls");
    let sep = if url.contains('?') { '&' } else { '?' };
    let e = match Store::open(&StoreLocation::Postgres(format!("{url}{sep}sslmode=require"))) {
        Ok(_) => panic!("opened without TLS although the URL requires it"),
        Err(e) => e,
    };
    assert!(matches!(&e, StoreOpenError::Unreachable(m) if m.contains("TLS")), "{e}");
}

#[test]
fn writers_whose_connections_are_cut_mid_write_neither_lose_nor_double_a_key() {
    // Three nodes create keys while another session keeps terminating whichever writer backend
    // is committing (mid-COMMIT, mid-pipeline). A call that succeeded must have its key stored;
    // a call that failed must not have one: a broken write is looked up before it is answered.
    let c = cluster(3);
    let db = c.url.rsplit('/').next().unwrap().to_string();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acked, failed) = (Mutex::new(Vec::new()), std::sync::atomic::AtomicUsize::new(0));
    let cut = std::thread::scope(|s| {
        for n in &c.nodes {
            let (stop, acked, failed) = (&stop, &acked, &failed);
            s.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match n.create_key(&owner(), CreateKeyRequest::default()) {
                        Ok(r) => acked.lock().push(r.key_metadata.key_id),
                        Err(e) if e.code() == E::LimitExceeded => break,
                        Err(e) => {
                            assert_eq!(e.code(), E::ServiceUnavailableTemporary, "{e}");
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let mut cut = 0;
        for _ in 0..80 {
            std::thread::sleep(Duration::from_millis(10));
            cut += pg_harness::shared()
                .sql(
                    "postgres",
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                          WHERE datname = '{db}' AND state = 'active' AND query LIKE '%COMMIT%'"
                    ),
                )
                .unwrap()
                .len();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        cut
    });
    let acked = acked.into_inner();
    let stored = c.nodes[0]
        .reader
        .run(|db| crate::store::rows::first(db, "SELECT count(*) FROM keys WHERE service IS NULL", &[], |r| r.int(0)))
        .unwrap()
        .unwrap() as usize;
    for id in &acked {
        assert!(c.nodes[0].stored_key(id).is_some(), "acknowledged key {id} lost");
    }
    eprintln!(
        "{cut} writer backends cut; {} keys acknowledged, {} calls failed, {stored} keys stored",
        acked.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(acked.len() > 20);
    assert_eq!(stored, acked.len(), "a failed call left a key behind (or an acknowledged one is missing)");
}

/// A CA and a server certificate for 127.0.0.1 made with the `openssl` CLI, readable by the
/// server (owned by `postgres` when the tests run as root).
fn server_certificates(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let s = |p: &std::path::PathBuf| p.to_str().unwrap().to_string();
    let (ca_key, ca, key, csr, crt, ext) =
        (p("ca.key"), p("ca.pem"), p("server.key"), p("server.csr"), p("server.crt"), p("ext"));
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", &s(&ca_key), "-out", &s(&ca), "-days", "1", "-subj", "/CN=kms test CA"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", &s(&key), "-out", &s(&csr), "-subj", "/CN=127.0.0.1"]].concat());
    run(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-out",
        &s(&crt),
        "-days",
        "1",
        "-extfile",
        &s(&ext),
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        let _ = std::process::Command::new("chown").arg("postgres:").arg(&key).arg(&crt).status();
    }
    (ca, crt, key)
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[test]
fn tls_to_postgres_verifies_the_server_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, crt, key) = server_certificates(certs.path(), "good");
    let (other_ca, _, _) = server_certificates(certs.path(), "other");
    let pg = pg_harness::Cluster::start(&[
        "ssl = on",
        &format!("ssl_cert_file = '{}'", crt.display()),
        &format!("ssl_key_file = '{}'", key.display()),
    ])
    .unwrap();
    let url = pg.create_database("kms").unwrap();
    // The right CA: an engine works over TLS, and every one of its sessions is encrypted.
    let tls_url = format!("{url}?sslmode=require&sslrootcert={}&application_name=kms-tls", ca.display());
    let dir = tempfile::tempdir().unwrap();
    let e = node_on(&tls_url, dir.path(), Arc::new(ManualClock::new(T0)), "tls");
    let key_id = create_key(&e);
    assert!(encrypt(&e, &key_id).is_ok());
    let plain = pg
        .sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.application_name = 'kms-tls' AND NOT s.ssl",
        )
        .unwrap();
    let sessions =
        pg.sql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kms-tls'").unwrap();
    assert_eq!(plain, ["0"], "every session over TLS");
    assert_ne!(sessions, ["0"]);
    // A server whose certificate another CA signed is refused.
    let wrong = format!("{url}?sslmode=require&sslrootcert={}", other_ca.display());
    let err = match Store::open(&StoreLocation::Postgres(wrong)) {
        Ok(_) => panic!("connected to a server the CA did not vouch for"),
        Err(e) => e,
    };
    assert!(matches!(&err, StoreOpenError::Unreachable(m) if m.contains("certificate")), "{err}");
}

#[test]
fn a_secret_directory_built_while_another_node_writes_agrees_with_the_store() {
    use crate::store::reads::SecretCond;
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = cluster(2);
    let create = |e: &Engine, name: String, team: &str| {
        e.create_secret(
            &owner(),
            CreateSecretRequest {
                secret_name: name,
                secret_data: SecretString::new("v".into()),
                version_id: "v1".into(),
                tags: Some(format!(r#"[{{"TagKey":"team","TagValue":"{team}"}}]"#)),
                ..Default::default()
            },
        )
        .unwrap();
    };
    // Enough that reading them all takes a while.
    for i in 0..600 {
        create(&c.nodes[0], format!("pre-{i}"), "a");
    }
    let stop = AtomicBool::new(false);
    let filter = r#"[{"Key":"SecretName","Values":["-"]},{"Key":"TagValue","Values":["b"]}]"#;
    let conds = [SecretCond::NameContains(vec!["-".into()]), SecretCond::TagValue(vec!["b".into()])];
    let list = |e: &Engine| {
        let r = e
            .list_secrets(
                &owner(),
                ListSecretsRequest { filters: Some(filter.into()), page_size: Some(100), ..Default::default() },
            )
            .unwrap();
        (r.secret_list.secret.into_iter().map(|s| s.secret_name).collect::<Vec<_>>(), r.total_count as u64)
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let e = &c.nodes[0];
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                create(e, format!("w-{i}"), if i % 2 == 0 { "b" } else { "a" });
                if i % 3 == 0 {
                    let req = DeleteSecretRequest {
                        secret_name: format!("pre-{}", i % 600),
                        force_delete_without_recovery: Some(true),
                        ..Default::default()
                    };
                    e.delete_secret(&owner(), req).unwrap();
                }
                if i % 5 == 0 {
                    let req = TagResourceRequest {
                        secret_name: Some(format!("pre-{}", (i + 1) % 600)),
                        tags: r#"[{"TagKey":"team","TagValue":"b"}]"#.into(),
                        ..Default::default()
                    };
                    // The secret may be gone already.
                    let _ = e.tag_resource(&owner(), req);
                }
                i += 1;
            }
        });
        // Built again until a build had lists to apply on top of its snapshot (writes committed
        // while it read); that one is kept and must end up current.
        std::thread::sleep(Duration::from_millis(300));
        let mut caught_up = 0;
        for _ in 0..200 {
            c.nodes[1].state.write().forget_directory();
            list(&c.nodes[1]);
            caught_up = c.nodes[1].state.read().directory_catch_up;
            if caught_up > 0 {
                break;
            }
        }
        stop.store(true, Ordering::Release);
        assert!(caught_up > 0, "no build overlapped a write");
    });
    let last = c.nodes[0].state.read().applied_seq;
    within(SETTLE, || c.nodes[1].state.read().applied_seq >= last);
    let (names, total) = c.nodes[1].stored_secret_page(&conds, 0, 100);
    assert!(total > 5, "the writes made matches ({total})");
    assert_eq!(list(&c.nodes[1]), (names, total));
}
