//! XTS's whitening: each 16-byte block of a sector is XORed with its tweak before and after the
//! block cipher. Sector `s`'s first tweak is its encrypted IV; each next block's is the previous
//! one multiplied by α in GF(2^128). The first pass makes the tweaks and keeps them for the
//! second, which only XORs.
//!
//! A sector's tweaks are a chain of dependent steps, so on x86_64 the chains of four sectors run
//! side by side in SSE2 registers (every x86_64 CPU has SSE2): the first pass then costs about
//! what its memory traffic does – a fifth of the sector cipher's time at 8 KiB per batch, where
//! the same steps on 64-bit integers, one sector at a time, took a third. Elsewhere the portable
//! form runs; on x86_64 the tests hold the two to the same output.

use super::{BLOCK, PER_SECTOR, SECTOR};

/// XORs every block of `sectors` with its tweak – sector `s`'s chain starting at block `s` of
/// `ivs` – and leaves the tweaks in `tweaks` (`PER_SECTOR` per sector, in sector order) for
/// [`again`].
pub(super) fn first(sectors: &mut [u8], ivs: &[u8], tweaks: &mut [u128]) {
    assert!(sectors.len() / SECTOR * BLOCK == ivs.len() && ivs.len() / BLOCK * PER_SECTOR == tweaks.len());
    #[cfg(target_arch = "x86_64")]
    sse2::first(sectors, ivs, tweaks);
    #[cfg(not(target_arch = "x86_64"))]
    portable::first(sectors, ivs, tweaks);
}

/// XORs each block of `blocks` with its tweak from [`first`] (blocks read little-endian, as the
/// tweaks are: the XOR is bytewise either way). Written plainly, this compiles to SIMD XORs.
pub(super) fn again(blocks: &mut [u8], tweaks: &[u128]) {
    for (block, t) in blocks.chunks_exact_mut(BLOCK).zip(tweaks) {
        let b: &mut [u8; BLOCK] = block.try_into().expect("one block");
        *b = (u128::from_le_bytes(*b) ^ t).to_le_bytes();
    }
}

/// One sector at a time, on 128-bit integers.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod portable {
    use super::*;

    /// Multiplication by α on the block read little-endian, as XTS defines it.
    fn mul_alpha(v: u128) -> u128 {
        // The carried-out bit selects the reduction 0x87 by a mask, not a branch.
        let reduce = ((v >> 127) as u64).wrapping_neg() & 0x87;
        (v << 1) ^ reduce as u128
    }

    pub(in super::super) fn first(sectors: &mut [u8], ivs: &[u8], tweaks: &mut [u128]) {
        let each =
            sectors.chunks_exact_mut(SECTOR).zip(ivs.chunks_exact(BLOCK)).zip(tweaks.chunks_exact_mut(PER_SECTOR));
        for ((sector, iv), slots) in each {
            let mut t = u128::from_le_bytes(iv.try_into().expect("one block"));
            for (block, slot) in sector.chunks_exact_mut(BLOCK).zip(slots) {
                *slot = t;
                let b: &mut [u8; BLOCK] = block.try_into().expect("one block");
                *b = (u128::from_le_bytes(*b) ^ t).to_le_bytes();
                t = mul_alpha(t);
            }
        }
    }
}

