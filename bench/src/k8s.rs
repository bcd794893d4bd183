//! kms-k8s: the sidecar's Kubernetes sockets next to its signed HTTP API, in one run.
//!
//! - Encrypt and Decrypt of a 32-byte data key over the KMS v2 socket (what kube-apiserver does)
//!   and the same through the HTTP API (signed V3, keep-alive), at concurrency 1, 4 and 16;
//! - Mount of 10 secrets over the CSI socket, and the 10 GetSecretValue calls a pod would make
//!   over HTTP instead.
//!
//! Each cell prints requests/s, p50 and p99, the ratio socket/HTTP, and the sidecar's CPU-seconds
//! per operation (from /proc/<pid>/stat): the load generator shares the machine's cores, so
//! throughput alone would partly measure how the scheduler split them.

use kms_bench::cpu::ProcessCpu;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kms_client::client::{Client, ClientConfig};
use kms_core::api::*;
use kms_sidecar::k8s::proto::csi::csi_driver_provider_client::CsiDriverProviderClient;
use kms_sidecar::k8s::proto::csi::MountRequest;
use kms_sidecar::k8s::proto::kms_v2::key_management_service_client::KeyManagementServiceClient;
use kms_sidecar::k8s::proto::kms_v2::{DecryptRequest, EncryptRequest};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    kms_socket: PathBuf,
    #[arg(long)]
    csi_socket: PathBuf,
    /// http://host:port of the same sidecar.
    #[arg(long)]
    endpoint: String,
    /// The access key of the principal the plugin and the workload act as (same policies).
    #[arg(long)]
    access_key_id: String,
    #[arg(long)]
    access_key_secret: String,
    /// The sidecar's process id, for its CPU time.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 2)]
    seconds: u64,
}

