//! Start-up: data dir, access keys, engine, listeners, profile; and orderly shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kms_core::crypto::seal::{Protector, SoftwareRootKey};
use kms_core::crypto::token::{Token, TokenRootKey};
use kms_core::{Engine, EngineOptions, Principal, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::auth::{AccessKey, Authenticator};
use crate::config::{load_or_create_credentials, write_private, Config, Profile, ServiceKey};
use crate::metrics::Metrics;
use crate::server::{api_handler, serve_with, AppState, Listener};
use crate::start_error::StartError;
use crate::tls;

pub const ENV_ACCESS_KEY_ID: &str = "KMS_ACCESS_KEY_ID";
pub const ENV_ACCESS_KEY_SECRET: &str = "KMS_ACCESS_KEY_SECRET";

/// A running sidecar.
pub struct Running {
    pub data_dir: PathBuf,
    pub http: Option<std::net::SocketAddr>,
    pub https: Option<std::net::SocketAddr>,
    pub profile: Profile,
    /// Set on the first start: the generated owner key, to show once.
    pub new_owner_key: Option<(String, Zeroizing<String>)>,
    pub engine: Arc<Engine>,
    /// The console's URL, when it is served.
    pub console: Option<String>,
    /// The request rates in force; `kms-sidecar` reloads them on SIGHUP.
    pub throttle: Arc<crate::throttle::Throttle>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    audit: Option<Arc<crate::audit::AuditLog>>,
    _maintenance: kms_core::engine::MaintenanceHandle,
}

impl Running {
    /// Stops accepting, waits for in-flight requests, stops background work.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // The last read-only lines are anchored before the process goes.
        if let Some(a) = &self.audit {
            a.flush().await;
        }
    }
}

/// The root key that seals the store in `dir`, and the token when one is configured. With the
/// root key in a token no `root.key` file is made at all; `create: false` (verifying tools) never
/// makes a software root key either.
pub fn open_root_key(
    hsm: &crate::config::HsmConfig,
    dir: &std::path::Path,
    create: bool,
) -> Result<RootKey, StartError> {
    let token = if hsm.enabled || hsm.root_key_in_hsm {
        Some(Token::open(&hsm.token_config().map_err(StartError::Config)?)?)
    } else {
        None
    };
    let protector: Arc<dyn Protector> = match &token {
        Some(t) if hsm.root_key_in_hsm => Arc::new(TokenRootKey::load_or_create(t.clone(), &hsm.root_key_label)?),
        _ if create => Arc::new(SoftwareRootKey::load_or_create(&dir.join("root.key"))?),
        _ => Arc::new(SoftwareRootKey::load(&dir.join("root.key"))?),
    };
    Ok(RootKey { protector, token })
}

/// What seals the store, and the token it may live in.
pub struct RootKey {
    pub protector: Arc<dyn Protector>,
    pub token: Option<Arc<Token>>,
}

