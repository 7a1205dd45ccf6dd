//! Paged KV-cache block allocation: which physical block ids each sequence owns.
//!
//! The KV *storage* belongs to the model; this module only hands out block ids. A block holds
//! [`BLOCK_SIZE`] token slots. Blocks are reference counted so that requests sharing a prompt
//! prefix share its full blocks (prefix caching): a full block whose keys and values have been
//! computed is registered under a hash of (parent block hash, its token ids); a later sequence
//! whose prompt starts with the same tokens takes those blocks instead of recomputing them.
//! Cached blocks that no sequence references stay cached until memory is needed, and are then
//! evicted least recently used first.
//!
//! The allocator answers `allocate(n) -> Option<Vec<u32>>`: all or nothing, never an error.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

pub use crate::model::BLOCK_SIZE;

/// The hash of the empty prefix, the parent of a sequence's first block.
pub const ROOT_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hash identifying a full block: its parent's hash and its own token ids.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Key of a cached block: the parent hash plus the exact tokens (so a 64-bit collision of
/// block hashes alone can never hand out wrong keys and values).
type CacheKey = (u64, [u32; BLOCK_SIZE]);

fn cache_key(parent: u64, tokens: &[u32]) -> Option<CacheKey> {
    let arr: [u32; BLOCK_SIZE] = tokens.try_into().ok()?;
    Some((parent, arr))
}

/// Block counts, for /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCounts {
    /// All blocks.
    pub total: usize,
    /// Blocks referenced by at least one sequence.
    pub used: usize,
    /// Blocks that can be allocated now (never used, or cached and unreferenced).
    pub free: usize,
    /// Blocks holding a registered prefix (referenced or not).
    pub cached: usize,
}

/// Reference-counted block allocator with a prefix cache and LRU eviction.
#[derive(Debug)]
pub struct BlockAllocator {
    /// Reference count per block.
    refs: Vec<u32>,
    /// The cache key a block is registered under, if any.
    key_of: Vec<Option<CacheKey>>,
    /// The tick a cached, unreferenced block was released at (its LRU position).
    released_at: Vec<u64>,
    /// Blocks with no references and no cache entry.
    free: VecDeque<u32>,
    /// Cached blocks with no references, by release tick (oldest first).
    evictable: BTreeMap<u64, u32>,
    /// Registered full blocks.
    cache: HashMap<CacheKey, u32>,
    tick: u64,
    hits: u64,
}

impl BlockAllocator {
    /// An allocator over `n_blocks` physical blocks, all free.
    pub fn new(n_blocks: usize) -> Self {
        BlockAllocator {
            refs: vec![0; n_blocks],
            key_of: vec![None; n_blocks],
            released_at: vec![0; n_blocks],
            free: (0..n_blocks as u32).collect(),
            evictable: BTreeMap::new(),
            cache: HashMap::new(),
            tick: 0,
            hits: 0,
        }
    }

    /// Number of physical blocks.
    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks that `allocate` can hand out now.
    pub fn n_available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Counts for metrics.
    pub fn counts(&self) -> BlockCounts {
        let free = self.n_available();
        BlockCounts {
            total: self.n_blocks(),
            used: self.n_blocks() - free,
            free,
            cached: self.cache.len(),
        }
    }

    /// Blocks taken from the prefix cache so far.
    pub fn prefix_hits(&self) -> u64 {
        self.hits
    }

