//! `kms-loadgen`: signs every request (a fresh nonce each) and drives Encrypt, Decrypt and
//! GenerateDataKey at several concurrencies against the sidecar and against a bare hyper server
//! that answers a fixed JSON body of the same size, then prints both and the ratio.
//!
//! `kms-loadgen bare --listen ADDR --body-bytes N` runs the bare server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kms_bench::cpu::{MachineCpu, ProcessCpu};
use kms_client::sign;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// A sidecar and the access key to sign with.
#[derive(clap::Args)]
struct Target {
    #[arg(long)]
    sidecar: String,
    #[arg(long)]
    access_key_id: String,
    #[arg(long)]
    access_key_secret: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// The HTTP ceiling: a hyper server that reads the request and answers a fixed JSON body.
    Bare {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        body_bytes: usize,
    },
    /// Load both servers and print the comparison.
    Run {
        #[arg(long)]
        sidecar: String,
        #[arg(long)]
        bare: String,
        #[arg(long)]
        access_key_id: String,
        #[arg(long)]
        access_key_secret: String,
        #[arg(long, default_value = "1,4,16")]
        concurrency: String,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// The sidecar's secrets agent (host:port), to measure GetSecretValue through it too.
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        agent_token: Option<String>,
        /// The sidecar's and the bare server's process ids: with both, each cell also prints the
        /// server's CPU time per request (from /proc), which does not depend on how the scheduler
        /// split the cores between the load generator and the server.
        #[arg(long)]
        sidecar_pid: Option<u32>,
        #[arg(long)]
        bare_pid: Option<u32>,
        /// Only these rows (comma-separated names as printed, e.g. `Encrypt,GetSecretValue`;
        /// `agent` for the agent's; `ping` for GET /ping, the HTTP layer alone, which only runs
        /// when named): for profiling or an A/B of one cell.
        #[arg(long)]
        ops: Option<String>,
    },
    /// Encrypt as the owner (no policy) and as a user with a policy, side by side.
    Policy {
        #[arg(long)]
        sidecar: String,
        #[arg(long)]
        owner_id: String,
        #[arg(long)]
        owner_secret: String,
        #[arg(long)]
        user_id: String,
        #[arg(long)]
        user_secret: String,
        #[arg(long, default_value = "1,4,16")]
        concurrency: String,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Signed Encrypt for a long time, sampling the sidecar's RSS: replay protection must hold in
    /// bounded memory. Fails when the last third's peak exceeds the first third's by > 10 % + 4 MB.
    Soak {
        #[command(flatten)]
        target: Target,
        /// The sidecar's process id (its RSS is read from /proc).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 600.0)]
        seconds: f64,
        #[arg(long, default_value_t = 30.0)]
        sample_seconds: f64,
    },
    /// One sidecar on SQLite next to three on one PostgreSQL: crypto per node, CreateKey and
    /// PutSecretValue aggregate, and how long a DisableKey on one node takes to reach another.
    Store {
        /// The sidecar on the embedded SQLite store.
        #[arg(long)]
        sqlite: String,
        /// The sidecars sharing one PostgreSQL, comma-separated.
        #[arg(long)]
        nodes: String,
        #[arg(long)]
        access_key_id: String,
        #[arg(long)]
        access_key_secret: String,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 200)]
        propagation_samples: usize,
        /// Which cells to run: any of `crypto`, `writes`, `propagation` (comma-separated); one
        /// write row alone: `createkey`, `psv`, `psv-one`.
        #[arg(long, default_value = "crypto,writes,propagation")]
        cells: String,
    },
    /// Print the size of a GenerateDataKey answer (to size the bare body).
    Probe {
        #[command(flatten)]
        target: Target,
    },
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        match args.cmd {
            Cmd::Bare { listen, body_bytes } => bare(listen, body_bytes).await,
            Cmd::Run {
                sidecar,
                bare,
                access_key_id,
                access_key_secret,
                concurrency,
                seconds,
                agent,
                agent_token,
                sidecar_pid,
                bare_pid,
                ops,
            } => {
                let creds = Arc::new((access_key_id, access_key_secret));
                let conc: Vec<usize> = concurrency.split(',').map(|c| c.trim().parse().unwrap()).collect();
                let agent = agent.zip(agent_token);
                let pids = sidecar_pid.zip(bare_pid);
                let only: Option<Vec<String>> = ops.map(|o| o.split(',').map(|s| s.trim().to_string()).collect());
                let extra = RunExtras { agent, pids, only };
                run(sidecar, bare, creds, conc, Duration::from_secs_f64(seconds), extra).await
            }
            Cmd::Store {
                sqlite,
                nodes,
                access_key_id,
                access_key_secret,
                concurrency,
                seconds,
                propagation_samples,
                cells,
            } => {
                let creds = Arc::new((access_key_id, access_key_secret));
                let nodes: Vec<String> = nodes.split(',').map(str::to_string).collect();
                let cells: Vec<&str> = cells.split(',').map(str::trim).collect();
                let dur = Duration::from_secs_f64(seconds);
                store_bench(sqlite, nodes, creds, concurrency, dur, propagation_samples, &cells).await
            }
            Cmd::Policy { sidecar, owner_id, owner_secret, user_id, user_secret, concurrency, seconds } => {
                let owner = Arc::new((owner_id, owner_secret));
                let user = Arc::new((user_id, user_secret));
                let key = setup_key(&sidecar, &owner).await;
                let mut c = Conn::open(&sidecar).await;
                let tag = r#"[{"TagKey":"Project","TagValue":"Apollo"}]"#;
                let (st, body) = c.send(&signed("TagResource", &[("KeyId", &key), ("Tags", tag)], &owner)).await;
                assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
                let (st, body) = c.send(&signed("Encrypt", &[("KeyId", &key), ("Plaintext", "aGk=")], &user)).await;
                assert_eq!(st, 200, "the user's policy must allow Encrypt: {}", String::from_utf8_lossy(&body));
                println!(
                    "{:<12}{:>4} | {:>10}{:>9}{:>9} | {:>10}{:>9}{:>9} | {:>6}",
                    "Encrypt", "c", "owner/s", "p50 us", "p99 us", "policy/s", "p50 us", "p99 us", "ratio"
                );
                for c in concurrency.split(',').map(|c| c.trim().parse::<usize>().unwrap()) {
                    let dur = Duration::from_secs_f64(seconds);
                    let a = load(&sidecar, Op::Encrypt, &key, "", owner.clone(), "", c, dur).await;
                    let b = load(&sidecar, Op::Encrypt, &key, "", user.clone(), "", c, dur).await;
                    assert_eq!(a.errors + b.errors, 0, "errors under load");
                    println!(
                        "{:<12}{:>4} | {:>10.0}{:>9}{:>9} | {:>10.0}{:>9}{:>9} | {:>5.2}x",
                        "",
                        c,
                        a.rps,
                        a.p50_us,
                        a.p99_us,
                        b.rps,
                        b.p50_us,
                        b.p99_us,
                        b.rps / a.rps
                    );
                }
            }
            Cmd::Soak {
                target: Target { sidecar, access_key_id, access_key_secret },
                pid,
                concurrency,
                seconds,
                sample_seconds,
            } => {
                let creds = Arc::new((access_key_id, access_key_secret));
                soak(&sidecar, creds, pid, concurrency, seconds, sample_seconds).await
            }
            Cmd::Probe { target: Target { sidecar, access_key_id, access_key_secret } } => {
                let creds = Arc::new((access_key_id, access_key_secret));
                let key = setup_key(&sidecar, &creds).await;
                let mut conn = Conn::open(&sidecar).await;
                let (_, body) = conn.send(&signed("GenerateDataKey", &[("KeyId", &key)], &creds)).await;
                println!("{}", body.len());
            }
        }
    });
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the sidecar is running");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

