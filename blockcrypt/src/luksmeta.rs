//! luksmeta: UUID-typed metadata slots in the gap between the end of a LUKS1 header's keyslot
//! areas and the payload – the place clevis keeps its bindings and we keep the wrapped data key.
//! Written so that the `luksmeta` tool reads what we write (FORMAT.md §4).
//!
//! Layout, all integers big-endian: at `hole` (the keyslot end rounded up to 4 KiB) a 272-byte
//! header – magic `LUKSMETA`, u32 version 1, u32 CRC-32C of the header with this field zero, then
//! eight slots of {16-byte UUID, u32 offset from the hole, u32 length, u32 CRC-32C of the data,
//! u32 reserved}. Slot data starts at 4 KiB-aligned offsets after the header.

use crate::crc32c::crc32c;

pub const MAGIC: &[u8; 8] = b"LUKSMETA";
pub const VERSION: u32 = 1;
pub const SLOTS: usize = 8;
pub const HEADER_LEN: usize = 8 + 4 + 4 + SLOTS * 32;
const ALIGN: u32 = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub uuid: [u8; 16],
    pub offset: u32,
    pub length: u32,
    pub crc: u32,
}

impl Slot {
    pub fn is_empty(&self) -> bool {
        self.uuid == [0; 16]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    #[error("no luksmeta header in the gap")]
    Missing,
    #[error("luksmeta version {0} is not supported")]
    Version(u32),
    #[error("the luksmeta header's checksum does not match (damaged header)")]
    HeaderChecksum,
    #[error("luksmeta slot {0} points outside the gap")]
    SlotBounds(usize),
    #[error("luksmeta slot {0}'s data does not match its checksum (damaged record)")]
    DataChecksum(usize),
    #[error("the record does not fit in the {0}-byte gap")]
    NoSpace(u32),
}

/// The luksmeta header of a gap of `gap_len` bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub slots: [Slot; SLOTS],
}

impl Meta {
    pub fn parse(gap: &[u8]) -> Result<Meta, MetaError> {
        if gap.len() < HEADER_LEN || &gap[..8] != MAGIC {
            return Err(MetaError::Missing);
        }
        let be = |at: usize| u32::from_be_bytes(gap[at..at + 4].try_into().unwrap());
        if be(8) != VERSION {
            return Err(MetaError::Version(be(8)));
        }
        let mut hdr = gap[..HEADER_LEN].to_vec();
        hdr[12..16].fill(0);
        if crc32c(&hdr) != be(12) {
            return Err(MetaError::HeaderChecksum);
        }
        let mut meta = Meta::default();
        for (i, slot) in meta.slots.iter_mut().enumerate() {
            let at = 16 + i * 32;
            slot.uuid.copy_from_slice(&gap[at..at + 16]);
            slot.offset = be(at + 16);
            slot.length = be(at + 20);
            slot.crc = be(at + 24);
            let end = slot.offset as u64 + slot.length as u64;
            if !slot.is_empty() && (slot.offset < HEADER_LEN as u32 || end > gap.len() as u64) {
                return Err(MetaError::SlotBounds(i));
            }
        }
        Ok(meta)
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_be_bytes());
        for (i, s) in self.slots.iter().enumerate() {
            let at = 16 + i * 32;
            out[at..at + 16].copy_from_slice(&s.uuid);
            out[at + 16..at + 20].copy_from_slice(&s.offset.to_be_bytes());
            out[at + 20..at + 24].copy_from_slice(&s.length.to_be_bytes());
            out[at + 24..at + 28].copy_from_slice(&s.crc.to_be_bytes());
        }
        let crc = crc32c(&out);
        out[12..16].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// The data of the first slot typed `uuid`, checked against its CRC.
    pub fn load<'g>(&self, gap: &'g [u8], uuid: &[u8; 16]) -> Result<Option<&'g [u8]>, MetaError> {
        let Some((i, s)) = self.slots.iter().enumerate().find(|(_, s)| &s.uuid == uuid) else {
            return Ok(None);
        };
        let data = &gap[s.offset as usize..(s.offset + s.length) as usize];
        if crc32c(data) != s.crc {
            return Err(MetaError::DataChecksum(i));
        }
        Ok(Some(data))
    }

    /// Writes `data` as the slot typed `uuid` into a gap image, replacing any slot of that type.
    /// The data goes where no other slot's data lies, so a torn update leaves the old header
    /// pointing at intact old data (the caller writes data before header).
    pub fn store(&mut self, gap: &mut [u8], uuid: &[u8; 16], data: &[u8]) -> Result<(), MetaError> {
        let gap_len = gap.len() as u32;
        let old = self.slots.iter().position(|s| &s.uuid == uuid);
        let index = old.or_else(|| self.slots.iter().position(Slot::is_empty)).ok_or(MetaError::NoSpace(gap_len))?;
        let len = data.len() as u32;
        let others: Vec<Slot> = self.slots.iter().filter(|s| !s.is_empty()).copied().collect();
        let first = HEADER_LEN.next_multiple_of(ALIGN as usize) as u32;
        let offset = (first..gap_len)
            .step_by(ALIGN as usize)
            .find(|&off| {
                off as u64 + len as u64 <= gap_len as u64
                    && others.iter().all(|s| off + len <= s.offset || off >= s.offset + s.length)
            })
            .ok_or(MetaError::NoSpace(gap_len))?;
        gap[offset as usize..(offset + len) as usize].copy_from_slice(data);
        self.slots[index] = Slot { uuid: *uuid, offset, length: len, crc: crc32c(data) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_and_replace() {
        let mut gap = vec![0u8; 28 * 1024];
        let mut meta = Meta::default();
        let t = [7u8; 16];
        meta.store(&mut gap, &t, b"first").unwrap();
        gap[..HEADER_LEN].copy_from_slice(&meta.to_bytes());
        let parsed = Meta::parse(&gap).unwrap();
        assert_eq!(parsed, meta);
        assert_eq!(parsed.load(&gap, &t).unwrap(), Some(&b"first"[..]));
        // A replacement lands beside the old data, never on it.
        let old_offset = meta.slots[0].offset;
        meta.store(&mut gap, &t, b"second").unwrap();
        assert_ne!(meta.slots[0].offset, old_offset);
        assert_eq!(meta.load(&gap, &t).unwrap(), Some(&b"second"[..]));
        assert_eq!(meta.load(&gap, &[1; 16]).unwrap(), None);
    }

    #[test]
    fn damage_is_reported() {
        let mut gap = vec![0u8; 16 * 1024];
        let mut meta = Meta::default();
        meta.store(&mut gap, &[1; 16], b"record").unwrap();
        gap[..HEADER_LEN].copy_from_slice(&meta.to_bytes());
        let at = meta.slots[0].offset as usize;
        gap[at] ^= 1;
        assert_eq!(Meta::parse(&gap).unwrap().load(&gap, &[1; 16]), Err(MetaError::DataChecksum(0)));
        gap[at] ^= 1;
        gap[20] ^= 1;
        assert_eq!(Meta::parse(&gap), Err(MetaError::HeaderChecksum));
        assert_eq!(Meta::parse(&[0u8; 4096]), Err(MetaError::Missing));
    }

    #[test]
    fn too_big_for_the_gap() {
        let mut gap = vec![0u8; 8192];
        assert_eq!(Meta::default().store(&mut gap, &[1; 16], &[0; 5000]), Err(MetaError::NoSpace(8192)));
    }
}
