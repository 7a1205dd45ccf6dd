//! Scratch pools: device memory in segments, carved into blocks on demand.
//!
//! A forward pass allocates and frees activations of many sizes (for qwen2-0.5b at 512 tokens:
//! 0.9 to 19 MiB); keeping freed buffers by size made every size hold its own memory, 1.6x the
//! pass's live peak. Here a request takes the smallest free block that fits (split off, the rest
//! stays free) and a released block merges with free neighbours of its segment, as in the
//! caching allocators of PyTorch and ggml. The first pass of a new shape still grows the pool
//! segment by segment; once nothing is in use, an eager pool with several segments folds them into
//! one sized from the live peak it has seen, so a repeated pass holds about its live peak
//! ([`Arena::settle`]). One stream orders every use, so a block released while kernels still read
//! it is safe to hand out again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Driver;
use crate::{Error, Result};

/// Granularity of block sizes (bytes).
pub const POOL_ALIGN: usize = 512;
/// Granularity of a settled segment's size (bytes).
const SETTLE_ALIGN: usize = 2 << 20;
/// Settling stops after this many folds (a workload whose passes keep outgrowing the pool then
/// keeps its segments instead of freeing and allocating again and again).
const MAX_SETTLES: u32 = 8;

#[derive(Debug, Clone, Copy)]
struct Block {
    size: usize,
    free: bool,
    /// Base address of the block's segment (blocks of different segments never merge).
    seg: u64,
}

/// The bookkeeping of a pool: which addresses of which segments are free. Holds no device
/// memory itself: the caller allocates segments and frees what [`Arena::settle`] and
/// [`Arena::drain`] hand back.
#[derive(Debug, Default)]
pub struct Arena {
    /// Segments by base address, with their sizes.
    segments: BTreeMap<u64, usize>,
    /// Every block of every segment by address.
    blocks: BTreeMap<u64, Block>,
    /// Free blocks by (size, address): the first at or above a size is the best fit.
    free: BTreeSet<(usize, u64)>,
    in_use: usize,
    peak: usize,
    settles: u32,
}

impl Arena {
    /// Bytes of all segments.
    pub fn held(&self) -> usize {
        self.segments.values().sum()
    }

    /// Bytes handed out and not yet released.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// The most bytes in use at once so far.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Adds a segment of `size` bytes at `base`, all free.
    pub fn add_segment(&mut self, base: u64, size: usize) {
        self.segments.insert(base, size);
        self.blocks.insert(
            base,
            Block {
                size,
                free: true,
                seg: base,
            },
        );
        self.free.insert((size, base));
    }

    /// The smallest free block of at least `bytes` (a multiple of [`POOL_ALIGN`]), its first
    /// `bytes` marked in use and the rest left free; `None` when no block fits.
    pub fn take(&mut self, bytes: usize) -> Option<u64> {
        let &(size, ptr) = self.free.range((bytes, 0)..).next()?;
        self.free.remove(&(size, ptr));
        let b = self.blocks.get_mut(&ptr)?;
        b.free = false;
        b.size = bytes;
        let seg = b.seg;
        if size > bytes {
            let rest = ptr + bytes as u64;
            self.blocks.insert(
                rest,
                Block {
                    size: size - bytes,
                    free: true,
                    seg,
                },
            );
            self.free.insert((size - bytes, rest));
        }
        self.in_use += bytes;
        self.peak = self.peak.max(self.in_use);
        Some(ptr)
    }

    /// Marks the block at `ptr` free and merges it with free neighbours of its segment.
    pub fn release(&mut self, ptr: u64) -> Result<()> {
        let b = match self.blocks.get(&ptr) {
            Some(b) if !b.free => *b,
            _ => {
                return Err(Error::Gpu(format!(
                    "pool release of {ptr:#x}, which it did not hand out"
                )))
            }
        };
        self.in_use -= b.size;
        let (mut start, mut size) = (ptr, b.size);
        let next = ptr + b.size as u64;
        if let Some(n) = self.blocks.get(&next).copied() {
            if n.free && n.seg == b.seg {
                self.free.remove(&(n.size, next));
                self.blocks.remove(&next);
                size += n.size;
            }
        }
        if let Some((&pp, p)) = self.blocks.range(..ptr).next_back() {
            if p.free && p.seg == b.seg && pp + p.size as u64 == ptr {
                let p = *p;
                self.free.remove(&(p.size, pp));
                self.blocks.remove(&ptr);
                start = pp;
                size += p.size;
            }
        }
        self.blocks.insert(
            start,
            Block {
                size,
                free: true,
                seg: b.seg,
            },
        );
        self.free.insert((size, start));
        Ok(())
    }

