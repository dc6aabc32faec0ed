//! Block bookkeeping for the paged KV cache: which blocks are free, which
//! hold a cached prefix (found by the content hash of all tokens up to and
//! including the block), and which cached blocks to evict first (least
//! recently used).
//!
//! The storage itself is a [`hearth_models::KvPool`]; this module only
//! hands out block ids and reference counts, so it can be tested alone.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Hash of an empty prefix (the parent of a sequence's first block).
pub const ROOT_HASH: u64 = 0x6865_6172_7468_0001;

/// The chained content hash of a full block of `tokens` following a prefix
/// whose hash is `parent`.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// What a cached block holds, checked on every hit so that a hash
/// collision can never hand a sequence another prefix's keys.
#[derive(Debug, Clone)]
struct Cached {
    parent: u64,
    tokens: Vec<u32>,
}

/// Reference-counted blocks with a content-addressed prefix cache.
#[derive(Debug)]
pub struct BlockManager {
    block_size: usize,
    refs: Vec<u32>,
    /// Content of blocks registered in the prefix cache.
    content: Vec<Option<(u64, Cached)>>,
    by_hash: HashMap<u64, u32>,
    /// Cached blocks by the hash of the prefix they follow.
    children: HashMap<u64, Vec<u32>>,
    /// Blocks holding nothing reusable.
    free: Vec<u32>,
    /// Cached blocks no sequence uses, by the time they were released.
    evictable: BTreeMap<u64, u32>,
    released_at: Vec<u64>,
    clock: u64,
}

impl BlockManager {
    pub fn new(n_blocks: usize, block_size: usize) -> Self {
        Self {
            block_size: block_size.max(1),
            refs: vec![0; n_blocks],
            content: vec![None; n_blocks],
            by_hash: HashMap::new(),
            children: HashMap::new(),
            free: (0..n_blocks as u32).rev().collect(),
            evictable: BTreeMap::new(),
            released_at: vec![0; n_blocks],
            clock: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks a new allocation could get (free or evictable).
    pub fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn in_use(&self) -> usize {
        self.n_blocks() - self.available()
    }

    /// Blocks holding a cached prefix (in use or evictable).
    pub fn cached(&self) -> usize {
        self.by_hash.len()
    }

    /// A block for one sequence's exclusive use: a free one, or else the
    /// least recently used cached block (which leaves the cache).
    pub fn allocate(&mut self) -> Option<u32> {
        let block = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.evictable.pop_first()?;
                if let Some((hash, cached)) = self.content[b as usize].take() {
                    self.by_hash.remove(&hash);
                    self.forget_child(cached.parent, b);
                }
                b
            }
        };
        self.refs[block as usize] = 1;
        Some(block)
    }

    /// Takes a reference to the cached blocks that hold the longest prefix
    /// of `tokens` made of whole blocks and at most `max_tokens` long.
    /// Returns the blocks and the hash of the prefix they hold.
    pub fn match_prefix(&mut self, tokens: &[u32], max_tokens: usize) -> (Vec<u32>, u64) {
        let mut blocks = Vec::new();
        let mut parent = ROOT_HASH;
        let usable = max_tokens.min(tokens.len()) / self.block_size;
        for chunk in tokens.chunks_exact(self.block_size).take(usable) {
            let hash = block_hash(parent, chunk);
            let Some(&b) = self.by_hash.get(&hash) else {
                break;
            };
            let same = matches!(&self.content[b as usize],
                Some((_, c)) if c.parent == parent && c.tokens == chunk);
            if !same {
                break;
            }
            if self.refs[b as usize] == 0 {
                self.evictable.remove(&self.released_at[b as usize]);
            }
            self.refs[b as usize] += 1;
            blocks.push(b);
            parent = hash;
        }
        (blocks, parent)
    }

    /// Publishes a full block of `tokens` (following the prefix hashed
    /// `parent`) for reuse; returns the block's hash. If another block
    /// already holds the same content this one stays private.
    pub fn register(&mut self, block: u32, parent: u64, tokens: &[u32]) -> u64 {
        let hash = block_hash(parent, tokens);
        let b = block as usize;
        if b < self.content.len() && self.content[b].is_none() && !self.by_hash.contains_key(&hash)
        {
            self.by_hash.insert(hash, block);
            self.children.entry(parent).or_default().push(block);
            self.content[b] = Some((
                hash,
                Cached {
                    parent,
                    tokens: tokens.to_vec(),
                },
            ));
        }
        hash
    }

