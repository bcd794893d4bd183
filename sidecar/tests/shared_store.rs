//! Three real `kms-sidecar` processes on one real PostgreSQL (Debian's server, a throw-away
//! cluster): one KMS. Keys and secrets made through one node work on the others; a disabled key
//! is refused by every node within the lease, under load (the propagation histogram is printed);
//! a request replayed against another node is refused; PostgreSQL killed and restarted under load
//! fails requests cleanly and loses nothing acknowledged; a killed leader's lease moves; and a
//! streaming replica promoted after the primary is killed takes over behind a multi-host URL with
//! every acknowledged synchronous write present.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_harness::within;

use common::{start_nodes, start_nodes_with, Sidecar, OWNER_ID, OWNER_SECRET};
use kms_client::client::{Client, ClientConfig, ClientError};
use serde_json::Value;

/// The sidecars' default lease (`[store] lease_ms`).
const LEASE: Duration = Duration::from_millis(2000);
/// How long to wait for what only has to happen eventually (a loaded CI machine).
const SETTLE: Duration = Duration::from_secs(15);

fn client(n: &Sidecar) -> Client {
    let mut cfg = ClientConfig::with_key(&format!("http://{}", n.http), OWNER_ID, OWNER_SECRET);
    cfg.timeout = Duration::from_secs(10);
    Client::new(cfg).unwrap()
}

