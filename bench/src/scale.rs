//! `kms-scale`: how the engine behaves with a large store. `populate` fills a store (SQLite
//! directory or PostgreSQL URL) with N keys and N secrets through the engine's own API; `probe`
//! opens it in a fresh process and prints what a user feels: the time to open, the resident
//! memory, ListKeys/ListSecrets pages at both ends, a warm Encrypt, a DescribeKey that misses the
//! cache, and memory again after touching many more keys than the cache holds.
//!
//!   kms-scale populate --dir D [--store URL] --keys 100000 --secrets 100000
//!   kms-scale probe    --dir D [--store URL]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kms_core::api::{
    CreateKeyRequest, CreateSecretRequest, EncryptRequest, ListKeysRequest, ListSecretsRequest, SecretBytes,
    SecretString,
};
use kms_core::crypto::seal::SoftwareRootKey;
use kms_core::{Caller, Engine, EngineConfig, EngineOptions, StoreLocation, SystemClock};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Populate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        store: Option<String>,
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        #[arg(long, default_value_t = 100_000)]
        secrets: usize,
    },
    Probe {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        store: Option<String>,
        /// Distinct keys to touch for the bounded-cache check.
        #[arg(long, default_value_t = 30_000)]
        touch: usize,
    },
}

fn open(dir: &Path, store: Option<&str>) -> Engine {
    let mut config = EngineConfig::default();
    config.limits.max_keys = usize::MAX;
    config.limits.max_secrets = usize::MAX;
    let protector = SoftwareRootKey::load_or_create(&dir.join("root.key")).unwrap();
    let store = match store {
        Some(s) => StoreLocation::parse(s).unwrap(),
        None => StoreLocation::Sqlite(dir.join("kms.db")),
    };
    Engine::open(EngineOptions {
        config,
        store,
        node_id: "scale".into(),
        store_lease: kms_core::engine::DEFAULT_STORE_LEASE,
        protector: Arc::new(protector),
        clock: Arc::new(SystemClock),
        token: None,
    })
    .unwrap()
}

/// (current, peak) resident memory in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Median of `n` runs of `f`, in milliseconds.
fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    t.sort();
    t[n / 2].as_secs_f64() * 1e3
}

