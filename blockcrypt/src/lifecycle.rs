//! Making and changing volumes: create, import/export, rewrap, snapshot and clone. Every step that
//! writes a header writes data before the pointers to it and syncs before it returns, so a crash
//! leaves either the old or the new volume, never one that does not open.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::disk::Disk;
use crate::kms::KeyService;
use crate::luks1::{Header, PHDR_LEN};
use crate::luksmeta::{self, Meta};
use crate::record::{data_key_len, disk_context, Record, RECORD_UUID, RECORD_VERSION};
use crate::snapshot_socket;
use crate::volume::{io_err, passphrase, HeaderArea, Location, OpenVolume, VolumeError, HEADER_AREA};
use crate::xts::{Algorithm, SectorCipher, SECTOR};

/// The KMS key a volume's data key is wrapped under unless the user names one.
pub const DEFAULT_KEY_ID: &str = "alias/acs/ecs";
/// PBKDF2 iterations for the derived keyslot passphrase: the passphrase is a 256-bit random
/// value, so stretching adds nothing (systemd uses 1000 for such keys too).
pub const KEYSLOT_ITERATIONS: u32 = 1000;

/// Called with (bytes done, bytes in all) during long copies.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

pub struct NewVolume<'a> {
    pub location: &'a Location,
    pub size: u64,
    pub alg: Algorithm,
    pub key_id: &'a str,
}

fn create_file(path: &Path) -> Result<File, VolumeError> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            VolumeError::Exists(path.into())
        } else {
            io_err(path)(e)
        }
    })
}

fn sync_parent(path: &Path) -> Result<(), VolumeError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(parent).and_then(|d| d.sync_all()).map_err(io_err(parent))
}

