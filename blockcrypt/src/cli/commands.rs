//! What each subcommand does, with library errors mapped to exit codes.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use blockcrypt::kms::{KeyService, KmsArgs};
use blockcrypt::lifecycle::{self, NewVolume};
use blockcrypt::luks1::LuksError;
use blockcrypt::volume::{self, passphrase, HeaderArea, Location, OpenVolume, VolumeError};
use rustix::fs::FlockOperation;

use super::progress::Bar;
use super::*;

pub fn connect(args: &KmsArgs) -> Result<Box<dyn KeyService>, Failure> {
    Ok(args.connect("ecs")?)
}

pub fn fail(e: VolumeError) -> Failure {
    let code = match e {
        VolumeError::Kms(k) => return k.into(),
        VolumeError::WrongKey(_) => EXIT_KMS_REFUSED,
        VolumeError::Luks(..)
        | VolumeError::Meta(..)
        | VolumeError::Record(..)
        | VolumeError::NoRecord(_)
        | VolumeError::Damaged(..) => EXIT_VOLUME,
        VolumeError::InUse(_) => EXIT_IN_USE,
        VolumeError::Io { .. } | VolumeError::Exists(_) | VolumeError::Usage(_) => EXIT_OTHER,
    };
    Failure::new(code, e)
}

impl VolumeArg {
    pub fn location(&self) -> Location {
        Location::new(&self.volume, self.header.clone())
    }
}

/// Holds a shared lock on a volume's data file: no `serve` (which locks it exclusively) runs
/// while the volume is copied.
pub fn lock_idle(loc: &Location) -> Result<File, Failure> {
    let f = File::open(&loc.data).map_err(|e| Failure::new(EXIT_OTHER, format!("{}: {e}", loc.data.display())))?;
    rustix::fs::flock(&f, FlockOperation::NonBlockingLockShared)
        .map_err(|_| Failure::new(EXIT_IN_USE, format!("{}: the volume is being served", loc.data.display())))?;
    blockcrypt::image_lock::lock(&f, blockcrypt::image_lock::Access::ReadOnly)
        .map_err(|e| Failure::new(EXIT_IN_USE, format!("{}: {e}", loc.data.display())))?;
    Ok(f)
}

fn open(kms: &dyn KeyService, loc: &Location, read_only: bool) -> Result<OpenVolume, Failure> {
    volume::open(loc, kms, read_only).map_err(fail)
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Create { vol, size, key, preallocate } => {
            let kms = connect(&cli.kms)?;
            let loc = vol.location();
            let nv = NewVolume { location: &loc, size, alg: key.cipher.into(), key_id: &key.key_id };
            let disk = lifecycle::create(kms.as_ref(), &nv).map_err(fail)?;
            if preallocate {
                let bar = Bar::new("zeroing");
                let r = (|| {
                    let step = 64u64 << 20;
                    let mut at = 0;
                    while at < size {
                        let n = step.min(size - at);
                        disk.write_zeroes(at, n, true)?;
                        at += n;
                        bar.update(at, size);
                    }
                    disk.flush()
                })();
                bar.finish();
                r.map_err(|e| Failure::new(EXIT_OTHER, format!("{}: {e}", loc.data.display())))?;
            }
            print_summary(&loc)
        }
        Command::Import { raw, vol, key } => {
            let kms = connect(&cli.kms)?;
            let loc = vol.location();
            let nv = NewVolume { location: &loc, size: 0, alg: key.cipher.into(), key_id: &key.key_id };
            let bar = Bar::new("importing");
            let r = lifecycle::import(kms.as_ref(), &raw, &nv, &|d, t| bar.update(d, t));
            bar.finish();
            r.map_err(fail)?;
            print_summary(&loc)
        }
        Command::Export { vol, raw } => {
            let loc = vol.location();
            let _lock = lock_idle(&loc)?;
            let kms = connect(&cli.kms)?;
            let v = open(kms.as_ref(), &loc, true)?;
            let bar = Bar::new("exporting");
            let r = lifecycle::export(&v, &raw, &|d, t| bar.update(d, t));
            bar.finish();
            r.map_err(fail)
        }
        Command::Serve { exports, opts } => {
            let kms = connect(&cli.kms)?;
            super::serve::serve(kms.as_ref(), &exports, opts)
        }
        Command::Snapshot { vol, snapshot, snapshot_header } => {
            let loc = vol.location();
            let dst = Location::new(snapshot, snapshot_header);
            match lock_idle(&loc) {
                Ok(_lock) => lifecycle::snapshot(&loc, &dst).map_err(fail),
                // Being written (served, or open in qemu): a copy in one atomic clone.
                Err(f) if f.code == EXIT_IN_USE => lifecycle::snapshot_online(&loc, &dst).map_err(fail),
                Err(f) => Err(f),
            }
        }
        Command::Clone { vol, new, new_header, new_key, cipher, key_id } => {
            let src = vol.location();
            let dst = Location::new(new, new_header);
            let _lock = lock_idle(&src)?;
            if !new_key {
                return lifecycle::clone_same_key(&src, &dst).map_err(fail).and_then(|_| print_summary(&dst));
            }
            let kms = connect(&cli.kms)?;
            let v = open(kms.as_ref(), &src, true)?;
            let alg = cipher.map(Into::into).unwrap_or(v.area.luks.algorithm);
            let key_id = key_id.unwrap_or_else(|| v.area.record.key_id.clone());
            let bar = Bar::new("re-encrypting");
            let r = lifecycle::clone_rekeyed(kms.as_ref(), &v, &dst, alg, &key_id, &|d, t| bar.update(d, t));
            bar.finish();
            r.map_err(fail)?;
            print_summary(&dst)
        }
        Command::Rewrap { vol, key_id } => {
            let kms = connect(&cli.kms)?;
            let loc = vol.location();
            let r = lifecycle::rewrap(kms.as_ref(), &loc, key_id.as_deref()).map_err(fail)?;
            println!("rewrapped under {} version {}", r.key_id, r.key_version_id);
            Ok(())
        }
        Command::Info { vol, json } => info(&vol.location(), json),
        Command::Passphrase { vol, qemu_secret } => {
            let kms = connect(&cli.kms)?;
            let loc = vol.location();
            let area = HeaderArea::read(&loc).map_err(fail)?;
            let dk = area.unlock(&loc, kms.as_ref()).map_err(fail)?;
            let pass = passphrase(&dk);
            match qemu_secret {
                Some(path) => write_secret(&path, pass.as_bytes()),
                None => {
                    // A newline would become part of the passphrase in a file made by `> FILE`.
                    use std::io::IsTerminal;
                    let mut out = std::io::stdout();
                    let nl = if out.is_terminal() { "\n" } else { "" };
                    write!(out, "{}{nl}", pass.as_str())
                        .and_then(|_| out.flush())
                        .map_err(|e| Failure::new(EXIT_OTHER, e))
                }
            }
        }
        Command::Check { vol } => check(&cli.kms, &vol.location()),
    }
}

