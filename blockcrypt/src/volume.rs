//! A volume on disk: where its header lives (in the image, or a detached header file), reading
//! and checking the header, the luksmeta gap and the record, and unlocking the data key through
//! the KMS. Creating, rewrapping and copying volumes are in `lifecycle`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::disk::Disk;
use crate::kms::{KeyService, KmsFailure};
use crate::luks1::{Header, LuksError, PAYLOAD_SECTORS, PHDR_LEN};
use crate::luksmeta::{Meta, MetaError};
use crate::record::{Record, RecordError, RECORD_UUID};
use crate::xts::{SectorCipher, SECTOR};

/// A detached header file is as long as an attached volume's header: 2 MiB.
pub const HEADER_AREA: u64 = PAYLOAD_SECTORS * SECTOR as u64;
/// The largest header area read (blockcrypt makes 2 MiB; cryptsetup's and qemu's LUKS1 layouts
/// stay well under this, so foreign images still get their "no blockcrypt record" answer).
pub const MAX_HEADER_AREA: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: {1}")]
    Luks(PathBuf, LuksError),
    #[error("{0}: {1}")]
    Meta(PathBuf, MetaError),
    #[error("{0}: {1}")]
    Record(PathBuf, RecordError),
    #[error("{0}: no blockcrypt record in the header (a LUKS volume not made by blockcrypt?)")]
    NoRecord(PathBuf),
    #[error("{0}: {1}")]
    Damaged(PathBuf, String),
    #[error("{0}")]
    Kms(#[from] KmsFailure),
    #[error("{0}: the key the KMS returned does not open this volume (record and header do not belong together)")]
    WrongKey(PathBuf),
    #[error("{0}: already exists")]
    Exists(PathBuf),
    #[error("{0}")]
    Usage(String),
    /// In use by a server, and the operation cannot be done under it.
    #[error("{0}")]
    InUse(String),
}

pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io { path: path.to_path_buf(), source }
}

/// Where a volume's pieces are: one image file, or a data file of pure ciphertext and a header file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub data: PathBuf,
    pub header: Option<PathBuf>,
}

impl Location {
    pub fn new(data: impl Into<PathBuf>, header: Option<PathBuf>) -> Location {
        Location { data: data.into(), header }
    }

    pub fn header_path(&self) -> &Path {
        self.header.as_deref().unwrap_or(&self.data)
    }

    pub fn detached(&self) -> bool {
        self.header.is_some()
    }
}

/// A volume's header area as read from disk, checked: LUKS header, luksmeta and record.
pub struct HeaderArea {
    pub luks: Header,
    /// The bytes from the start of the header file to the end of the gap.
    pub image: Vec<u8>,
    pub gap_start: usize,
    pub meta: Meta,
    pub record: Record,
}