fn random_disk_id() -> String {
    let mut b = [0u8; 10];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    format!("d-{}", hex_lower(&b))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A fresh header area for `dk`: LUKS header, keyslot 0 under the derived passphrase, and the
/// record in a luksmeta slot.
fn build_header(alg: Algorithm, dk: &[u8], detached: bool, record: &Record) -> Result<Vec<u8>, VolumeError> {
    let mut luks = Header::new(alg, dk, &uuid::Uuid::new_v4().to_string(), detached);
    let mut image = vec![0u8; HEADER_AREA as usize];
    luks.set_keyslot(&mut image, 0, passphrase(dk).as_bytes(), dk, KEYSLOT_ITERATIONS);
    image[..PHDR_LEN].copy_from_slice(&luks.to_bytes());
    let gap_start = luks.keyslots_end().next_multiple_of(4096) as usize;
    let mut meta = Meta::default();
    meta.store(&mut image[gap_start..], &RECORD_UUID, &record.to_bytes())
        .map_err(|e| VolumeError::Usage(format!("record: {e}")))?;
    image[gap_start..gap_start + luksmeta::HEADER_LEN].copy_from_slice(&meta.to_bytes());
    Ok(image)
}

/// Creates the files of a volume keyed by `dk` (header written, payload sparse) and opens it.
fn create_with_key(
    loc: &Location,
    alg: Algorithm,
    dk: &[u8],
    record: &Record,
    size: u64,
) -> Result<Arc<Disk>, VolumeError> {
    check_size(size)?;
    let cipher = SectorCipher::new(alg, dk).map_err(|e| VolumeError::Usage(e.to_string()))?;
    let image = build_header(alg, dk, loc.detached(), record)?;
    let mut made = Vec::new();
    let result = (|| {
        let header = create_file(loc.header_path())?;
        made.push(loc.header_path().to_path_buf());
        header.write_all_at(&image, 0).map_err(io_err(loc.header_path()))?;
        let (data, base) = if loc.detached() {
            header.sync_all().map_err(io_err(loc.header_path()))?;
            let data = create_file(&loc.data)?;
            made.push(loc.data.clone());
            (data, 0)
        } else {
            (header, HEADER_AREA)
        };
        data.set_len(base + size).map_err(io_err(&loc.data))?;
        data.sync_all().map_err(io_err(&loc.data))?;
        sync_parent(&loc.data)?;
        Ok(Arc::new(Disk::new(data, Arc::new(cipher), base, size, false)))
    })();
    if result.is_err() {
        for p in made {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

fn check_size(size: u64) -> Result<(), VolumeError> {
    if size == 0 || !size.is_multiple_of(SECTOR as u64) {
        return Err(VolumeError::Usage(format!("a disk's size must be a non-zero multiple of 512 bytes, not {size}")));
    }
    Ok(())
}

/// A new data key from the KMS for a new disk, and the record that wraps it.
fn new_key(kms: &dyn KeyService, alg: Algorithm, key_id: &str) -> Result<(Zeroizing<Vec<u8>>, Record), VolumeError> {
    let disk_id = random_disk_id();
    let context = disk_context(&disk_id);
    let (dk, wrapped) = kms.generate_data_key(key_id, &context, data_key_len(alg))?;
    let mut record = Record {
        version: RECORD_VERSION,
        disk_id,
        cipher: alg,
        key_id: String::new(),
        key_version_id: String::new(),
        ciphertext_blob: Vec::new(),
        encryption_context: context,
        created: now(),
    };
    record.set_wrapped(&wrapped);
    Ok((dk, record))
}

/// A new, empty (sparse) volume. Its never-written sectors read as noise, as on any LUKS disk.
pub fn create(kms: &dyn KeyService, v: &NewVolume) -> Result<Arc<Disk>, VolumeError> {
    check_size(v.size)?;
    let (dk, record) = new_key(kms, v.alg, v.key_id)?;
    create_with_key(v.location, v.alg, &dk, &record, v.size)
}

/// Copies `len` bytes from `read` into `disk` in large pieces, encrypting them.
fn fill(
    disk: &Disk,
    len: u64,
    read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    progress: Progress,
) -> io::Result<()> {
    fill_ranges(disk, &[(0, len)], read, progress)
}

/// Writes the disk ranges `(offset, len)` (in order) with what `read` gives for them.
fn fill_ranges(
    disk: &Disk,
    ranges: &[(u64, u64)],
    mut read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    progress: Progress,
) -> io::Result<()> {
    const CHUNK: u64 = 4 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mut done = 0;
    for &(start, len) in ranges {
        let mut at = 0;
        while at < len {
            let n = (len - at).min(CHUNK) as usize;
            read(start + at, &mut buf[..n])?;
            disk.write_at(start + at, &mut buf[..n])?;
            at += n as u64;
            done += n as u64;
            progress(done, total);
        }
    }
    disk.flush()
}

/// A new volume holding the contents of a raw image (its size rounded up to whole sectors).
pub fn import(kms: &dyn KeyService, raw: &Path, v: &NewVolume, progress: Progress) -> Result<(), VolumeError> {
    let src = File::open(raw).map_err(io_err(raw))?;
    let raw_len = src.metadata().map_err(io_err(raw))?.len();
    let size = raw_len.next_multiple_of(SECTOR as u64).max(SECTOR as u64);
    let disk = create(kms, &NewVolume { size, ..*v })?;
    let result = fill(
        &disk,
        size,
        |at, buf| {
            let n = buf.len().min(raw_len.saturating_sub(at) as usize);
            buf[n..].fill(0);
            src.read_exact_at(&mut buf[..n], at)
        },
        progress,
    );
    result.map_err(|e| {
        remove_volume(v.location);
        io_err(&v.location.data)(e)
    })
}

fn remove_volume(loc: &Location) {
    let _ = std::fs::remove_file(&loc.data);
    if let Some(h) = &loc.header {
        let _ = std::fs::remove_file(h);
    }
}

/// Decrypts a whole volume into a new raw file.
pub fn export(vol: &OpenVolume, raw: &Path, progress: Progress) -> Result<(), VolumeError> {
    let out = create_file(raw)?;
    let size = vol.disk.size();
    let result = (|| {
        out.set_len(size)?;
        const CHUNK: u64 = 4 << 20;
        let mut buf = vec![0u8; CHUNK as usize];
        // Unwritten sectors are not read at all; written runs of zeroes are left as holes too:
        // an exported disk stays as sparse as its contents.
        let written = vol.disk.allocated()?;
        let total: u64 = written.iter().map(|r| r.1).sum();
        let mut done = 0;
        for (start, len) in written {
            let mut at = 0;
            while at < len {
                let n = (len - at).min(CHUNK) as usize;
                vol.disk.read_at(start + at, &mut buf[..n])?;
                if buf[..n].iter().any(|&b| b != 0) {
                    out.write_all_at(&buf[..n], start + at)?;
                }
                at += n as u64;
                done += n as u64;
                progress(done, total);
            }
        }
        out.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(raw);
        io_err(raw)(e)
    })
}

/// Re-wraps the data key under `key_id` (default: the record's key, i.e. its current version).
/// The data is not touched. The new wrapping is checked to open the volume before it is stored.
pub fn rewrap(kms: &dyn KeyService, loc: &Location, key_id: Option<&str>) -> Result<Record, VolumeError> {
    let area = HeaderArea::read(loc)?;
    let target = key_id.unwrap_or(&area.record.key_id).to_string();
    let wrapped = kms.re_encrypt(&area.record.ciphertext_blob, &area.record.encryption_context, &target)?;
    let dk = kms.decrypt(&wrapped.blob, &area.record.encryption_context)?;
    area.luks.check_key(&dk).map_err(|_| VolumeError::WrongKey(loc.header_path().into()))?;
    let mut record = area.record.clone();
    record.set_wrapped(&wrapped);
    store_record(loc, &area, &record)?;
    Ok(record)
}

/// Writes `record` beside the old one in the gap, syncs, then points the luksmeta header at it.
fn store_record(loc: &Location, area: &HeaderArea, record: &Record) -> Result<(), VolumeError> {
    let path = loc.header_path();
    let mut gap = area.image[area.gap_start..].to_vec();
    let mut meta = area.meta.clone();
    meta.store(&mut gap, &RECORD_UUID, &record.to_bytes()).map_err(|e| VolumeError::Meta(path.into(), e))?;
    let slot = meta.slots.iter().find(|s| s.uuid == RECORD_UUID).expect("just stored");
    let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    let data = &gap[slot.offset as usize..(slot.offset + slot.length) as usize];
    file.write_all_at(data, (area.gap_start + slot.offset as usize) as u64).map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))?;
    file.write_all_at(&meta.to_bytes(), area.gap_start as u64).map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))
}