/// Four sectors side by side, the tweaks in XMM registers.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Sectors whose chains run side by side: enough to hide a step's latency (four dependent
    /// instructions) without running out of registers.
    const LANES: usize = 4;

    /// ×α on a tweak in an XMM register: each 64-bit half shifted left by one, bit 63 carried
    /// into bit 64 and bit 127 folded back as 0x87.
    #[inline(always)]
    fn mul_alpha(t: __m128i) -> __m128i {
        // SAFETY: register-only SSE2 instructions, which every x86_64 CPU has (the target's
        // baseline).
        unsafe {
            // Lane 0 gets the top bit of lane 3, lane 2 that of lane 1, spread over the lane.
            let carries = _mm_srai_epi32::<31>(_mm_shuffle_epi32::<0x13>(t));
            _mm_xor_si128(_mm_add_epi64(t, t), _mm_and_si128(carries, _mm_set_epi32(0, 1, 0, 0x87)))
        }
    }

    #[inline(always)]
    fn load(block: &[u8]) -> __m128i {
        let block: &[u8; BLOCK] = block.try_into().expect("one block");
        // SAFETY: a `&[u8; 16]` is valid for a 16-byte read; the unaligned load needs no
        // alignment.
        unsafe { _mm_loadu_si128(block.as_ptr().cast()) }
    }

    /// Stores `t` as the block's tweak and XORs the block with it.
    #[inline(always)]
    fn whiten(block: &mut [u8], slot: &mut u128, t: __m128i) {
        let block: &mut [u8; BLOCK] = block.try_into().expect("one block");
        // SAFETY: the pointers come from a `&mut [u8; 16]` and a `&mut u128`, each valid for a
        // 16-byte read and write; the unaligned loads and stores need no alignment.
        unsafe {
            _mm_storeu_si128((slot as *mut u128).cast(), t);
            let p: *mut __m128i = block.as_mut_ptr().cast();
            _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), t));
        }
    }

    /// Splits `v` (at least four `unit`s long) into its first four pieces of `unit`.
    fn four<T>(v: &mut [T], unit: usize) -> [&mut [T]; LANES] {
        let (a, rest) = v.split_at_mut(unit);
        let (b, rest) = rest.split_at_mut(unit);
        let (c, rest) = rest.split_at_mut(unit);
        [a, b, c, &mut rest[..unit]]
    }

    pub(in super::super) fn first(sectors: &mut [u8], ivs: &[u8], tweaks: &mut [u128]) {
        let groups = sectors
            .chunks_mut(LANES * SECTOR)
            .zip(ivs.chunks(LANES * BLOCK))
            .zip(tweaks.chunks_mut(LANES * PER_SECTOR));
        for ((sectors, ivs), slots) in groups {
            if ivs.len() < LANES * BLOCK {
                // The batch's last one to three sectors: one chain each.
                let each = sectors
                    .chunks_exact_mut(SECTOR)
                    .zip(ivs.chunks_exact(BLOCK))
                    .zip(slots.chunks_exact_mut(PER_SECTOR));
                for ((sector, iv), slots) in each {
                    let mut t = load(iv);
                    for (block, slot) in sector.chunks_exact_mut(BLOCK).zip(slots) {
                        whiten(block, slot, t);
                        t = mul_alpha(t);
                    }
                }
                continue;
            }
            let mut t: [__m128i; LANES] = std::array::from_fn(|l| load(&ivs[l * BLOCK..(l + 1) * BLOCK]));
            let [s0, s1, s2, s3] = four(sectors, SECTOR);
            let [o0, o1, o2, o3] = four(slots, PER_SECTOR);
            for j in 0..PER_SECTOR {
                let at = j * BLOCK..(j + 1) * BLOCK;
                whiten(&mut s0[at.clone()], &mut o0[j], t[0]);
                whiten(&mut s1[at.clone()], &mut o1[j], t[1]);
                whiten(&mut s2[at.clone()], &mut o2[j], t[2]);
                whiten(&mut s3[at], &mut o3[j], t[3]);
                t = t.map(mul_alpha);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Every count of sectors a batch can hold, so every split between four-sector groups and the
    /// chains left over: the SSE2 form and the portable one agree on the data and the tweaks.
    #[test]
    fn the_sse2_form_matches_the_portable_one() {
        for n in 1..=super::super::BATCH {
            let data: Vec<u8> = (0..n * SECTOR).map(|i| (i * 31 + n) as u8).collect();
            // Tweaks with the top bits set and clear, so both carries and the reduction happen.
            let ivs: Vec<u8> = (0..n * BLOCK).map(|i| (i * 97 + 0x80) as u8).collect();
            let (mut a, mut b) = (data.clone(), data.clone());
            let (mut ta, mut tb) = (vec![0u128; n * PER_SECTOR], vec![0u128; n * PER_SECTOR]);
            sse2::first(&mut a, &ivs, &mut ta);
            portable::first(&mut b, &ivs, &mut tb);
            assert_eq!(ta, tb, "tweaks for {n} sectors");
            assert_eq!(a, b, "data for {n} sectors");
            again(&mut a, &ta);
            assert_eq!(a, data, "the second XOR undoes the first");
        }
    }
}