/// The sidecar's user+system CPU seconds so far.
struct Cell {
    ops: usize,
    secs: f64,
    lat: Vec<Duration>,
    cpu: f64,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn pct(&mut self, p: f64) -> Duration {
        self.lat.sort();
        self.lat
            .get(((self.lat.len() as f64 * p) as usize).min(self.lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
    fn cpu_us(&self) -> f64 {
        self.cpu / self.ops.max(1) as f64 * 1e6
    }
}

async fn channel(path: PathBuf) -> Channel {
    kms_sidecar::k8s::connect(&path).await.expect("the socket answers")
}

/// Runs `op` from `c` tokio tasks (each with its own connection) for `secs`.
fn grpc_cell<F, Fut>(
    rt: &tokio::runtime::Runtime,
    socket: &std::path::Path,
    c: usize,
    secs: u64,
    pid: u32,
    op: F,
) -> Cell
where
    F: Fn(Channel) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..c {
            channels.push(channel(socket.to_path_buf()).await);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let cpu0 = ProcessCpu::seconds(pid);
        let t0 = Instant::now();
        let tasks: Vec<_> = channels
            .into_iter()
            .map(|ch| {
                let (stop, op) = (stop.clone(), op.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        op(ch.clone()).await;
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let secs = t0.elapsed().as_secs_f64();
        Cell { ops: lat.len(), secs, lat, cpu: ProcessCpu::seconds(pid) - cpu0 }
    })
}

/// Runs `op` from `c` threads (each with its own keep-alive HTTP client) for `secs`.
fn http_cell<F>(args: &Args, c: usize, op: F) -> Cell
where
    F: Fn(&Client) + Send + Sync + Clone + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<Client> = (0..c)
        .map(|_| {
            Client::new(ClientConfig::with_key(&args.endpoint, &args.access_key_id, &args.access_key_secret)).unwrap()
        })
        .collect();
    let cpu0 = ProcessCpu::seconds(args.pid);
    let t0 = Instant::now();
    let threads: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (stop, op) = (stop.clone(), op.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    op(&client);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    Cell { ops: lat.len(), secs, lat, cpu: ProcessCpu::seconds(args.pid) - cpu0 }
}

fn row(name: &str, c: usize, mut k: Cell, mut h: Cell) {
    println!(
        "{name:<22} {c:>3}  {:>9.0} {:>7.2} {:>7.2}   {:>9.0} {:>7.2} {:>7.2}   {:>5.2}x   {:>7.0} {:>7.0}",
        k.rate(),
        k.pct(0.5).as_secs_f64() * 1e3,
        k.pct(0.99).as_secs_f64() * 1e3,
        h.rate(),
        h.pct(0.5).as_secs_f64() * 1e3,
        h.pct(0.99).as_secs_f64() * 1e3,
        k.rate() / h.rate().max(1e-9),
        k.cpu_us(),
        h.cpu_us(),
    );
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let http =
        Client::new(ClientConfig::with_key(&args.endpoint, &args.access_key_id, &args.access_key_secret)).unwrap();
    let dek = vec![0x42u8; 32];
    // One ciphertext of each kind to decrypt, under the plugin's key.
    let (grpc_ct, grpc_key_id) = rt.block_on(async {
        let mut c = KeyManagementServiceClient::new(channel(args.kms_socket.clone()).await);
        let e = c.encrypt(EncryptRequest { plaintext: dek.clone(), uid: "bench".into() }).await.unwrap().into_inner();
        (e.ciphertext, e.key_id)
    });
    let key = grpc_key_id.split('/').next().unwrap().to_string();
    let http_ct = http
        .encrypt(&EncryptRequest_ { key_id: key.clone(), plaintext: SecretBytes::from(&dek[..]), ..Default::default() })
        .unwrap()
        .ciphertext_blob;
    println!("machine: {} cores; load generator on the same machine; {} s per cell", num_cpus(), args.seconds);
    println!(
        "{:<22} {:>3}  {:>9} {:>7} {:>7}   {:>9} {:>7} {:>7}   {:>6}   {:>7} {:>7}",
        "operation", "c", "socket/s", "p50 ms", "p99 ms", "http/s", "p50 ms", "p99 ms", "ratio", "cpu µs", "cpu µs"
    );
    println!("{:<83} {:>7} {:>7}", "", "socket", "http");
    for c in [1, 4, 16] {
        let d = dek.clone();
        let k = grpc_cell(&rt, &args.kms_socket, c, args.seconds, args.pid, move |ch| {
            let d = d.clone();
            async move {
                let mut cl = KeyManagementServiceClient::new(ch);
                cl.encrypt(EncryptRequest { plaintext: d, uid: "b".into() }).await.unwrap();
            }
        });
        let (key2, d2) = (key.clone(), dek.clone());
        let h = http_cell(&args, c, move |cl| {
            cl.encrypt(&EncryptRequest_ {
                key_id: key2.clone(),
                plaintext: SecretBytes::from(&d2[..]),
                ..Default::default()
            })
            .unwrap();
        });
        row("Encrypt (32-byte DEK)", c, k, h);
    }
    for c in [1, 4, 16] {
        let (ct, kid) = (grpc_ct.clone(), grpc_key_id.clone());
        let k = grpc_cell(&rt, &args.kms_socket, c, args.seconds, args.pid, move |ch| {
            let (ct, kid) = (ct.clone(), kid.clone());
            async move {
                let mut cl = KeyManagementServiceClient::new(ch);
                let r =
                    DecryptRequest { ciphertext: ct, uid: "b".into(), key_id: kid, annotations: Default::default() };
                cl.decrypt(r).await.unwrap();
            }
        });
        let ct = http_ct.clone();
        let h = http_cell(&args, c, move |cl| {
            cl.decrypt(&DecryptRequest_ { ciphertext_blob: ct.clone(), ..Default::default() }).unwrap();
        });
        row("Decrypt", c, k, h);
    }
    // Mount of 10 secrets vs the 10 GetSecretValue calls over HTTP.
    let names: Vec<String> = (0..10).map(|i| format!("bench-{i}")).collect();
    let objects: String = names.iter().map(|n| format!("- objectName: {n}\n")).collect();
    let attrs = serde_json::json!({
        "csi.storage.k8s.io/pod.namespace": "bench",
        "csi.storage.k8s.io/serviceAccount.name": "app",
        "csi.storage.k8s.io/pod.name": "bench-0",
        "objects": objects,
    })
    .to_string();
    for c in [1, 4] {
        let a = attrs.clone();
        let k = grpc_cell(&rt, &args.csi_socket, c, args.seconds, args.pid, move |ch| {
            let a = a.clone();
            async move {
                let mut cl = CsiDriverProviderClient::new(ch);
                let r = MountRequest { attributes: a, permission: "420".into(), ..Default::default() };
                let m = cl.mount(r).await.unwrap().into_inner();
                assert_eq!(m.files.len(), 10);
            }
        });
        let n = names.clone();
        let h = http_cell(&args, c, move |cl| {
            for name in &n {
                let _: serde_json::Value = cl
                    .call("GetSecretValue", &GetSecretValueRequest { secret_name: name.clone(), ..Default::default() })
                    .unwrap();
            }
        });
        row("Mount of 10 secrets", c, k, h);
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

// The API's request types, named apart from the gRPC messages of the same names.
use kms_core::api::DecryptRequest as DecryptRequest_;
use kms_core::api::EncryptRequest as EncryptRequest_;