/// Copies a file, sharing its extents (reflink) where the filesystem can, else its data extents
/// only, so the copy keeps the source's holes (`sparse.rs`).
pub fn copy_file(src: &Path, dst: &Path) -> Result<(), VolumeError> {
    let from = File::open(src).map_err(io_err(src))?;
    let to = create_file(dst)?;
    let result = (|| {
        if rustix::fs::ioctl_ficlone(&to, &from).is_err() {
            crate::sparse::copy_sparse(&from, &to)?;
        }
        to.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(dst);
        io_err(dst)(e)
    })?;
    sync_parent(dst)
}

/// A point-in-time copy of a volume that is not being served: same data key, same record.
pub fn snapshot(src: &Location, dst: &Location) -> Result<(), VolumeError> {
    copy_volume(src, dst, copy_file)
}

/// A point-in-time copy of a volume that is being written (served, or open in qemu), taken
/// without stopping the writer, holding every write that completed before it (everything a
/// client was told is written, flushed or not) and none after: what a crash at that instant would
/// leave. Where the filesystem shares extents (XFS with reflink, btrfs) the data file is cloned in
/// one FICLONE, which it makes atomic with respect to every write – incremental, and no write
/// waits. Elsewhere the `blockcrypt serve` writing the disk makes the copy between two writes
/// (`snapshot_socket.rs`; writes wait while it copies the written data). A disk in use by anything
/// else (qemu) is refused there: a byte copy under a writer would mix moments.
pub fn snapshot_online(src: &Location, dst: &Location) -> Result<(), VolumeError> {
    copy_volume(src, dst, |from, to| {
        let src_file = File::open(from).map_err(io_err(from))?;
        let dst_file = create_file(to)?;
        let copied = match rustix::fs::ioctl_ficlone(&dst_file, &src_file) {
            Ok(()) => dst_file.sync_all().map_err(io_err(to)),
            Err(clone_err) => match snapshot_socket::ask(&src_file, &dst_file) {
                Ok(()) => Ok(()),
                Err(snapshot_socket::AskError::Failed(why)) => Err(VolumeError::InUse(format!(
                    "{}: the server of this disk could not copy it: {why}",
                    from.display()
                ))),
                Err(snapshot_socket::AskError::NotServed) => Err(VolumeError::InUse(format!(
                    "{}: the disk is in use by another program than blockcrypt serve, and a snapshot of it \
                     must be one atomic clone, which this filesystem cannot make ({}): use XFS (reflink) or \
                     btrfs, or stop the program first",
                    from.display(),
                    io::Error::from(clone_err)
                ))),
            },
        };
        copied.inspect_err(|_| {
            let _ = std::fs::remove_file(to);
        })?;
        sync_parent(to)
    })
}

