//! `kms-sidecar`: serves the local KMS on loopback. Zero configuration: the first start creates
//! the data dir, store, root key and access keys.

use std::path::PathBuf;

use clap::Parser;
use kms_sidecar::app;
use kms_sidecar::config::Config;
use kms_sidecar::start_error::StartError;

#[derive(Parser, Debug)]
#[command(name = "kms-sidecar", version, about = "Local KMS speaking the Alibaba Cloud KMS 2016-01-20 API")]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "KMS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Where the store, root key, credentials and certificates live.
    #[arg(long, env = "KMS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The store: a SQLite file path (default <data-dir>/kms.db) or a shared PostgreSQL,
    /// postgres://user:pass@host1,host2/kms?target_session_attrs=read-write.
    #[arg(long, env = "KMS_STORE", global = true)]
    store: Option<String>,
    /// This node's id among the sidecars of a shared store (default: kept in <data-dir>/node.id).
    #[arg(long)]
    node_id: Option<String>,
    /// Plain HTTP address (default 127.0.0.1:18080); "" to disable.
    #[arg(long)]
    listen: Option<String>,
    /// HTTPS address, e.g. 127.0.0.1:18443 (certificate generated on first start unless configured).
    #[arg(long)]
    tls_listen: Option<String>,
    /// Also serve on this Unix socket.
    #[arg(long)]
    unix_socket: Option<PathBuf>,
    /// Region served (appears in ARNs).
    #[arg(long)]
    region: Option<String>,
    /// Serve the secrets agent on this loopback address (e.g. 127.0.0.1:18081).
    #[arg(long)]
    agent_listen: Option<String>,
    /// Serve the management console on this address (e.g. 127.0.0.1:18090; loopback unless
    /// [console] tls = true).
    #[arg(long)]
    console_listen: Option<String>,
    #[command(flatten)]
    log: kms_client::logging::LogArgs,
    #[command(subcommand)]
    command: Option<Sub>,
}

/// Without a subcommand, the sidecar serves.
#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Copy the store (a consistent snapshot, taken while the sidecar runs) and everything needed
    /// to open and serve it – root key, credentials, TLS files, audit log – into a new directory.
    /// The copy holds the root key: keep it as safe as the key itself.
    Backup {
        /// The new (or empty) directory to write the backup to.
        #[arg(long)]
        to: PathBuf,
    },
    /// Read a console password from stdin and print its Argon2id hash for [[console.users]]
    /// password_hash (sidecar/CONSOLE.md).
    HashPassword,
    /// Put a backup into a new data directory (--data-dir), after checking every file against
    /// its manifest; the restored store is opened once to prove its root key opens it.
    Restore {
        /// The backup directory (`kms-sidecar backup --to`).
        #[arg(long)]
        from: PathBuf,
    },
}

fn main() {
    let args = Args::parse();
    if let Err(e) = args.log.init("KMS_LOG", "info", None) {
        eprintln!("kms-sidecar: {e}");
        std::process::exit(kms_client::exit::EXIT_USAGE);
    }
    if let Err(e) = run(args) {
        eprintln!("kms-sidecar: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run(args: Args) -> Result<(), StartError> {
    let args_config = args.config.clone();
    let mut cfg = match &args.config {
        Some(p) => Config::load(p).map_err(StartError::Config)?,
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = Some(d);
    }
    if let Some(s) = args.store {
        cfg.store.url = Some(s);
    }
    if let Some(n) = args.node_id {
        cfg.store.node_id = Some(n);
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(l) = args.tls_listen {
        cfg.tls_listen = Some(l);
    }
    if let Some(u) = args.unix_socket {
        cfg.unix_socket = Some(u);
    }
    if let Some(r) = args.region {
        cfg.engine.region = r;
    }
    if let Some(a) = args.agent_listen {
        cfg.agent.listen = Some(a);
    }
    if let Some(a) = args.console_listen {
        cfg.console.listen = Some(a);
    }
    match &args.command {
        Some(Sub::Backup { to }) => {
            let m = kms_sidecar::backup::backup(&cfg, to)?;
            let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
            println!("kms-sidecar: backed up {} files ({bytes} bytes) to {}", m.files.len(), to.display());
            println!("kms-sidecar: root key: {} – keep the backup as safe as the key", m.root_key);
            return Ok(());
        }
        Some(Sub::HashPassword) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
            let password = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
            println!("{}", kms_sidecar::console::password::hash(&password)?);
            return Ok(());
        }
        Some(Sub::Restore { from }) => {
            let m = kms_sidecar::backup::restore(&cfg, from)?;
            println!(
                "kms-sidecar: restored the backup of {} ({} files) into {}; the store opens under its root key",
                m.created,
                m.files.len(),
                cfg.data_dir().display()
            );
            return Ok(());
        }
        None => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let running = app::start(cfg).await?;
        if let Some((id, secret)) = &running.new_owner_key {
            println!(
                "kms-sidecar: first start; created the owner access key (shown once, also stored 0600 in {}):",
                running.data_dir.join("credentials.toml").display()
            );
            println!("  AccessKeyId:     {id}");
            println!("  AccessKeySecret: {}", secret.as_str());
        }
        if let Some(a) = running.http {
            println!("kms-sidecar: listening on http://{a}");
        }
        if let Some(a) = running.https {
            println!(
                "kms-sidecar: listening on https://localhost:{} (CA: {})",
                a.port(),
                running
                    .profile
                    .ca_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "configured certificate".into())
            );
        }
        if let Some(a) = &running.console {
            println!("kms-sidecar: console on {a}");
        }
        if let Some(a) = &running.profile.agent_endpoint {
            println!(
                "kms-sidecar: secrets agent on {a} (token in {})",
                running.profile.agent_token_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        println!("kms-sidecar: client profile in {}", running.data_dir.join("profile.json").display());
        let mut signals = Signals::new();
        while let Signal::Reload = signals.next().await {
            match &args_config {
                Some(path) => reload(&running, path),
                None => tracing::warn!("SIGHUP: no --config file to reload"),
            }
        }
        tracing::info!("shutting down: finishing in-flight requests");
        running.shutdown().await;
        Ok(())
    })
}

/// SIGHUP: the policies and the throttling rates from the config file, each put in force only
/// if it is valid (a broken file leaves what was in force). Everything else in the file needs
/// a restart, as WIRE.md says.
fn reload(running: &kms_sidecar::app::Running, path: &std::path::Path) {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload failed: the config does not load; the previous policies and rates stay in force");
            return;
        }
    };
    match kms_sidecar::config::load_policies(&cfg, cfg.base_dir.as_deref()) {
        Ok(set) => {
            let n: usize = set.values().map(Vec::len).sum();
            running.engine.set_policies(set);
            tracing::info!(policies = n, "policies reloaded");
        }
        Err(e) => tracing::error!(error = %e, "policy reload failed; the previous policies stay in force"),
    }
    match running.throttle.reload(cfg.throttling.clone()) {
        Ok(()) => tracing::info!("throttling rates reloaded"),
        Err(e) => tracing::error!(error = %e, "throttling reload failed; the previous rates stay in force"),
    }
}

enum Signal {
    Reload,
    Stop,
}

/// The handlers, registered once so no signal falls between two waits.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            hup: signal(SignalKind::hangup()).expect("SIGHUP handler"),
        }
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