impl HeaderArea {
    pub fn read(loc: &Location) -> Result<HeaderArea, VolumeError> {
        let path = loc.header_path();
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let mut phdr = [0u8; PHDR_LEN];
        file.read_exact_at(&mut phdr, 0).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => VolumeError::Luks(path.into(), LuksError::NotLuks),
            _ => io_err(path)(e),
        })?;
        let luks = Header::parse(&phdr).map_err(|e| VolumeError::Luks(path.into(), e))?;
        if loc.detached() != (luks.payload_offset == 0) {
            let what = if loc.detached() {
                "the header names an attached payload"
            } else {
                "a detached header (give --header)"
            };
            return Err(VolumeError::Damaged(path.into(), what.into()));
        }
        let end = if loc.detached() { len.min(HEADER_AREA) } else { luks.payload_bytes() };
        // Only what a blockcrypt header occupies is read: a crafted payload offset must not make
        // us allocate or read gigabytes before the record is even looked at.
        if end > MAX_HEADER_AREA {
            return Err(VolumeError::Damaged(
                path.into(),
                format!("the header area would be {end} bytes; a blockcrypt header takes at most {MAX_HEADER_AREA}"),
            ));
        }
        let gap_start = luks.keyslots_end().next_multiple_of(4096);
        if end > len {
            return Err(VolumeError::Damaged(
                path.into(),
                format!("the header area ends at {end} but the file is {len} bytes"),
            ));
        }
        if gap_start + crate::luksmeta::HEADER_LEN as u64 > end {
            // No room after the keyslots for a record: a LUKS volume laid out by someone else.
            return Err(VolumeError::NoRecord(path.into()));
        }
        let mut image = vec![0u8; end as usize];
        file.read_exact_at(&mut image, 0).map_err(io_err(path))?;
        let gap = &image[gap_start as usize..];
        let meta = Meta::parse(gap).map_err(|e| match e {
            MetaError::Missing => VolumeError::NoRecord(path.into()),
            e => VolumeError::Meta(path.into(), e),
        })?;
        let bytes = meta.load(gap, &RECORD_UUID).map_err(|e| VolumeError::Meta(path.into(), e))?;
        let record = Record::parse(bytes.ok_or_else(|| VolumeError::NoRecord(path.into()))?)
            .map_err(|e| VolumeError::Record(path.into(), e))?;
        if record.cipher != luks.algorithm {
            return Err(VolumeError::Damaged(
                path.into(),
                format!("the record says {} but the header says {}", record.cipher.spec(), luks.algorithm.spec()),
            ));
        }
        Ok(HeaderArea { luks, image, gap_start: gap_start as usize, meta, record })
    }

    /// The data key, from the KMS, checked against the header's key digest.
    pub fn unlock(&self, loc: &Location, kms: &dyn KeyService) -> Result<Zeroizing<Vec<u8>>, VolumeError> {
        let dk = kms.decrypt(&self.record.ciphertext_blob, &self.record.encryption_context)?;
        self.luks.check_key(&dk).map_err(|e| match e {
            LuksError::Damaged(_) => VolumeError::Luks(loc.header_path().into(), e),
            _ => VolumeError::WrongKey(loc.header_path().into()),
        })?;
        Ok(dk)
    }
}

/// The LUKS keyslot passphrase of a data key: printable, derived (not the key itself, so the key
/// is never encrypted under itself), the same for every snapshot and clone sharing the key.
pub fn passphrase(dk: &[u8]) -> Zeroizing<String> {
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(b"blockcrypt"), dk).expand(b"LUKS1 keyslot passphrase", &mut okm[..]).expect("32 bytes");
    Zeroizing::new(B64.encode(&okm[..]))
}

/// The payload's size in bytes and where it starts in the data file.
pub fn payload(loc: &Location, luks: &Header, data_len: u64) -> Result<(u64, u64), VolumeError> {
    let base = luks.payload_bytes();
    if data_len < base || !(data_len - base).is_multiple_of(SECTOR as u64) {
        return Err(VolumeError::Damaged(
            loc.data.clone(),
            format!("{data_len} bytes is not a header plus whole 512-byte sectors"),
        ));
    }
    Ok((base, data_len - base))
}

/// An unlocked volume ready for I/O.
pub struct OpenVolume {
    pub location: Location,
    pub area: HeaderArea,
    pub disk: Arc<Disk>,
}

pub fn open(loc: &Location, kms: &dyn KeyService, read_only: bool) -> Result<OpenVolume, VolumeError> {
    let area = HeaderArea::read(loc)?;
    let dk = area.unlock(loc, kms)?;
    let cipher = SectorCipher::new(area.luks.algorithm, &dk)
        .map_err(|e| VolumeError::Damaged(loc.data.clone(), e.to_string()))?;
    let file = OpenOptions::new().read(true).write(!read_only).open(&loc.data).map_err(io_err(&loc.data))?;
    let len = file.metadata().map_err(io_err(&loc.data))?.len();
    let (base, size) = payload(loc, &area.luks, len)?;
    let disk = Disk::new(file, Arc::new(cipher), base, size, read_only);
    Ok(OpenVolume { location: loc.clone(), area, disk: Arc::new(disk) })
}