/// Starts everything `cfg` describes. Listening addresses may use port 0; the bound ones are in
/// the result and in `profile.json`.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    let dir = cfg.data_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));

    let env_owner = match (std::env::var(ENV_ACCESS_KEY_ID), std::env::var(ENV_ACCESS_KEY_SECRET)) {
        (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => Some((id, Zeroizing::new(secret))),
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
            return Err(StartError::Config(format!(
                "set both {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET}, or neither"
            )))
        }
        _ => None,
    };
    let (creds, created) = load_or_create_credentials(&dir, env_owner.is_some())?;
    let mut keys: Vec<AccessKey> = Vec::new();
    for k in creds.access_keys.iter().chain(cfg.access_keys.iter()) {
        keys.push(k.to_access_key().map_err(StartError::Config)?);
    }
    if let Some((id, secret)) = &env_owner {
        keys.retain(|k| &k.id != id);
        keys.push(AccessKey { id: id.clone(), secret: secret.clone(), principal: Principal::Owner, enabled: true });
    }
    let key_ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let stored_owner = creds.access_keys.iter().find(|k| k.principal == "owner");
    let new_owner_key =
        if created { stored_owner.map(|k| (k.id.clone(), Zeroizing::new(k.secret.clone()))) } else { None };

    let engine_cfg = cfg.engine.clone();
    let engine_dir = dir.clone();
    let hsm = cfg.hsm.clone();
    let store = cfg.store_location().map_err(StartError::Config)?;
    let node_id = cfg.node_id(true).map_err(StartError::Config)?;
    let store_lease = Duration::from_millis(cfg.store.lease_ms.max(100));
    let engine = tokio::task::spawn_blocking(move || {
        let RootKey { protector, token } = open_root_key(&hsm, &engine_dir, true)?;
        let opts = EngineOptions {
            config: engine_cfg,
            store,
            node_id,
            store_lease,
            protector,
            clock: Arc::new(SystemClock),
            token,
        };
        Ok::<_, StartError>(Engine::open(opts)?)
    })
    .await
    .map_err(|e| e.to_string())??;
    let engine = Arc::new(engine);
    let maintenance = engine.spawn_maintenance(Duration::from_secs(cfg.maintenance_interval_secs.max(1)));

    engine.set_policies(crate::config::load_policies(&cfg, cfg.base_dir.as_deref()).map_err(StartError::Config)?);
    let audit = if cfg.audit.enabled {
        let adir = cfg.audit.dir.clone().unwrap_or_else(|| dir.join("audit"));
        let anchors: Arc<dyn crate::audit::AnchorStore> = Arc::new(Arc::downgrade(&engine));
        let (max_bytes, key) = (cfg.audit.max_file_bytes, engine.audit_chain_key());
        // Reads the anchor from the store: blocking work, off the async workers.
        let log = tokio::task::spawn_blocking(move || crate::audit::AuditLog::open(&adir, max_bytes, key, anchors))
            .await
            .map_err(|e| e.to_string())??;
        Some(Arc::new(log))
    } else {
        None
    };
    let throttle = Arc::new(crate::throttle::Throttle::new(cfg.throttling.clone()).map_err(StartError::Config)?);
    let state = Arc::new(AppState {
        throttle: throttle.clone(),
        audit,
        engine: engine.clone(),
        auth: Authenticator::new(keys, cfg.max_clock_skew_secs, Arc::new(SystemClock)),
        metrics: Metrics::default(),
        max_body_bytes: cfg.max_body_bytes,
    });
    let api = api_handler(state.clone());
    let limits = Arc::new(cfg.connections.clone());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut profile = Profile::default();

    let mut http = None;
    if !cfg.listen.is_empty() {
        let l = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| StartError::listen("listen", &cfg.listen, e))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                "plain HTTP on {addr}, a non-loopback address: requests, signatures and plaintexts cross the network \
                 unencrypted – serve other hosts with --tls-listen, keep --listen on 127.0.0.1"
            );
        }
        http = Some(addr);
        profile.endpoint = format!("http://{addr}");
        tasks.push(tokio::spawn(serve_with(api.clone(), Listener::Tcp(l), shutdown_rx.clone(), limits.clone())));
    }
    let mut https = None;
    if let Some(tls_listen) = &cfg.tls_listen {
        let (files, acceptor) = tls_acceptor(&cfg, &dir)?;
        let l = tokio::net::TcpListener::bind(tls_listen)
            .await
            .map_err(|e| StartError::listen("tls_listen", tls_listen, e))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        https = Some(addr);
        profile.tls_endpoint = Some(format!("https://localhost:{}", addr.port()));
        profile.ca_file = files.ca.clone();
        tasks.push(tokio::spawn(serve_with(
            api.clone(),
            Listener::Tls(l, acceptor),
            shutdown_rx.clone(),
            limits.clone(),
        )));
    }
    if let Some(path) = &cfg.unix_socket {
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path)
            .map_err(|e| StartError::listen("unix_socket", &path.display().to_string(), e))?;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
        tasks.push(tokio::spawn(serve_with(api.clone(), Listener::Unix(l), shutdown_rx.clone(), limits.clone())));
    }
    if cfg.agent.enabled() {
        if matches!(crate::config::parse_principal(&cfg.agent.principal), Ok(Principal::Owner)) {
            tracing::warn!(
                "the secrets agent reads as the owner: its token opens every secret – set [agent] principal to a \
                 user whose policies allow only the app's secrets"
            );
        }
        let (token, token_file) = crate::agent::load_token(&cfg.agent, &dir)?;
        let agent = Arc::new(crate::agent::Agent::new(&cfg.agent, token).map_err(StartError::Config)?);
        let handler = crate::agent::agent_handler(state.clone(), agent);
        if let Some(listen) = &cfg.agent.listen {
            let addr = crate::agent::loopback_addr(listen).map_err(StartError::Config)?;
            let l =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| StartError::listen("agent listen", listen, e))?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            profile.agent_endpoint = Some(format!("http://{bound}"));
            tasks.push(tokio::spawn(serve_with(
                handler.clone(),
                Listener::Tcp(l),
                shutdown_rx.clone(),
                limits.clone(),
            )));
        }
        if let Some(path) = &cfg.agent.unix_socket {
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path)
                .map_err(|e| StartError::listen("agent unix_socket", &path.display().to_string(), e))?;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
            tasks.push(tokio::spawn(serve_with(handler, Listener::Unix(l), shutdown_rx.clone(), limits.clone())));
        }
        profile.agent_token_file = Some(token_file);
    }
    if tasks.is_empty() {
        return Err(StartError::Config("nothing to listen on: set listen, tls_listen or unix_socket".into()));
    }
    tasks.extend(crate::k8s::start(&cfg.kubernetes, state.clone(), shutdown_rx.clone())?);
    let mut console = None;
    if let Some(listen) = &cfg.console.listen {
        let l =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| StartError::listen("console listen", listen, e))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        if !addr.ip().is_loopback() && !cfg.console.tls {
            return Err(StartError::Config(format!(
                "console listen {addr}: not a loopback address, and [console] tls is off – sign-ins and session \
                 cookies would cross the network in clear; set [console] tls = true or listen on 127.0.0.1"
            )));
        }
        crate::console::password::check(&cfg.console.users, &key_ids).map_err(StartError::Config)?;
        let verify: Option<crate::console::AuditVerifier> = cfg.audit.enabled.then(|| {
            let mut cfg = cfg.clone();
            cfg.data_dir = Some(dir.clone());
            Arc::new(move || crate::audit::verify_configured(&cfg, true)) as crate::console::AuditVerifier
        });
        let handler = crate::console::console_handler(Arc::new(crate::console::Console::new(
            state.clone(),
            &cfg.console,
            verify,
        )));
        let listener = if cfg.console.tls { Listener::Tls(l, tls_acceptor(&cfg, &dir)?.1) } else { Listener::Tcp(l) };
        let scheme = if cfg.console.tls { "https" } else { "http" };
        console = Some(format!("{scheme}://{addr}/"));
        tasks.push(tokio::spawn(serve_with(handler, listener, shutdown_rx.clone(), limits.clone())));
    }

    if env_owner.is_none() {
        if let Some(k) = stored_owner {
            profile.access_key_id = Some(k.id.clone());
            profile.access_key_secret = Some(k.secret.clone());
        }
    }
    for k in &creds.access_keys {
        if let Some(svc) = k.principal.strip_prefix("service:") {
            profile.services.insert(
                svc.to_string(),
                ServiceKey { access_key_id: k.id.clone(), access_key_secret: k.secret.clone() },
            );
        }
    }
    let profile_json = Zeroizing::new(serde_json::to_vec_pretty(&profile).map_err(|e| e.to_string())?);
    write_private(&dir.join("profile.json"), &profile_json)?;
    tracing::info!(data_dir = %dir.display(), http = ?http, https = ?https, unix = ?cfg.unix_socket,
        keys = engine.list_keys(&kms_core::Caller::owner(), Default::default()).map(|r| r.total_count).unwrap_or(0),
        "kms-sidecar ready");
    Ok(Running {
        data_dir: dir,
        http,
        https,
        profile,
        new_owner_key,
        engine,
        console,
        throttle,
        shutdown,
        tasks,
        audit: state.audit.clone(),
        _maintenance: maintenance,
    })
}

/// The HTTPS acceptor for the configured certificate, or the one generated in the data dir.
fn tls_acceptor(cfg: &Config, dir: &Path) -> Result<(tls::TlsFiles, tokio_rustls::TlsAcceptor), StartError> {
    let files = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(cert), Some(key)) => tls::TlsFiles { cert: cert.clone(), key: key.clone(), ca: None },
        (None, None) => tls::ensure_generated(&dir.join("tls"), &[])?,
        _ => return Err(StartError::Config("tls.cert and tls.key go together".into())),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&files).map_err(StartError::Config)?);
    Ok((files, acceptor))
}
