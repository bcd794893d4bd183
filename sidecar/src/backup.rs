//! `kms-sidecar backup` and `restore` (BACKUP.md): an online, consistent copy of a sidecar's
//! SQLite store and of everything needed to open and serve it, and its return to a data
//! directory – checked file by file, and proven to open before it is called restored.
//!
//! The order of the copy is what makes it consistent: the store first (one snapshot), then the
//! audit log (so the log reaches at least the anchor the snapshot holds), then the data
//! directory's other files, then the manifest – a backup without one is incomplete.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use kms_core::store::snapshot;
use kms_core::StoreLocation;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{write_private, Config};
use crate::start_error::StartError;

pub const MANIFEST: &str = "backup.json";
const FORMAT: &str = "kms-sidecar backup";
const VERSION: u32 = 1;
/// The store's name inside a backup and in a restored data directory.
const STORE: &str = "kms.db";
const AUDIT: &str = "audit";

/// `backup.json`: what the backup holds, each file's length and SHA-256.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub created: String,
    /// `file root.key` (in the backup), or `token <label>` (not in it: the token must be there).
    pub root_key: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the backup (and to the data directory it is restored to).
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Copies the sidecar `cfg` describes – running or not – into the new directory `to`.
pub fn backup(cfg: &Config, to: &Path) -> Result<Manifest, StartError> {
    // Canonical paths, so that the store's own files are recognised in the walk below.
    let canonical = |p: PathBuf| p.canonicalize().unwrap_or(p);
    let data = canonical(cfg.data_dir());
    let src_store = match cfg.store_location().map_err(StartError::Config)? {
        StoreLocation::Sqlite(p) => p,
        StoreLocation::Postgres(_) => {
            return Err(StartError::Config(
                "the store is a shared PostgreSQL database: back it up with PostgreSQL's own tools \
                 (pg_dump, or pg_basebackup with WAL archiving), and keep each node's root key with it"
                    .into(),
            ))
        }
    };
    if !src_store.is_file() {
        return Err(StartError::Config(format!("{}: no store to back up", src_store.display())));
    }
    let src_store = canonical(src_store);
    // A backup inside the data directory would copy itself, and dies with it.
    if resolved(to).starts_with(&data) {
        return Err(StartError::Config(format!(
            "{} is inside the data directory {}: a backup goes elsewhere (another disk, ideally)",
            to.display(),
            data.display()
        )));
    }
    new_private_dir(to)?;
    let mut files = Vec::new();

    // 1. The store: one snapshot.
    let store_copy = to.join(STORE);
    snapshot::copy_sqlite(&src_store, &store_copy).map_err(|e| StartError::Other(e.to_string()))?;
    files.push(entry(to, STORE)?);

    // 2. The audit log, after the snapshot: it then reaches the anchor the snapshot holds. A line
    //    being written as it is read is left out (only whole lines are copied).
    let audit = canonical(cfg.audit.dir.clone().unwrap_or_else(|| data.join(AUDIT)));
    if audit.is_dir() {
        for name in regular_files(&audit)? {
            let rel = format!("{AUDIT}/{name}");
            let mut bytes = read(&audit.join(&name))?;
            bytes.truncate(bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
            write_new(&to.join(&rel), &bytes)?;
            files.push(entry(to, &rel)?);
        }
    }

    // 3. Everything else the data directory holds: the root key, credentials, TLS files, the
    //    agent token, the node id – not the live store's own files, not the audit log again.
    let skip: Vec<PathBuf> = ["", "-wal", "-shm", ".lock"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", src_store.display())))
        .chain([audit.clone()])
        .collect();
    for rel in tree(&data, &skip)? {
        if rel.ends_with(".tmp") {
            continue;
        }
        write_new(&to.join(&rel), &read(&data.join(&rel))?)?;
        files.push(entry(to, &rel)?);
    }

    let root_key = if cfg.hsm.root_key_in_hsm {
        format!("token {}", cfg.hsm.root_key_label)
    } else if files.iter().any(|f| f.path == "root.key") {
        "file root.key".to_string()
    } else {
        return Err(StartError::Other(format!("{}: no root.key to back up", data.display())));
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        created: kms_core::clock::format_iso(time::OffsetDateTime::now_utc().unix_timestamp()),
        root_key,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest).expect("plain struct");
    write_private(&to.join(MANIFEST), &text).map_err(StartError::Other)?;
    Ok(manifest)
}

/// Puts the backup `from` into the data directory `cfg` names, which must not hold a store or a
/// root key yet; every file is checked against the manifest first, and the restored store must
/// open under the restored (or configured token) root key.
pub fn restore(cfg: &Config, from: &Path) -> Result<Manifest, StartError> {
    let data = cfg.data_dir();
    let text = read(&from.join(MANIFEST))
        .map_err(|e| StartError::Config(format!("{e} (a backup without its manifest is incomplete)")))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| StartError::Config(format!("{}: not a backup manifest: {e}", from.join(MANIFEST).display())))?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(StartError::Config(format!(
            "{}: {:?} version {} is not a backup this build reads ({FORMAT:?} version {VERSION})",
            from.display(),
            manifest.format,
            manifest.version
        )));
    }
    if !manifest.files.iter().any(|f| f.path == STORE) {
        return Err(StartError::Other(format!("{}: the backup holds no store", from.display())));
    }
    // Never trust the manifest's paths: relative, plain names only.
    for f in &manifest.files {
        let p = Path::new(&f.path);
        if f.path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StartError::Other(format!("{}: manifest path {:?} is not allowed", from.display(), f.path)));
        }
    }
    for f in &manifest.files {
        let got = entry(from, &f.path)?;
        if got.bytes != f.bytes || got.sha256 != f.sha256 {
            return Err(StartError::Other(format!(
                "{}: {} does not match the manifest (damaged or edited backup); nothing was restored",
                from.display(),
                f.path
            )));
        }
    }
    for name in [STORE, "root.key", "credentials.toml"] {
        if data.join(name).exists() {
            return Err(StartError::Config(format!(
                "{} already holds {name}: restore only into a new data directory (nothing was changed)",
                data.display()
            )));
        }
    }
    fs::create_dir_all(&data).map_err(|e| StartError::Other(format!("{}: {e}", data.display())))?;
    let _ = fs::set_permissions(&data, fs::Permissions::from_mode(0o700));
    let mut written = Vec::new();
    let copied = manifest.files.iter().try_for_each(|f| {
        let to = data.join(&f.path);
        write_new(&to, &read(&from.join(&f.path))?)?;
        written.push(to);
        Ok(())
    });
    // Proof: the restored store opens under its root key (and the engine closes it again).
    if let Err(e) = copied.and_then(|()| open_restored(cfg, &data)) {
        for p in &written {
            let _ = fs::remove_file(p);
        }
        let _ = fs::remove_file(data.join(format!("{STORE}.lock")));
        return Err(e);
    }
    Ok(manifest)
}