fn write_secret(path: &Path, secret: &[u8]) -> Result<(), Failure> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::new(EXIT_OTHER, format!("{}: {e}", path.display())))?;
    f.write_all(secret)
        .and_then(|_| f.sync_all())
        .map_err(|e| Failure::new(EXIT_OTHER, format!("{}: {e}", path.display())))
}

fn summary(loc: &Location, area: &HeaderArea) -> serde_json::Value {
    let data_len = std::fs::metadata(&loc.data).map(|m| m.len()).unwrap_or(0);
    let size = volume::payload(loc, &area.luks, data_len).map(|(_, s)| s).ok();
    let r = &area.record;
    serde_json::json!({
        "volume": loc.data,
        "header": loc.header,
        "format": "LUKS1",
        "uuid": area.luks.uuid,
        "cipher": r.cipher.spec(),
        "key_bytes": area.luks.key_bytes,
        "payload_offset": area.luks.payload_bytes(),
        "size": size,
        "disk_id": r.disk_id,
        "key_id": r.key_id,
        "key_version_id": r.key_version_id,
        "encryption_context": r.encryption_context,
        "created": r.created,
        "keyslots": area.luks.slots.iter().enumerate().filter(|(_, s)| s.active).map(|(i, _)| i).collect::<Vec<_>>(),
    })
}

fn print_summary(loc: &Location) -> Result<(), Failure> {
    info(loc, false)
}

fn info(loc: &Location, json: bool) -> Result<(), Failure> {
    let area = HeaderArea::read(loc).map_err(fail)?;
    let v = summary(loc, &area);
    if json {
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    for (k, val) in v.as_object().expect("object") {
        let shown = match val {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        println!("{k:<20} {shown}");
    }
    Ok(())
}

fn check(args: &KmsArgs, loc: &Location) -> Result<(), Failure> {
    let area = HeaderArea::read(loc).map_err(fail)?;
    let kms = connect(args)?;
    let dk = area.unlock(loc, kms.as_ref()).map_err(fail)?;
    let mut problems = Vec::new();
    match area.luks.unlock(&area.image, passphrase(&dk).as_bytes()) {
        Ok((slot, key)) if openssl::memcmp::eq(&key, &dk) => {
            println!("keyslot {slot}: opens with the derived passphrase")
        }
        Err(e @ LuksError::Damaged(_)) => problems.push(format!("keyslot: {e}")),
        _ => {
            problems.push("no keyslot opens with the derived passphrase (qemu and nbdkit will not open it)".to_string())
        }
    }
    let data_len = std::fs::metadata(&loc.data).map_err(|e| Failure::new(EXIT_OTHER, e))?.len();
    match volume::payload(loc, &area.luks, data_len) {
        Ok((_, size)) => println!("payload: {size} bytes"),
        Err(e) => problems.push(e.to_string()),
    }
    println!("record: {} under {} ({})", area.record.disk_id, area.record.key_id, area.record.key_version_id);
    if problems.is_empty() {
        println!("ok");
        return Ok(());
    }
    for p in &problems {
        println!("problem: {p}");
    }
    Err(Failure::new(EXIT_CHECK, format!("{} problem(s)", problems.len())))
}