async fn soak(sidecar: &str, creds: Arc<(String, String)>, pid: u32, c: usize, seconds: f64, sample: f64) {
    let key = setup_key(sidecar, &creds).await;
    let start = Instant::now();
    let mut total = 0u64;
    let mut samples = vec![(0.0, 0u64, rss_mb(pid))];
    println!("{:>8} {:>12} {:>10} {:>9}", "seconds", "requests", "req/s", "RSS MB");
    println!("{:>8.0} {:>12} {:>10} {:>9.1}", 0.0, 0, "-", samples[0].2);
    while start.elapsed().as_secs_f64() < seconds {
        let cell = load(sidecar, Op::Encrypt, &key, "", creds.clone(), "", c, Duration::from_secs_f64(sample)).await;
        assert_eq!(cell.errors, 0, "errors under load");
        total += (cell.rps * sample) as u64;
        let t = start.elapsed().as_secs_f64();
        let rss = rss_mb(pid);
        samples.push((t, total, rss));
        println!("{t:>8.0} {total:>12} {:>10.0} {rss:>9.1}", cell.rps);
    }
    let third = samples.len() / 3;
    let peak = |s: &[(f64, u64, f64)]| s.iter().map(|x| x.2).fold(0.0, f64::max);
    let (first, last) = (peak(&samples[1..=third.max(1)]), peak(&samples[samples.len() - third.max(1)..]));
    println!("RSS peak: first third {first:.1} MB, last third {last:.1} MB, after {total} signed requests");
    if last > first * 1.10 + 4.0 {
        eprintln!("RSS grew under steady load: {first:.1} MB -> {last:.1} MB");
        std::process::exit(1);
    }
}