/// A snapshot's steps, whichever way its data file is copied: same layout as the source, the data
/// file by `copy_data`, then a detached header (which changes only by rewrap, written whole and
/// in order); a failure leaves no half snapshot.
fn copy_volume(
    src: &Location,
    dst: &Location,
    copy_data: impl FnOnce(&Path, &Path) -> Result<(), VolumeError>,
) -> Result<(), VolumeError> {
    HeaderArea::read(src)?;
    if src.detached() != dst.detached() {
        return Err(VolumeError::Usage(
            "a snapshot keeps its source's layout: give --header for both or neither".into(),
        ));
    }
    copy_data(&src.data, &dst.data)?;
    if let (Some(s), Some(d)) = (&src.header, &dst.header) {
        if let Err(e) = copy_file(s, d) {
            let _ = std::fs::remove_file(&dst.data);
            return Err(e);
        }
    }
    Ok(())
}

/// A new disk from a snapshot under a new data key from the KMS: every sector is decrypted
/// under the old key and encrypted under the new one (EBS's copy with a different key).
pub fn clone_rekeyed(
    kms: &dyn KeyService,
    src: &OpenVolume,
    dst: &Location,
    alg: Algorithm,
    key_id: &str,
    progress: Progress,
) -> Result<(), VolumeError> {
    let size = src.disk.size();
    let disk = create(kms, &NewVolume { location: dst, size, alg, key_id })?;
    // Sectors never written (holes in the source's file) stay unwritten in the clone.
    let written = src.disk.allocated().map_err(io_err(&src.location.data))?;
    fill_ranges(&disk, &written, |at, buf| src.disk.read_at(at, buf), progress).map_err(|e| {
        remove_volume(dst);
        io_err(&dst.data)(e)
    })
}

/// A new disk from a snapshot with the same data key: a copy under a new LUKS UUID (two disks
/// with one UUID confuse udev and cryptsetup on a host that sees both).
pub fn clone_same_key(src: &Location, dst: &Location) -> Result<(), VolumeError> {
    snapshot(src, dst)?;
    let renamed = (|| {
        let mut area = HeaderArea::read(dst)?;
        area.luks.uuid = uuid::Uuid::new_v4().to_string();
        let path = dst.header_path();
        let file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
        file.write_all_at(&area.luks.to_bytes(), 0).map_err(io_err(path))?;
        file.sync_data().map_err(io_err(path))
    })();
    if renamed.is_err() {
        remove_volume(dst);
    }
    renamed
}