fn populate(dir: &Path, store: Option<&str>, keys: usize, secrets: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let e = open(dir, store);
    let owner = Caller::owner();
    let t0 = Instant::now();
    let mut first_key = String::new();
    for i in 0..keys {
        let k = e.create_key(&owner, CreateKeyRequest::default()).unwrap();
        if i == 0 {
            first_key = k.key_metadata.key_id;
        }
        if (i + 1) % 10_000 == 0 {
            eprintln!("{} keys, {:.0}/s", i + 1, (i + 1) as f64 / t0.elapsed().as_secs_f64());
        }
    }
    std::fs::write(dir.join("first-key"), &first_key).unwrap();
    let t0 = Instant::now();
    for i in 0..secrets {
        e.create_secret(
            &owner,
            CreateSecretRequest {
                secret_name: format!("secret-{i:06}"),
                secret_data: SecretString::new(format!("value {i}")),
                version_id: "v1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        if (i + 1) % 10_000 == 0 {
            eprintln!("{} secrets, {:.0}/s", i + 1, (i + 1) as f64 / t0.elapsed().as_secs_f64());
        }
    }
}

fn probe(dir: &Path, store: Option<&str>, touch: usize) {
    let owner = Caller::owner();
    let t0 = Instant::now();
    let e = open(dir, store);
    let opened = t0.elapsed();
    let (rss_open, _) = rss_mib();
    let list_keys = |page: i64, size: i64| {
        e.list_keys(&owner, ListKeysRequest { page_number: Some(page), page_size: Some(size), ..Default::default() })
            .unwrap()
    };
    let total_keys = list_keys(1, 1).total_count as i64;
    let list_secrets = |page: i64, size: i64| {
        e.list_secrets(
            &owner,
            ListSecretsRequest { page_number: Some(page), page_size: Some(size), ..Default::default() },
        )
        .unwrap()
    };
    let total_secrets = list_secrets(1, 1).total_count as i64;
    let keys_first = median_ms(21, || drop(list_keys(1, 10)));
    let keys_last = median_ms(21, || drop(list_keys((total_keys + 9) / 10, 10)));
    let keys_middle = median_ms(21, || drop(list_keys(total_keys / 20, 10)));
    let keys_last_100 = median_ms(21, || drop(list_keys((total_keys + 99) / 100, 100)));
    let secrets_first = median_ms(21, || drop(list_secrets(1, 10)));
    let secrets_last = median_ms(21, || drop(list_secrets((total_secrets + 9) / 10, 10)));
    let secrets_middle = median_ms(21, || drop(list_secrets(total_secrets / 20, 10)));
    let filtered = |page: i64| {
        e.list_keys(
            &owner,
            ListKeysRequest {
                filters: Some(r#"[{"Key":"KeyState","Values":["Enabled"]}]"#.into()),
                page_number: Some(page),
                page_size: Some(10),
            },
        )
        .unwrap()
    };
    let keys_filtered = median_ms(21, || drop(filtered(total_keys / 20)));
    // A tenth of the secrets (with 100,000) match; the page in the middle of those.
    let secrets_named = |page: i64| {
        e.list_secrets(
            &owner,
            ListSecretsRequest {
                filters: Some(r#"[{"Key":"SecretName","Values":["secret-05"]}]"#.into()),
                page_number: Some(page),
                page_size: Some(10),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let t = Instant::now();
    let named_total = secrets_named(1).total_count as i64;
    let secrets_filtered_first = t.elapsed().as_secs_f64() * 1e3;
    let (rss_listed, _) = rss_mib();
    let secrets_filtered = median_ms(21, || drop(secrets_named((named_total / 20).max(1))));
    let key = std::fs::read_to_string(dir.join("first-key")).unwrap();
    let encrypt = |k: &str| {
        e.encrypt(
            &owner,
            EncryptRequest { key_id: k.into(), plaintext: SecretBytes::new(b"hello".to_vec()), ..Default::default() },
        )
        .unwrap()
    };
    let t = Instant::now();
    encrypt(&key);
    let encrypt_cold = t.elapsed().as_secs_f64() * 1e3;
    let encrypt_warm_us = median_ms(2001, || drop(encrypt(&key))) * 1e3;
    // Misses: keys this process has not read yet, from the last pages.
    let ids: Vec<String> = (0..touch as i64)
        .step_by(100)
        .flat_map(|o| list_keys(o / 100 + 1, 100).keys.key.into_iter().map(|k| k.key_id))
        .take(touch)
        .collect();
    let mut it = ids.iter().rev();
    let describe_miss = median_ms(201, || drop(e.describe_key(&owner, it.next().unwrap()).unwrap()));
    let t = Instant::now();
    for k in &ids {
        encrypt(k);
    }
    let touched_rate = ids.len() as f64 / t.elapsed().as_secs_f64();
    let (rss_after, peak) = rss_mib();
    println!("store            {}", store.unwrap_or("SQLite"));
    println!("contents         {total_keys} keys, {total_secrets} secrets");
    println!("open             {:.1} ms", opened.as_secs_f64() * 1e3);
    println!("RSS after open   {rss_open:.1} MiB");
    println!(
        "ListKeys         first page {keys_first:.2} ms, middle {keys_middle:.2} ms, last {keys_last:.2} ms (size 10); last {keys_last_100:.2} ms (size 100)"
    );
    println!("ListKeys filter  middle page {keys_filtered:.2} ms (KeyState=Enabled, from the bucket counts)");
    println!(
        "ListSecrets      first page {secrets_first:.2} ms, middle {secrets_middle:.2} ms, last {secrets_last:.2} ms (size 10)"
    );
    println!(
        "ListSecrets filt middle page {secrets_filtered:.2} ms (SecretName contains \"secret-05\": {named_total} match); \
         the first {secrets_filtered_first:.1} ms (builds the secret directory), RSS then {rss_listed:.1} MiB"
    );
    println!("Encrypt          first {encrypt_cold:.2} ms (miss + unseal), warm {encrypt_warm_us:.1} µs");
    println!("DescribeKey miss {describe_miss:.2} ms");
    println!("touch {} keys     {touched_rate:.0} Encrypt/s (each a miss the first time)", ids.len());
    println!("RSS after touch  {rss_after:.1} MiB (peak {peak:.1} MiB)");
}

fn main() {
    match Args::parse().cmd {
        Cmd::Populate { dir, store, keys, secrets } => populate(&dir, store.as_deref(), keys, secrets),
        Cmd::Probe { dir, store, touch } => probe(&dir, store.as_deref(), touch),
    }
}