    /// Allocates `n` fresh blocks with one reference each, or `None` (and nothing changes) when
    /// fewer than `n` are available. Unreferenced cached blocks are evicted oldest first.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.n_available() {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let b = match self.free.pop_front() {
                Some(b) => b,
                None => {
                    let (_, b) = self.evictable.pop_first()?;
                    if let Some(key) = self.key_of[b as usize].take() {
                        self.cache.remove(&key);
                    }
                    b
                }
            };
            self.refs[b as usize] = 1;
            out.push(b);
        }
        Some(out)
    }

    /// Drops one reference to each block. A block reaching zero becomes free, or, if it is
    /// registered in the prefix cache, evictable (most recently used last).
    pub fn free(&mut self, blocks: &[u32]) {
        for &b in blocks {
            let i = b as usize;
            if i >= self.refs.len() || self.refs[i] == 0 {
                debug_assert!(false, "double free of KV block {b}");
                continue;
            }
            self.refs[i] -= 1;
            if self.refs[i] == 0 {
                if self.key_of[i].is_some() {
                    self.tick += 1;
                    self.released_at[i] = self.tick;
                    self.evictable.insert(self.tick, b);
                } else {
                    self.free.push_back(b);
                }
            }
        }
    }

    /// Takes the longest run of cached full blocks matching the start of `tokens`, at most
    /// `max_blocks` of them, adding one reference to each. Returns the blocks and the hash of
    /// the last matched block ([`ROOT_HASH`] when none matched).
    pub fn lookup_prefix(&mut self, tokens: &[u32], max_blocks: usize) -> (Vec<u32>, u64) {
        let mut parent = ROOT_HASH;
        let mut out = Vec::new();
        for chunk in tokens.chunks_exact(BLOCK_SIZE).take(max_blocks) {
            let Some(key) = cache_key(parent, chunk) else {
                break;
            };
            let Some(&b) = self.cache.get(&key) else {
                break;
            };
            let i = b as usize;
            if self.refs[i] == 0 {
                self.evictable.remove(&self.released_at[i]);
            }
            self.refs[i] += 1;
            self.hits += 1;
            out.push(b);
            parent = block_hash(parent, chunk);
        }
        (out, parent)
    }

    /// Registers `block`, now holding the computed keys and values of the full block `tokens`
    /// whose parent hash is `parent`, in the prefix cache. Returns the block's hash. If the same
    /// prefix is already cached under another block, the cache keeps that one.
    pub fn register(&mut self, block: u32, parent: u64, tokens: &[u32]) -> u64 {
        let hash = block_hash(parent, tokens);
        let i = block as usize;
        if i >= self.refs.len() || self.key_of[i].is_some() {
            return hash;
        }
        if let Some(key) = cache_key(parent, tokens) {
            if let std::collections::hash_map::Entry::Vacant(e) = self.cache.entry(key) {
                e.insert(block);
                self.key_of[i] = Some(key);
            }
        }
        hash
    }

    /// Drops every unreferenced cached block from the cache (they become plain free blocks).
    pub fn clear_cache(&mut self) {
        while let Some((_, b)) = self.evictable.pop_first() {
            if let Some(key) = self.key_of[b as usize].take() {
                self.cache.remove(&key);
            }
            self.free.push_back(b);
        }
    }
}

/// The blocks one sequence owns, in logical order, and the hashes of its registered full blocks.
#[derive(Debug, Clone, Default)]
pub struct BlockTable {
    /// Physical block ids; logical block `pos / BLOCK_SIZE` is `blocks[pos / BLOCK_SIZE]`.
    pub blocks: Vec<u32>,
    /// Number of leading blocks that are full and registered (or taken from) the prefix cache.
    pub n_hashed: usize,
    /// Hash of the last registered block ([`ROOT_HASH`] when none).
    pub last_hash: u64,
}

impl BlockTable {
    /// An empty table.
    pub fn new() -> Self {
        BlockTable {
            blocks: Vec::new(),
            n_hashed: 0,
            last_hash: ROOT_HASH,
        }
    }