    /// The cached block following the prefix hashed `parent` whose tokens
    /// share the longest start with `next` (at most `max` tokens, fewer than
    /// a whole block): its first slots hold exactly the keys and values a
    /// sequence continuing with `next` needs, to be copied into a block of
    /// its own. `None` when no cached block shares a token.
    pub fn match_partial(&self, parent: u64, next: &[u32], max: usize) -> Option<(u32, usize)> {
        let limit = max.min(next.len()).min(self.block_size - 1);
        self.children
            .get(&parent)?
            .iter()
            .filter_map(|&b| {
                let (_, cached) = self.content[b as usize].as_ref()?;
                let n = cached
                    .tokens
                    .iter()
                    .zip(&next[..limit])
                    .take_while(|(a, b)| a == b)
                    .count();
                (n > 0).then_some((b, n))
            })
            .max_by_key(|&(_, n)| n)
    }

    fn forget_child(&mut self, parent: u64, block: u32) {
        if let Some(list) = self.children.get_mut(&parent) {
            list.retain(|&b| b != block);
            if list.is_empty() {
                self.children.remove(&parent);
            }
        }
    }

    /// Drops one reference; an unreferenced cached block becomes evictable,
    /// any other unreferenced block free.
    pub fn release(&mut self, block: u32) {
        let b = block as usize;
        let Some(r) = self.refs.get_mut(b) else {
            return;
        };
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r > 0 {
            return;
        }
        if self.content[b].is_some() {
            self.clock += 1;
            self.released_at[b] = self.clock;
            self.evictable.insert(self.clock, block);
        } else {
            self.free.push(block);
        }
    }

    /// Releases every block in `blocks` and empties it.
    pub fn release_all(&mut self, blocks: &mut Vec<u32>) {
        for b in blocks.drain(..) {
            self.release(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_blocks_are_shared_and_evicted_least_recently_used_first() {
        let mut m = BlockManager::new(4, 2);
        let prompt = [1, 2, 3, 4, 5];
        let (hit, parent) = m.match_prefix(&prompt, 4);
        assert!(hit.is_empty());
        assert_eq!(parent, ROOT_HASH);
        let a = m.allocate().unwrap();
        let b = m.allocate().unwrap();
        let h1 = m.register(a, ROOT_HASH, &prompt[..2]);
        m.register(b, h1, &prompt[2..4]);
        assert_eq!(m.in_use(), 2);

        // A second sequence with the same prompt shares both blocks.
        let (hit, _) = m.match_prefix(&prompt, 4);
        assert_eq!(hit, vec![a, b]);
        // A limit of three tokens allows only one whole block.
        let (hit1, _) = m.match_prefix(&prompt, 3);
        assert_eq!(hit1, vec![a]);
        m.release(a);
        for blk in [a, a, b, b] {
            m.release(blk);
        }
        assert_eq!(m.in_use(), 0);
        assert_eq!(m.cached(), 2);

        // Free blocks go first; then the least recently released cached one.
        let c = m.allocate().unwrap();
        let d = m.allocate().unwrap();
        assert!(![c, d].contains(&a) && ![c, d].contains(&b));
        let e = m.allocate().unwrap();
        assert_eq!(e, a, "a was released before b");
        assert_eq!(m.cached(), 1);
        // The evicted block no longer matches; the chain stops at it.
        let (hit, _) = m.match_prefix(&prompt, 4);
        assert!(hit.is_empty());
        assert!(m.allocate().is_some());
        assert!(m.allocate().is_none());
    }

    #[test]
    fn a_partly_matching_cached_block_is_found() {
        let mut m = BlockManager::new(4, 4);
        let a = m.allocate().unwrap();
        let h = m.register(a, ROOT_HASH, &[1, 2, 3, 4]);
        let b = m.allocate().unwrap();
        m.register(b, h, &[5, 6, 7, 8]);
        assert_eq!(m.match_partial(h, &[5, 6, 9, 9], 8), Some((b, 2)));
        // Never a whole block (that is a full match) nor past `max`.
        assert_eq!(m.match_partial(h, &[5, 6, 7, 8], 8), Some((b, 3)));
        assert_eq!(m.match_partial(h, &[5, 6, 7, 8], 1), Some((b, 1)));
        assert_eq!(m.match_partial(h, &[9], 8), None);
        assert_eq!(m.match_partial(ROOT_HASH, &[1, 2], 8), Some((a, 2)));
        // Evicted blocks are no longer offered.
        m.release(a);
        m.release(b);
        for _ in 0..4 {
            m.allocate().unwrap();
        }
        assert_eq!(m.match_partial(h, &[5, 6], 8), None);
    }

    #[test]
    fn duplicate_content_stays_private() {
        let mut m = BlockManager::new(3, 2);
        let a = m.allocate().unwrap();
        let b = m.allocate().unwrap();
        m.register(a, ROOT_HASH, &[7, 8]);
        m.register(b, ROOT_HASH, &[7, 8]);
        m.release(b);
        assert_eq!(m.available(), 2, "b was never cached, so it is free");
        m.release(a);
        assert_eq!(m.cached(), 1);
    }
}