fn call(c: &Client, action: &str, params: &[(&str, &str)]) -> Result<Value, ClientError> {
    c.call_params(action, params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn create_key(c: &Client) -> Result<String, ClientError> {
    Ok(call(c, "CreateKey", &[])?["KeyMetadata"]["KeyId"].as_str().unwrap().to_string())
}

fn encrypt(c: &Client, key: &str) -> Result<String, ClientError> {
    Ok(call(c, "Encrypt", &[("KeyId", key), ("Plaintext", "aGVsbG8=")])?["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn three_sidecars_are_one_kms() {
    if !pg_harness::available() {
        panic!("PostgreSQL server binaries are needed (bash .ci/setup installs postgresql)");
    }
    let url = pg_harness::fresh_database("sidecars");
    let n = start_nodes(&url, 3);
    let [a, b, c] = [client(&n.nodes[0]), client(&n.nodes[1]), client(&n.nodes[2])];

    // Made on A, used on B and C: keys, aliases, secrets.
    let key = create_key(&a).unwrap();
    call(&a, "CreateAlias", &[("AliasName", "alias/app"), ("KeyId", &key)]).unwrap();
    within(SETTLE, || encrypt(&b, "alias/app").is_ok());
    let blob = encrypt(&b, "alias/app").unwrap();
    // C follows the feed on its own: it may see the key up to the lease after B (STORE.md).
    within(SETTLE, || call(&c, "Decrypt", &[("CiphertextBlob", &blob)]).is_ok());
    let pt = call(&c, "Decrypt", &[("CiphertextBlob", &blob)]).unwrap();
    assert_eq!(pt["Plaintext"], "aGVsbG8=");
    call(&b, "CreateSecret", &[("SecretName", "db"), ("SecretData", "pw-1"), ("VersionId", "v1")]).unwrap();
    within(SETTLE, || call(&c, "GetSecretValue", &[("SecretName", "db")]).is_ok_and(|v| v["SecretData"] == "pw-1"));

    // A request captured on its way to A is refused by B: the nonce store is shared.
    let other = create_key(&a).unwrap();
    let captured = common::signed_v1("DisableKey", &[("KeyId", &other)], OWNER_ID, OWNER_SECRET);
    assert_eq!(common::post_form(&n.nodes[0].http, &captured).0, 200);
    call(&a, "EnableKey", &[("KeyId", &other)]).unwrap();
    let (status, body) = common::post_form(&n.nodes[1].http, &captured);
    assert_eq!((status, body["Code"].as_str()), (400, Some("SignatureNonceUsed")), "replayed on another node");
    within(SETTLE, || encrypt(&c, &other).is_ok());

    // Disable propagation while B and C serve load on another key.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(Mutex::new(0u64));
    let load: Vec<_> = [1usize, 2, 1, 2]
        .iter()
        .map(|&i| {
            let (c, key, stop, served) = (client(&n.nodes[i]), key.clone(), stop.clone(), served.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    encrypt(&c, &key).unwrap();
                    *served.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    let mut took = Vec::new();
    for _ in 0..15 {
        let k = create_key(&a).unwrap();
        within(SETTLE, || encrypt(&b, &k).is_ok() && encrypt(&c, &k).is_ok());
        call(&a, "DisableKey", &[("KeyId", &k)]).unwrap();
        let disabled_at = Instant::now();
        for node in [&b, &c] {
            within(LEASE, || {
                // Disabled once the change arrived; ServiceUnavailableTemporary if the node could
                // not confirm its view in time (a starved machine). Never a success.
                encrypt(node, &k)
                    .is_err_and(|e| matches!(e.code(), Some("Rejected.Disabled" | "ServiceUnavailableTemporary")))
            });
            took.push(disabled_at.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    took.sort();
    eprintln!(
        "disable propagation over {} observations under load ({} Encrypts served): p50 {:?} p99 {:?} max {:?} (lease {:?})",
        took.len(),
        served.lock().unwrap(),
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().unwrap(),
        LEASE
    );
    assert!(*took.last().unwrap() <= LEASE);
}

#[test]
fn postgres_killed_under_load_fails_cleanly_and_loses_nothing_acknowledged() {
    let pg = pg_harness::Cluster::start(&[]).unwrap();
    let url = pg.create_database("kms").unwrap();
    // Three writers create keys for as long as the crash and the restart take; a fast machine
    // makes more than the default 200-key limit, which is not what this test is about.
    let n = start_nodes_with(&url, 3, Some("[engine.limits]\nmax_keys = 1000000\n"));
    let key = create_key(&client(&n.nodes[0])).unwrap();
    within(SETTLE, || n.nodes.iter().all(|s| encrypt(&client(s), &key).is_ok()));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let codes = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (c, key, acked, codes, stop) =
                (client(&n.nodes[i]), key.clone(), acked.clone(), codes.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for r in [create_key(&c).map(Some), encrypt(&c, &key).map(|_| None)] {
                        match r {
                            Ok(Some(id)) => acked.lock().unwrap().push(id),
                            Ok(None) => {}
                            Err(e) => {
                                let code = e.code().unwrap_or("transport").to_string();
                                *codes.lock().unwrap().entry(code).or_default() += 1;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    pg.kill9();
    std::thread::sleep(LEASE + Duration::from_millis(500));
    // Down for longer than the lease: every node refuses, retriably.
    for s in &n.nodes {
        let e = encrypt(&client(s), &key).unwrap_err();
        assert_eq!(e.code(), Some("ServiceUnavailableTemporary"), "{e}");
    }
    pg.restart().unwrap();
    for s in &n.nodes {
        // Back within 15 s; if not, say what the node still answers.
        let t0 = Instant::now();
        let c = client(s);
        while let Some(e) = encrypt(&c, &key).err().or_else(|| create_key(&c).err()) {
            assert!(t0.elapsed() < Duration::from_secs(15), "node at {} not back after the restart: {e}", s.http);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let codes = codes.lock().unwrap().clone();
    assert!(codes.keys().all(|c| c == "ServiceUnavailableTemporary"), "only retriable refusals: {codes:?}");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10);
    let c = client(&n.nodes[1]);
    for id in &acked {
        call(&c, "DescribeKey", &[("KeyId", id)]).unwrap_or_else(|e| panic!("acknowledged key {id} lost: {e}"));
    }
    eprintln!("{} keys acknowledged around the crash, all present; refusals: {codes:?}", acked.len());
}

#[test]
fn a_killed_leader_hands_its_lease_to_another_node() {
    let url = pg_harness::fresh_database("leader");
    let mut n = start_nodes(&url, 3);
    let db = url.rsplit('/').next().unwrap().to_string();
    let holder = || {
        pg_harness::shared()
            .sql(&db, "SELECT holder FROM kms_leases WHERE name = 'maintenance' AND expires_at > now()")
            .unwrap()
    };
    within(Duration::from_secs(5), || !holder().is_empty());
    let leader = holder()[0].clone();
    let i: usize = leader.strip_prefix("node-").unwrap().parse().unwrap();
    let killed_at = Instant::now();
    let _ = n.nodes.remove(i).kill9();
    within(Duration::from_secs(kms_core::engine::LEASE_SECS as u64 + 3), || {
        holder().first().is_some_and(|h| *h != leader)
    });
    eprintln!("lease moved from {leader} to {} {:?} after the kill", holder()[0], killed_at.elapsed());
}

#[test]
fn a_promoted_replica_takes_over_with_every_acknowledged_write() {
    let primary = pg_harness::Cluster::start(&["synchronous_commit = on"]).unwrap();
    primary.create_database("kms").unwrap();
    let replica = primary.replica().unwrap();
    // Synchronous replication, as a production setup would have it: a commit is acknowledged
    // only once the standby has it.
    primary.sql("postgres", "ALTER SYSTEM SET synchronous_standby_names = 'replica1'").unwrap();
    primary.sql("postgres", "SELECT pg_reload_conf()").unwrap();
    within(Duration::from_secs(20), || {
        primary
            .sql("postgres", "SELECT sync_state FROM pg_stat_replication")
            .unwrap()
            .first()
            .is_some_and(|s| s == "sync")
    });
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/kms?target_session_attrs=read-write&connect_timeout=2",
        primary.port(),
        replica.port()
    );
    let n = start_nodes(&url, 2);
    let [a, b] = [client(&n.nodes[0]), client(&n.nodes[1])];
    let mut acked = Vec::new();
    for _ in 0..20 {
        acked.push(create_key(&a).unwrap());
    }
    call(&b, "CreateSecret", &[("SecretName", "s"), ("SecretData", "v"), ("VersionId", "v1")]).unwrap();
    primary.kill9();
    replica.promote().unwrap();
    let failed_over = Instant::now();
    within(Duration::from_secs(20), || create_key(&a).is_ok() && create_key(&b).is_ok());
    eprintln!("writes resumed {:?} after the promotion", failed_over.elapsed());
    for id in &acked {
        call(&b, "DescribeKey", &[("KeyId", id)])
            .unwrap_or_else(|e| panic!("acknowledged key {id} lost in failover: {e}"));
        encrypt(&a, id).unwrap();
    }
    call(&a, "GetSecretValue", &[("SecretName", "s")]).unwrap();
}

/// One call in the request log: which node, when it was sent and answered (since the test's
/// start), and how it ended.
#[derive(Debug, Clone)]
struct Logged {
    node: usize,
    key: usize,
    sent: Duration,
    answered: Duration,
    ok: bool,
}

#[test]
fn history_no_crypto_call_succeeds_after_disable_plus_lease() {
    // Keys are disabled one after another, through every node in turn, while six clients (two
    // per node) encrypt under all of them. The checker then reads the log: an Encrypt sent more
    // than the lease after a DisableKey was acknowledged must have failed, whichever node
    // served it. It also reports how stale the latest success after a disable was.
    const KEYS: usize = 24;
    let url = pg_harness::fresh_database("history");
    let n = start_nodes(&url, 3);
    let a = client(&n.nodes[0]);
    let keys: Vec<String> = (0..KEYS).map(|_| create_key(&a).unwrap()).collect();
    for s in &n.nodes {
        let c = client(s);
        within(SETTLE, || keys.iter().all(|k| encrypt(&c, k).is_ok()));
    }
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<Logged>::new()));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let node = w % 3;
            let (c, keys, stop, log) = (client(&n.nodes[node]), keys.clone(), stop.clone(), log.clone());
            std::thread::spawn(move || {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 7 + 3) % KEYS;
                    let sent = t0.elapsed();
                    let r = encrypt(&c, &keys[i]);
                    if let Err(e) = &r {
                        let code = e.code().unwrap_or("transport");
                        assert!(
                            matches!(code, "Rejected.Disabled" | "ServiceUnavailableTemporary"),
                            "unexpected refusal {e}"
                        );
                    }
                    let answered = t0.elapsed();
                    log.lock().unwrap().push(Logged { node, key: i, sent, answered, ok: r.is_ok() });
                }
            })
        })
        .collect();
    let mut disabled = vec![None; KEYS];
    for (i, key) in keys.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(60));
        call(&client(&n.nodes[i % 3]), "DisableKey", &[("KeyId", key)]).unwrap();
        disabled[i] = Some(t0.elapsed());
    }
    std::thread::sleep(LEASE + Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    let log = log.lock().unwrap();
    let mut stalest = Duration::ZERO;
    let (mut after, mut refused) = (0, 0);
    for e in log.iter() {
        let acked = disabled[e.key].expect("every key was disabled");
        if e.sent <= acked {
            continue;
        }
        after += 1;
        if e.ok {
            stalest = stalest.max(e.answered - acked);
            assert!(
                e.sent <= acked + LEASE,
                "node {} encrypted under disabled key {} {:?} after the disable was acknowledged (lease {LEASE:?})",
                e.node,
                e.key,
                e.sent - acked
            );
        } else {
            refused += 1;
        }
    }
    eprintln!(
        "history: {} calls logged, {after} sent after their key's disable ({refused} refused); \
         latest success after a disable answered {stalest:?} after it (lease {LEASE:?})",
        log.len()
    );
    assert!(after > 100, "the log must cover calls after the disables");
}