    /// When nothing is in use and the pool has grown past one segment: forgets every segment
    /// and returns them (to be freed) with the size of the one segment to allocate in their
    /// place, the live peak plus 1/16 (rounded to 2 MiB), or, if an earlier fold proved too
    /// small, at least what the segments held. `None` otherwise.
    pub fn settle(&mut self) -> Option<(Vec<(u64, usize)>, usize)> {
        if self.in_use != 0 || self.segments.len() < 2 || self.settles >= MAX_SETTLES {
            return None;
        }
        let held = self.held();
        let mut size = (self.peak + self.peak / 16).next_multiple_of(SETTLE_ALIGN);
        if self.settles > 0 {
            size = size.max(held.next_multiple_of(SETTLE_ALIGN));
        }
        self.settles += 1;
        let segs = std::mem::take(&mut self.segments).into_iter().collect();
        self.blocks.clear();
        self.free.clear();
        Some((segs, size))
    }

    /// Forgets every segment with nothing in use and returns them (to be freed).
    pub fn drain(&mut self) -> Vec<(u64, usize)> {
        let idle: Vec<(u64, usize)> = self
            .segments
            .iter()
            .filter(|&(&base, &size)| {
                self.blocks
                    .get(&base)
                    .is_some_and(|b| b.free && b.size == size)
            })
            .map(|(&b, &s)| (b, s))
            .collect();
        for &(base, size) in &idle {
            self.segments.remove(&base);
            self.blocks.remove(&base);
            self.free.remove(&(size, base));
        }
        idle
    }
}

/// A pool of device scratch: an [`Arena`] and the device calls that feed it.
#[derive(Debug)]
pub(crate) struct Pool {
    arena: Mutex<Arena>,
    /// Whether an idle pool folds its segments into one. Never for the graphs' pool: captured
    /// graphs keep addressing its memory.
    settles: bool,
}

/// Bytes the pools of a device hold, and the most they have held.
#[derive(Debug, Default)]
pub(crate) struct PoolBytes {
    pub(crate) held: AtomicU64,
    pub(crate) peak: AtomicU64,
}

impl PoolBytes {
    fn add(&self, bytes: usize) {
        let now = self.held.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.held.fetch_sub(bytes as u64, Ordering::Relaxed);
    }
}