    /// Token capacity of the blocks held.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * BLOCK_SIZE
    }

    /// Blocks needed beyond those held to hold `n_tokens` tokens.
    pub fn blocks_needed(&self, n_tokens: usize) -> usize {
        n_tokens
            .div_ceil(BLOCK_SIZE)
            .saturating_sub(self.blocks.len())
    }

    /// Registers every full block of `tokens` (the sequence's tokens whose keys and values are
    /// now computed) that is not registered yet.
    pub fn register_full(&mut self, alloc: &mut BlockAllocator, computed: &[u32]) {
        let n_full = (computed.len() / BLOCK_SIZE).min(self.blocks.len());
        while self.n_hashed < n_full {
            let i = self.n_hashed;
            let toks = &computed[i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE];
            self.last_hash = alloc.register(self.blocks[i], self.last_hash, toks);
            self.n_hashed += 1;
        }
    }

    /// Returns every block to the allocator and empties the table.
    pub fn release(&mut self, alloc: &mut BlockAllocator) {
        alloc.free(&self.blocks);
        *self = BlockTable::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn toks(start: u32, n: usize) -> Vec<u32> {
        (start..start + n as u32).collect()
    }

    #[test]
    fn allocate_is_all_or_nothing() {
        let mut a = BlockAllocator::new(4);
        let x = a.allocate(3).unwrap();
        assert_eq!(x.len(), 3);
        assert!(a.allocate(2).is_none());
        assert_eq!(a.n_available(), 1);
        let y = a.allocate(1).unwrap();
        assert!(!x.contains(&y[0]));
        assert!(a.allocate(1).is_none());
        a.free(&x);
        a.free(&y);
        assert_eq!(a.counts().free, 4);
        assert_eq!(a.counts().used, 0);
    }

    #[test]
    fn prefix_blocks_are_shared_and_refcounted() {
        let mut a = BlockAllocator::new(8);
        let prompt = toks(100, 40); // 2 full blocks + 8
        let mut t1 = BlockTable::new();
        t1.blocks = a.allocate(t1.blocks_needed(40)).unwrap();
        assert_eq!(t1.blocks.len(), 3);
        t1.register_full(&mut a, &prompt);
        assert_eq!(t1.n_hashed, 2);
        assert_eq!(a.counts().cached, 2);

        let (hit, h) = a.lookup_prefix(&prompt, 2);
        assert_eq!(hit, t1.blocks[..2].to_vec());
        assert_eq!(h, t1.last_hash);
        // A different second block matches only the first.
        let mut other = prompt.clone();
        other[20] = 7;
        let (hit2, _) = a.lookup_prefix(&other, 2);
        assert_eq!(hit2, vec![t1.blocks[0]]);
        // A different first block matches nothing even if the second is equal.
        let mut other2 = prompt.clone();
        other2[0] = 7;
        assert!(a.lookup_prefix(&other2, 2).0.is_empty());

        t1.release(&mut a);
        // Shared blocks still referenced by the lookups.
        assert_eq!(a.counts().used, 2);
        a.free(&hit);
        a.free(&hit2);
        assert_eq!(a.counts().used, 0);
        assert_eq!(a.counts().free, 8);
        // Still cached after release: a new lookup hits.
        let (again, _) = a.lookup_prefix(&prompt, 5);
        assert_eq!(again.len(), 2);
        a.free(&again);
    }

    #[test]
    fn lru_eviction_takes_oldest_unreferenced_cached_block() {
        let mut a = BlockAllocator::new(3);
        let p1 = toks(0, 16);
        let p2 = toks(1000, 16);
        let b1 = a.allocate(1).unwrap();
        a.register(b1[0], ROOT_HASH, &p1);
        let b2 = a.allocate(1).unwrap();
        a.register(b2[0], ROOT_HASH, &p2);
        a.free(&b1); // released first: oldest
        a.free(&b2);
        let _b3 = a.allocate(1).unwrap(); // the never-used block
        let _b4 = a.allocate(1).unwrap(); // evicts p1
        assert!(a.lookup_prefix(&p1, 1).0.is_empty());
        let (hit, _) = a.lookup_prefix(&p2, 1);
        assert_eq!(hit, b2);
        // p2 is referenced now: nothing left to allocate.
        assert!(a.allocate(1).is_none());
    }

    #[test]
    fn lookup_respects_max_blocks_and_partial_blocks_never_cache() {
        let mut a = BlockAllocator::new(4);
        let p = toks(5, 32);
        let mut t = BlockTable::new();
        t.blocks = a.allocate(2).unwrap();
        t.register_full(&mut a, &p[..20]); // only the first block is full
        assert_eq!(t.n_hashed, 1);
        assert_eq!(a.lookup_prefix(&p, 0).0.len(), 0);
        let (h, _) = a.lookup_prefix(&p, 9);
        assert_eq!(h.len(), 1);
        a.free(&h);
        t.release(&mut a);
    }

    /// Random operations against a simple model of the invariants: every block is either
    /// referenced, free, or evictable; counts add up; nothing is handed out twice.
    #[test]
    fn random_operations_keep_invariants() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        let n = 32;
        let mut a = BlockAllocator::new(n);
        let mut tables: Vec<(BlockTable, Vec<u32>)> = Vec::new();
        for _ in 0..2000 {
            match rng.gen_range(0..3) {
                0 => {
                    // New sequence with a prompt from a small family of prefixes.
                    let fam = rng.gen_range(0..3u32);
                    let len = rng.gen_range(1..70);
                    let prompt: Vec<u32> = (0..len as u32).map(|i| fam * 1000 + i).collect();
                    let mut t = BlockTable::new();
                    let max = (len - 1) / BLOCK_SIZE;
                    let (hit, h) = a.lookup_prefix(&prompt, max);
                    t.n_hashed = hit.len();
                    t.last_hash = h;
                    t.blocks = hit;
                    match a.allocate(t.blocks_needed(len)) {
                        Some(b) => {
                            t.blocks.extend(b);
                            t.register_full(&mut a, &prompt);
                            tables.push((t, prompt));
                        }
                        None => t.release(&mut a),
                    }
                }
                1 if !tables.is_empty() => {
                    let i = rng.gen_range(0..tables.len());
                    let (mut t, _) = tables.swap_remove(i);
                    t.release(&mut a);
                }
                _ => {}
            }
            let c = a.counts();
            assert_eq!(c.used + c.free, n);
            let mut owned: HashMap<u32, u32> = HashMap::new();
            for (t, _) in &tables {
                for &b in &t.blocks {
                    *owned.entry(b).or_default() += 1;
                }
            }
            assert_eq!(owned.len(), c.used);
            for (&b, &r) in &owned {
                assert_eq!(a.refs[b as usize], r, "block {b}");
            }
        }
        for (mut t, _) in tables {
            t.release(&mut a);
        }
        assert_eq!(a.counts().used, 0);
    }
}