async fn bare(listen: String, body_bytes: usize) {
    let mut body = String::from("{\"RequestId\":\"");
    while body.len() + 2 < body_bytes {
        body.push('x');
    }
    body.push_str("\"}");
    let body = Bytes::from(body);
    let l = tokio::net::TcpListener::bind(&listen).await.unwrap();
    println!("bare: listening on {}", l.local_addr().unwrap());
    loop {
        let (s, _) = l.accept().await.unwrap();
        let _ = s.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json;charset=utf-8")
                            .body(Full::new(body))
                            .unwrap(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
        });
    }
}

/// A V1-signed form body (POST), as pop-core sends it.
fn signed(action: &str, extra: &[(&str, &str)], creds: &(String, String)) -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let ts = kms_core::clock::format_iso(time::OffsetDateTime::now_utc().unix_timestamp());
    let mut p: Vec<(&str, &str)> = vec![
        ("Action", action),
        ("Version", "2016-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", &creds.0),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", &nonce),
        ("Timestamp", &ts),
    ];
    p.extend_from_slice(extra);
    let sts = sign::v1_string_to_sign("POST", p.iter().copied());
    let sig = sign::v1_signature(sign::V1Method::HmacSha1, &creds.1, &sts);
    form_body(p.iter().copied().chain(std::iter::once(("Signature", sig.as_str()))))
}

fn form_body<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    pairs.map(|(k, v)| format!("{}={}", sign::pct(k), sign::pct(v))).collect::<Vec<_>>().join("&")
}

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn);
        Conn { sender, host: addr.to_string() }
    }

    async fn send(&mut self, body: &str) -> (u16, Bytes) {
        let req = hyper::Request::post("/")
            .header("host", &self.host)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.exchange(req).await
    }

    /// An unsigned GET: to the secrets agent with its SSRF token, or `/ping` with none.
    async fn get(&mut self, path: &str, token: Option<&str>) -> (u16, Bytes) {
        let mut req = hyper::Request::get(path).header("host", &self.host);
        if let Some(token) = token {
            req = req.header("x-kms-token", token);
        }
        self.exchange(req.body(Full::new(Bytes::new())).unwrap()).await
    }

    async fn exchange(&mut self, req: hyper::Request<Full<Bytes>>) -> (u16, Bytes) {
        // After a reply the connection may not be idle yet: wait until it takes the next request.
        self.sender.ready().await.unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }
}