fn open_restored(cfg: &Config, data: &Path) -> Result<(), StartError> {
    let root = crate::app::open_root_key(&cfg.hsm, data, false)?;
    let opts = kms_core::EngineOptions {
        config: cfg.engine.clone(),
        store: StoreLocation::Sqlite(data.join(STORE)),
        node_id: "restore".into(),
        store_lease: kms_core::engine::DEFAULT_STORE_LEASE,
        protector: root.protector,
        clock: std::sync::Arc::new(kms_core::SystemClock),
        token: root.token,
    };
    drop(kms_core::Engine::open(opts)?);
    Ok(())
}

/// Where `path` is or would be: its deepest existing ancestor resolved (links and all), the
/// rest appended.
fn resolved(path: &Path) -> PathBuf {
    let mut existing = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let base = existing.canonicalize().unwrap_or(existing);
    rest.iter().rev().fold(base, |p, n| p.join(n))
}

/// Makes `dir` (absent or empty) with mode 0700.
fn new_private_dir(dir: &Path) -> Result<(), StartError> {
    let at = |e: std::io::Error| StartError::Other(format!("{}: {e}", dir.display()));
    if dir.exists() && fs::read_dir(dir).map_err(at)?.next().is_some() {
        return Err(StartError::Config(format!("{} is not empty: a backup goes into a new directory", dir.display())));
    }
    fs::create_dir_all(dir).map_err(at)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(at)
}

fn read(path: &Path) -> Result<Vec<u8>, StartError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| StartError::Other(format!("{}: {e}", path.display())))?;
    Ok(bytes)
}

/// Writes a new file (never replacing one) with mode 0600, its directories 0700, and syncs both.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), StartError> {
    let at = |e: std::io::Error| StartError::Other(format!("{}: {e}", path.display()));
    let dir = path.parent().expect("a file in a directory");
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(at)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(at)?;
    }
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(at)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(at)?;
    kms_core::crypto::seal::sync_dir(path).map_err(at)
}

/// A file's manifest entry, read back from where it was written.
fn entry(base: &Path, rel: &str) -> Result<FileEntry, StartError> {
    let bytes = read(&base.join(rel))?;
    Ok(FileEntry { path: rel.to_string(), bytes: bytes.len() as u64, sha256: hex::encode(Sha256::digest(&bytes)) })
}

/// The names of the regular files directly in `dir`, sorted.
fn regular_files(dir: &Path) -> Result<Vec<String>, StartError> {
    let at = |e: std::io::Error| StartError::Other(format!("{}: {e}", dir.display()));
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(at)? {
        let e = e.map_err(at)?;
        // Links are not followed: a backup copies the sidecar's own files only.
        if e.file_type().map_err(at)?.is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Every regular file under `dir` (relative paths, `/`-separated, sorted), leaving out `skip`
/// (files, or directories with all below them).
fn tree(dir: &Path, skip: &[PathBuf]) -> Result<Vec<String>, StartError> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let abs = dir.join(&rel);
        let at = |e: std::io::Error| StartError::Other(format!("{}: {e}", abs.display()));
        for e in fs::read_dir(&abs).map_err(at)? {
            let e = e.map_err(at)?;
            let path = e.path();
            if skip.contains(&path) {
                continue;
            }
            let t = e.file_type().map_err(at)?;
            let r = rel.join(e.file_name());
            if t.is_dir() {
                todo.push(r);
            } else if t.is_file() {
                out.push(r.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}