impl Pool {
    /// An empty pool; `settles`: see [`Arena::settle`].
    pub(crate) fn new(settles: bool) -> Self {
        Pool {
            arena: Mutex::new(Arena::default()),
            settles,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Arena>> {
        self.arena
            .lock()
            .map_err(|_| Error::Gpu("allocation pool poisoned".into()))
    }

    /// `bytes` (a multiple of [`POOL_ALIGN`]) from a free block, or from a new segment of
    /// exactly that size.
    pub(crate) fn alloc(
        &self,
        driver: &dyn Driver,
        bytes: usize,
        counts: &PoolBytes,
    ) -> Result<u64> {
        let mut a = self.lock()?;
        if let Some(p) = a.take(bytes) {
            return Ok(p);
        }
        let base = driver.alloc(bytes)?;
        counts.add(bytes);
        a.add_segment(base, bytes);
        a.take(bytes)
            .ok_or_else(|| Error::Gpu("pool: a fresh segment did not fit its request".into()))
    }

    /// Gives `ptr` back; an eager pool left idle with several segments folds them into one,
    /// unless `capturing` (no memory is freed while a graph capture is under way).
    pub(crate) fn release(
        &self,
        driver: &dyn Driver,
        ptr: u64,
        counts: &PoolBytes,
        capturing: bool,
    ) {
        let Ok(mut a) = self.arena.lock() else { return };
        if a.release(ptr).is_err() || !self.settles || capturing {
            return;
        }
        if let Some((segs, size)) = a.settle() {
            for (base, s) in segs {
                // SAFETY: the segment came from `alloc`, nothing in it is in use, and the free
                // waits for the kernels queued on it.
                unsafe { driver.free(base) };
                counts.sub(s);
            }
            // On failure the pool stays empty and grows again on demand.
            if let Ok(base) = driver.alloc(size) {
                counts.add(size);
                a.add_segment(base, size);
            }
        }
    }

    /// Frees every segment with nothing in use; returns the bytes freed.
    pub(crate) fn drain(&self, driver: &dyn Driver, counts: &PoolBytes) -> usize {
        let Ok(mut a) = self.arena.lock() else {
            return 0;
        };
        let mut bytes = 0;
        for (base, size) in a.drain() {
            // SAFETY: as in `release`.
            unsafe { driver.free(base) };
            counts.sub(size);
            bytes += size;
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::{Arena, POOL_ALIGN};

    const A: usize = POOL_ALIGN;

    #[test]
    fn best_fit_split_and_merge() {
        let mut a = Arena::default();
        a.add_segment(0x10000, 10 * A);
        a.add_segment(0x100000, 4 * A);
        // Best fit: the 4-block segment for 3 blocks, its last block left free.
        let p = a.take(3 * A).unwrap();
        assert_eq!(p, 0x100000);
        let q = a.take(A).unwrap();
        assert_eq!(q, 0x100000 + 3 * A as u64);
        // Now only the 10-block segment has room.
        let r = a.take(6 * A).unwrap();
        assert_eq!(r, 0x10000);
        assert!(a.take(5 * A).is_none());
        let s = a.take(4 * A).unwrap();
        assert_eq!(s, 0x10000 + 6 * A as u64);
        assert_eq!(a.in_use(), 14 * A);
        // Released neighbours merge back into whole segments; other segments never join them.
        a.release(r).unwrap();
        a.release(s).unwrap();
        assert_eq!(a.take(10 * A), Some(0x10000));
        a.release(0x10000).unwrap();
        a.release(q).unwrap();
        a.release(p).unwrap();
        assert_eq!(a.in_use(), 0);
        assert!(a.take(11 * A).is_none(), "blocks of two segments merged");
        assert!(a.release(p).is_err(), "double release accepted");
        assert!(a.release(0x1234).is_err(), "unknown pointer accepted");
        assert_eq!(a.peak(), 14 * A);
    }

    #[test]
    fn settle_folds_idle_segments_into_one_from_the_peak() {
        let mut a = Arena::default();
        a.add_segment(0x10000, 4 * A);
        let p = a.take(4 * A).unwrap();
        assert!(a.settle().is_none(), "one segment: nothing to fold");
        a.add_segment(0x100000, 2 * A);
        let q = a.take(2 * A).unwrap();
        a.release(p).unwrap();
        assert!(a.settle().is_none(), "folded while in use");
        a.release(q).unwrap();
        let (segs, size) = a.settle().unwrap();
        assert_eq!(segs, vec![(0x10000, 4 * A), (0x100000, 2 * A)]);
        assert_eq!(size, 2 << 20, "peak 6 blocks + 1/16, rounded to 2 MiB");
        assert_eq!(a.held(), 0);
        assert!(a.take(A).is_none());
    }

    #[test]
    fn drain_frees_only_idle_segments() {
        let mut a = Arena::default();
        a.add_segment(0x10000, 4 * A);
        a.add_segment(0x100000, 4 * A);
        let p = a.take(4 * A).unwrap();
        let q = a.take(A).unwrap();
        a.release(p).unwrap();
        assert_eq!(
            a.drain(),
            vec![(0x10000, 4 * A)],
            "not the idle segment alone"
        );
        assert_eq!(a.held(), 4 * A);
        a.release(q).unwrap();
        assert_eq!(a.drain().len(), 1);
        assert_eq!(a.held(), 0);
    }

    /// Random takes and releases against a model of the address space: blocks never overlap,
    /// stay inside their segments, and everything merges back when all is released.
    #[test]
    fn random_traffic_keeps_blocks_disjoint() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut a = Arena::default();
        let segs = [(0x100000u64, 64 * A), (0x400000, 32 * A), (0x800000, 8 * A)];
        for &(b, s) in &segs {
            a.add_segment(b, s);
        }
        let mut live: Vec<(u64, usize)> = Vec::new();
        for _ in 0..5000 {
            if live.is_empty() || next() % 3 != 0 {
                let bytes = (1 + next() as usize % 12) * A;
                if let Some(p) = a.take(bytes) {
                    let seg = segs.iter().find(|&&(b, s)| p >= b && p < b + s as u64);
                    let &(b, s) = seg.expect("block outside every segment");
                    assert!(
                        p + bytes as u64 <= b + s as u64,
                        "block crosses its segment"
                    );
                    for &(q, n) in &live {
                        assert!(p + bytes as u64 <= q || q + n as u64 <= p, "overlap");
                    }
                    live.push((p, bytes));
                }
            } else {
                let i = next() as usize % live.len();
                let (p, _) = live.swap_remove(i);
                a.release(p).unwrap();
            }
            assert_eq!(a.in_use(), live.iter().map(|l| l.1).sum::<usize>());
        }
        for (p, _) in live.drain(..) {
            a.release(p).unwrap();
        }
        for &(b, s) in &segs {
            assert_eq!(
                a.take(s),
                Some(b),
                "segment {b:#x} did not merge back whole"
            );
        }
    }
}