async fn setup_key(sidecar: &str, creds: &(String, String)) -> String {
    let mut c = Conn::open(sidecar).await;
    let (st, body) = c.send(&signed("CreateKey", &[], creds)).await;
    assert_eq!(st, 200, "CreateKey: {}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Encrypt,
    Decrypt,
    GenerateDataKey,
    GetSecretValue,
    /// GET /v1/<name> on the agent, with the token.
    AgentGet,
    /// GET /ping on the API port: no signature, no action, no audit line – the sidecar's HTTP
    /// layer alone, against the same bare server.
    Ping,
    CreateKey,
    /// A new version (fresh id) of the secret [`BENCH_SECRET`], which every client writes.
    PutSecretValue,
    /// A new version of a secret of the client's own (created before its first request): how
    /// applications use secrets, each writing its own.
    PutOwnSecret,
}

const BENCH_SECRET: &str = "bench/secret";

struct Cell {
    rps: f64,
    /// Requests answered in the cell.
    requests: u64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

#[allow(clippy::too_many_arguments)]
async fn load(
    addr: &str,
    op: Op,
    key: &str,
    blob: &str,
    creds: Arc<(String, String)>,
    token: &str,
    c: usize,
    dur: Duration,
) -> Cell {
    let plaintext = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw==";
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (addr, key, blob, creds, token) =
            (addr.to_string(), key.to_string(), blob.to_string(), creds.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let own = format!("bench/own-{}", uuid::Uuid::new_v4().simple());
            if op == Op::PutOwnSecret {
                let create =
                    signed("CreateSecret", &[("SecretName", &own), ("SecretData", "v"), ("VersionId", "v1")], &creds);
                let (st, body) = conn.send(&create).await;
                assert_eq!(st, 200, "CreateSecret: {}", String::from_utf8_lossy(&body));
            }
            while start.elapsed() < dur {
                let body = match op {
                    Op::Encrypt => signed("Encrypt", &[("KeyId", &key), ("Plaintext", plaintext)], &creds),
                    Op::Decrypt => signed("Decrypt", &[("CiphertextBlob", &blob)], &creds),
                    Op::GenerateDataKey => signed("GenerateDataKey", &[("KeyId", &key)], &creds),
                    Op::GetSecretValue => signed("GetSecretValue", &[("SecretName", BENCH_SECRET)], &creds),
                    Op::AgentGet | Op::Ping => String::new(),
                    Op::CreateKey => signed("CreateKey", &[], &creds),
                    Op::PutSecretValue | Op::PutOwnSecret => {
                        let v = uuid::Uuid::new_v4().simple().to_string();
                        let name = if op == Op::PutOwnSecret { own.as_str() } else { BENCH_SECRET };
                        signed(
                            "PutSecretValue",
                            &[("SecretName", name), ("SecretData", "s3cret"), ("VersionId", &v)],
                            &creds,
                        )
                    }
                };
                let t = Instant::now();
                let (st, _) = if op == Op::AgentGet {
                    conn.get("/v1/bench%2Fsecret", Some(&token)).await
                } else if op == Op::Ping {
                    conn.get("/ping", None).await
                } else {
                    conn.send(&body).await
                };
                lat.push(t.elapsed().as_micros() as u64);
                if st != 200 {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    Cell { rps: all.len() as f64 / elapsed, requests: all.len() as u64, p50_us: pct(0.50), p99_us: pct(0.99), errors }
}

/// What `run` measures besides the API rows.
struct RunExtras {
    /// The secrets agent's address and token: its row.
    agent: Option<(String, String)>,
    /// The sidecar's and the bare server's process ids: their CPU per request.
    pids: Option<(u32, u32)>,
    /// Only these rows.
    only: Option<Vec<String>>,
}

async fn run(
    sidecar: String,
    bare: String,
    creds: Arc<(String, String)>,
    conc: Vec<usize>,
    dur: Duration,
    extra: RunExtras,
) {
    let RunExtras { agent, pids, only } = extra;
    let key = setup_key(&sidecar, &creds).await;
    let mut c = Conn::open(&sidecar).await;
    let secret = r#"{"user":"app","password":"correct horse battery staple"}"#;
    let (st, body) = c
        .send(&signed(
            "CreateSecret",
            &[("SecretName", BENCH_SECRET), ("SecretData", secret), ("VersionId", "v1")],
            &creds,
        ))
        .await;
    assert!(
        st == 200 || String::from_utf8_lossy(&body).contains("ResourceExist"),
        "CreateSecret: {}",
        String::from_utf8_lossy(&body)
    );
    let (_, body) = c.send(&signed("Encrypt", &[("KeyId", &key), ("Plaintext", "SGVsbG8=")], &creds)).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let blob = v["CiphertextBlob"].as_str().unwrap().to_string();
    println!(
        "{:<16}{:>4} | {:>10}{:>9}{:>9}{:>9} | {:>10}{:>9}{:>9}{:>9} | {:>6}{:>7}",
        "operation",
        "c",
        "sidecar/s",
        "p50 us",
        "p99 us",
        "CPU us",
        "bare/s",
        "p50 us",
        "p99 us",
        "CPU us",
        "ratio",
        "CPU"
    );
    let mut ops = vec![
        ("Encrypt", Op::Encrypt, sidecar.clone()),
        ("Decrypt", Op::Decrypt, sidecar.clone()),
        ("GenerateDataKey", Op::GenerateDataKey, sidecar.clone()),
        ("GetSecretValue", Op::GetSecretValue, sidecar.clone()),
    ];
    let token = agent.as_ref().map(|a| a.1.clone()).unwrap_or_default();
    if let Some((addr, _)) = &agent {
        ops.push(("agent GET /v1", Op::AgentGet, addr.clone()));
    }
    // Only when asked for (`--ops ping`): the floor under every row, not a row of the API.
    ops.push(("ping", Op::Ping, sidecar.clone()));
    let wanted = |name: &str| match &only {
        None => name != "ping",
        Some(o) => o.iter().any(|w| w == name || (w == "agent" && name.starts_with("agent"))),
    };
    for (name, op, target) in ops.into_iter().filter(|(name, ..)| wanted(name)) {
        for &c in &conc {
            let cpu = pids.map(|(p, _)| ProcessCpu::of(p));
            let s = load(&target, op, &key, &blob, creds.clone(), &token, c, dur).await;
            let s_cpu = cpu.map(|c| c.per_request_us(s.requests));
            let cpu = pids.map(|(_, p)| ProcessCpu::of(p));
            let b = load(&bare, op, &key, &blob, creds.clone(), &token, c, dur).await;
            let b_cpu = cpu.map(|c| c.per_request_us(b.requests));
            assert_eq!(s.errors, 0, "{name}: the sidecar answered errors under load");
            let us = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            // The CPU column is bare's CPU per request over the sidecar's: 1.0 = as cheap.
            let cpu_ratio = s_cpu.zip(b_cpu).map_or("-".to_string(), |(s, b)| format!("{:.2}x", b / s));
            println!(
                "{:<16}{:>4} | {:>10.0}{:>9}{:>9}{:>9} | {:>10.0}{:>9}{:>9}{:>9} | {:>5.2}x{:>7}",
                name,
                c,
                s.rps,
                s.p50_us,
                s.p99_us,
                us(s_cpu),
                b.rps,
                b.p50_us,
                b.p99_us,
                us(b_cpu),
                s.rps / b.rps,
                cpu_ratio
            );
        }
    }
}

/// The store comparison (`bench/store.sh`).
async fn store_bench(
    sqlite: String,
    nodes: Vec<String>,
    creds: Arc<(String, String)>,
    c: usize,
    dur: Duration,
    samples: usize,
    cells: &[&str],
) {
    let mut setups = Vec::new();
    for addr in std::iter::once(&sqlite).chain(nodes.iter().take(1)) {
        let key = setup_key(addr, &creds).await;
        let mut conn = Conn::open(addr).await;
        let (st, body) = conn
            .send(&signed(
                "CreateSecret",
                &[("SecretName", BENCH_SECRET), ("SecretData", "v"), ("VersionId", "v1")],
                &creds,
            ))
            .await;
        assert_eq!(st, 200, "CreateSecret: {}", String::from_utf8_lossy(&body));
        let (st, body) = conn.send(&signed("Encrypt", &[("KeyId", &key), ("Plaintext", "aGVsbG8=")], &creds)).await;
        assert_eq!(st, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        setups.push((key, v["CiphertextBlob"].as_str().unwrap().to_string()));
    }
    // Let the other nodes see the key before loading them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("per node, concurrency {c}, {:.0} s per cell (one node loaded at a time)", dur.as_secs_f64());
    println!(
        "{:<16} | {:>10} {:>8} {:>8} | {:>12} {:>8} {:>8} | {:>6}",
        "op", "sqlite/s", "p50 us", "p99 us", "pg node/s", "p50 us", "p99 us", "ratio"
    );
    let crypto_ops = [("Encrypt", Op::Encrypt), ("Decrypt", Op::Decrypt), ("GenerateDataKey", Op::GenerateDataKey)];
    for (name, op) in crypto_ops.into_iter().filter(|_| cells.contains(&"crypto")) {
        let a = load(&sqlite, op, &setups[0].0, &setups[0].1, creds.clone(), "", c, dur).await;
        for (i, node) in nodes.iter().enumerate() {
            let b = load(node, op, &setups[1].0, &setups[1].1, creds.clone(), "", c, dur).await;
            assert_eq!(a.errors + b.errors, 0, "errors under load");
            println!(
                "{:<16} | {:>10.0} {:>8} {:>8} | {:>9.0} n{} {:>8} {:>8} | {:>5.2}x",
                name,
                a.rps,
                a.p50_us,
                a.p99_us,
                b.rps,
                i,
                b.p50_us,
                b.p99_us,
                b.rps / a.rps
            );
        }
    }
    println!(
        "aggregate writes, total concurrency {} (split over the PostgreSQL nodes); PutSecretValue: each client its own \
         secret; PSV, one secret: every client the same one",
        c * nodes.len()
    );
    // `writes` runs all three; each also has a cell of its own (for profiling one).
    let write_ops = [
        ("CreateKey", "createkey", Op::CreateKey),
        ("PutSecretValue", "psv", Op::PutOwnSecret),
        ("PSV, one secret", "psv-one", Op::PutSecretValue),
    ];
    for (name, _, op) in write_ops.into_iter().filter(|(_, cell, _)| cells.contains(&"writes") || cells.contains(cell))
    {
        let cpu = MachineCpu::now();
        let a = load(&sqlite, op, "", "", creds.clone(), "", c * nodes.len(), dur).await;
        let (a_cpu, a_idle) = cpu.since();
        let per = (c * nodes.len()).div_ceil(nodes.len());
        let runs: Vec<_> = nodes
            .iter()
            .map(|n| {
                let (n, creds) = (n.clone(), creds.clone());
                async move { load(&n, op, "", "", creds, "", per, dur).await }
            })
            .collect();
        let cpu = MachineCpu::now();
        let cells = futures_join_all(runs).await;
        let (b_cpu, b_idle) = cpu.since();
        let rps: f64 = cells.iter().map(|x| x.rps).sum();
        let errors: u64 = cells.iter().map(|x| x.errors).sum::<u64>() + a.errors;
        let p99 = cells.iter().map(|x| x.p99_us).max().unwrap_or(0);
        println!("{name:<16} | sqlite {:>8.0}/s p99 {:>6} us | {} pg nodes {:>8.0}/s p99 {:>6} us | {:>5.2}x | errors {errors}", a.rps, a.p99_us, nodes.len(), rps, p99, rps / a.rps);
        let per_op = |cpu_s: f64, rps: f64| cpu_s / (rps * dur.as_secs_f64()).max(1.0) * 1e3;
        println!(
            "{:<16} | machine CPU per write: sqlite {:.2} ms ({:.0}% idle) | pg nodes {:.2} ms ({:.0}% idle)",
            "",
            per_op(a_cpu, a.rps),
            a_idle * 100.0,
            per_op(b_cpu, rps),
            b_idle * 100.0
        );
    }
    if !cells.contains(&"propagation") {
        return;
    }
    // Propagation: DisableKey on node 0, then Encrypt on node 1 until it is refused.
    let mut took = Vec::with_capacity(samples);
    let (mut a, mut b) = (Conn::open(&nodes[0]).await, Conn::open(&nodes[1 % nodes.len()]).await);
    for _ in 0..samples {
        let key = setup_key(&nodes[0], &creds).await;
        loop {
            let (st, _) = b.send(&signed("Encrypt", &[("KeyId", &key), ("Plaintext", "aGk=")], &creds)).await;
            if st == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let (st, _) = a.send(&signed("DisableKey", &[("KeyId", &key)], &creds)).await;
        assert_eq!(st, 200);
        let t = Instant::now();
        loop {
            let (st, _) = b.send(&signed("Encrypt", &[("KeyId", &key), ("Plaintext", "aGk=")], &creds)).await;
            if st != 200 {
                break;
            }
        }
        took.push(t.elapsed().as_micros() as u64);
    }
    took.sort_unstable();
    let pct = |p: f64| took[((took.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "disable propagation node0 -> node1 over {samples} keys: p50 {} us, p99 {} us, max {} us",
        pct(0.5),
        pct(0.99),
        took.last().unwrap()
    );
}

async fn futures_join_all<F: std::future::Future<Output = Cell> + Send + 'static>(fs: Vec<F>) -> Vec<Cell> {
    let hs: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in hs {
        out.push(h.await.unwrap());
    }
    out
}
