//! Byte accounting in least-recently-used order over a tree of budgets; the behaviour is
//! specified in docs/primitives.md ("SpillLedger").
//!
//! A tree (a root ledger and its descendants) shares one [`Tree`] behind one mutex.
//! Keys live in a slab of entries; each ledger node threads its own keys on an
//! intrusive doubly linked list in use order, and every track or touch stamps the entry
//! with a tree-wide counter, so a subtree's LRU order is the merge of its nodes' lists by
//! stamp. track, touch and forget are O(1) plus the depth of the tree (each node keeps
//! `used` and `items` of its whole subtree).
//!
//! Keys are byte strings (the Python wrapper passes UTF-8, with lone surrogates passed
//! through). A node whose handles are all dropped stays while it or its descendants hold
//! keys (they count toward its ancestors) and is reclaimed once it is empty.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

/// Largest accepted budget and entry size (the range of a signed 64-bit count).
pub const MAX_BYTES: u64 = i64::MAX as u64;

const NIL: u32 = u32::MAX;

/// A key's bytes, as owned by its entry and returned by [`Ledger::keys`].
pub type Key = Box<[u8]>;

/// The index's handle on a key: the bytes owned by the key's entry (`Box` contents do not
/// move when the slab grows), so a key is stored once and never reference-counted, and
/// its hash, computed once per operation and never again when the table grows.
#[derive(Clone, Copy)]
struct KeyRef {
    ptr: *const u8,
    len: usize,
    hash: u64,
}

// SAFETY: a KeyRef only points into an Entry of the same Inner, which is only reached
// through that Inner's mutex, and is removed from the index before its entry's key is
// dropped or replaced.
unsafe impl Send for KeyRef {}

impl KeyRef {
    /// A probe for `key` (or the handle of an entry's own copy of it).
    fn to(key: &[u8]) -> KeyRef {
        let mut hasher = FxHasher::default();
        hasher.write(key);
        KeyRef {
            ptr: key.as_ptr(),
            len: key.len(),
            hash: hasher.finish(),
        }
    }

    /// The same key, pointing at `copy` (equal bytes) instead.
    fn moved_to(self, copy: &[u8]) -> KeyRef {
        KeyRef {
            ptr: copy.as_ptr(),
            ..self
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: see the Send impl: the bytes are alive while the KeyRef is indexed.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::hash::Hash for KeyRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for KeyRef {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.bytes() == other.bytes()
    }
}

impl Eq for KeyRef {}

/// Passes a [`KeyRef`]'s precomputed hash through.
#[derive(Default, Clone, Copy)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // only reached through write_u64 below; kept total for safety
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FX_SEED);
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// A key is not held by the ledger's subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownKey;

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("key is not tracked in this ledger or its children")
    }
}

impl std::error::Error for UnknownKey {}

/// `stats()` of one ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub name: Arc<str>,
    pub budget: u64,
    pub used: u128,
    pub peak: u128,
    pub items: usize,
    pub over_budget: bool,
}

/// FxHash-style mixing of 8-byte words with a finalising step; keys are short and chosen
/// by the program itself (also hashes type addresses in `size_of`'s rule cache).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    /// Folds the high bits down: the table indexes by the low bits, which a multiply
    /// alone leaves dependent on the low input bytes only.
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.add(u64::from(x));
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.add(x as u64);
    }
}

type Index = HashMap<KeyRef, u32, BuildHasherDefault<PrehashedHasher>>;

/// One tracked key.
struct Entry {
    key: Key,
    nbytes: u64,
    owner: u32,
    prev: u32,
    next: u32,
    stamp: u64,
}

/// One ledger of the tree.
struct Node {
    parent: u32,
    children: Vec<u32>,
    budget: u64,
    name: Arc<str>,
    /// Bytes of the subtree's keys.
    used: u128,
    peak: u128,
    /// Keys of the subtree.
    items: usize,
    /// This node's own keys, least recently used first.
    head: u32,
    tail: u32,
    /// Live [`Ledger`] handles of this node.
    handles: u32,
}

struct Inner {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    entries: Vec<Entry>,
    free_entries: Vec<u32>,
    index: Index,
    clock: u64,
}

/// The state shared by the ledgers of one tree.
struct Tree {
    inner: Mutex<Inner>,
}

/// A handle on one ledger of a tree. Cloning makes another handle on the same ledger.
pub struct Ledger {
    tree: Arc<Tree>,
    node: u32,
    budget: u64,
    name: Arc<str>,
}

impl Inner {
    fn new() -> Self {
        Inner {
            nodes: Vec::new(),
            free_nodes: Vec::new(),
            entries: Vec::new(),
            free_entries: Vec::new(),
            index: Index::default(),
            clock: 0,
        }
    }

    fn add_node(&mut self, parent: u32, budget: u64, name: Arc<str>) -> u32 {
        let node = Node {
            parent,
            children: Vec::new(),
            budget,
            name,
            used: 0,
            peak: 0,
            items: 0,
            head: NIL,
            tail: NIL,
            handles: 1,
        };
        let id = match self.free_nodes.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        if parent != NIL {
            self.nodes[parent as usize].children.push(id);
        }
        id
    }

    /// Frees `node` and then its ancestors while they have no handle, key or child.
    fn reclaim(&mut self, mut node: u32) {
        while node != NIL {
            let n = &self.nodes[node as usize];
            if n.handles > 0 || n.items > 0 || !n.children.is_empty() {
                return;
            }
            let parent = n.parent;
            self.nodes[node as usize].name = Arc::from("");
            self.free_nodes.push(node);
            if parent != NIL {
                let siblings = &mut self.nodes[parent as usize].children;
                if let Some(pos) = siblings.iter().position(|&c| c == node) {
                    siblings.swap_remove(pos);
                }
            }
            node = parent;
        }
    }

    /// Whether `owner` is `node` or one of its descendants.
    fn holds(&self, node: u32, mut owner: u32) -> bool {
        while owner != NIL {
            if owner == node {
                return true;
            }
            owner = self.nodes[owner as usize].parent;
        }
        false
    }

    /// The slot of `key` when it is in `node`'s subtree.
    fn find(&self, node: u32, key: &KeyRef) -> Result<u32, UnknownKey> {
        match self.index.get(key) {
            Some(&slot) if self.holds(node, self.entries[slot as usize].owner) => Ok(slot),
            _ => Err(UnknownKey),
        }
    }

    fn unlink(&mut self, slot: u32) {
        let (owner, prev, next) = {
            let e = &self.entries[slot as usize];
            (e.owner, e.prev, e.next)
        };
        if prev == NIL {
            self.nodes[owner as usize].head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.nodes[owner as usize].tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }

    /// Appends `slot` as the most recently used key of its owner.
    fn link_last(&mut self, slot: u32) {
        self.clock += 1;
        let owner = self.entries[slot as usize].owner;
        let tail = self.nodes[owner as usize].tail;
        {
            let e = &mut self.entries[slot as usize];
            e.prev = tail;
            e.next = NIL;
            e.stamp = self.clock;
        }
        if tail == NIL {
            self.nodes[owner as usize].head = slot;
        } else {
            self.entries[tail as usize].next = slot;
        }
        self.nodes[owner as usize].tail = slot;
    }

    /// Adds `nbytes` (and one item) to `node` and its ancestors, updating peaks.
    fn add_usage(&mut self, mut node: u32, nbytes: u64) {
        while node != NIL {
            let n = &mut self.nodes[node as usize];
            n.used += u128::from(nbytes);
            n.items += 1;
            if n.used > n.peak {
                n.peak = n.used;
            }
            node = n.parent;
        }
    }

    /// Removes `nbytes` (and one item) from `node` and its ancestors.
    fn remove_usage(&mut self, mut node: u32, nbytes: u64) {
        while node != NIL {
            let n = &mut self.nodes[node as usize];
            n.used -= u128::from(nbytes);
            n.items -= 1;
            node = n.parent;
        }
    }

    fn track(&mut self, node: u32, key: &[u8], nbytes: u64) {
        let probe = KeyRef::to(key);
        if let Some(&slot) = self.index.get(&probe) {
            let (old_owner, old_bytes) = {
                let e = &self.entries[slot as usize];
                (e.owner, e.nbytes)
            };
            self.unlink(slot);
            self.remove_usage(old_owner, old_bytes);
            let e = &mut self.entries[slot as usize];
            e.owner = node;
            e.nbytes = nbytes;
            self.link_last(slot);
            self.add_usage(node, nbytes);
            if old_owner != node {
                self.reclaim(old_owner);
            }
            return;
        }
        let key: Key = Box::from(key);
        let key_ref = probe.moved_to(&key);
        let entry = Entry {
            key,
            nbytes,
            owner: node,
            prev: NIL,
            next: NIL,
            stamp: 0,
        };
        let slot = match self.free_entries.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.index.insert(key_ref, slot);
        self.link_last(slot);
        self.add_usage(node, nbytes);
    }

    fn forget(&mut self, node: u32, key: &[u8]) -> Result<u64, UnknownKey> {
        let probe = KeyRef::to(key);
        let slot = self.find(node, &probe)?;
        self.index.remove(&probe);
        self.unlink(slot);
        let e = &mut self.entries[slot as usize];
        let (owner, nbytes) = (e.owner, e.nbytes);
        e.key = Key::default(); // after the index let go of it
        self.free_entries.push(slot);
        self.remove_usage(owner, nbytes);
        self.reclaim(owner);
        Ok(nbytes)
    }

    fn touch(&mut self, node: u32, key: &[u8]) -> Result<(), UnknownKey> {
        let slot = self.find(node, &KeyRef::to(key))?;
        self.unlink(slot);
        self.link_last(slot);
        Ok(())
    }

    /// The heads of the non-empty key lists of `node`'s subtree.
    fn subtree_heads(&self, node: u32) -> Vec<u32> {
        let mut heads = Vec::new();
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            let n = &self.nodes[n as usize];
            if n.head != NIL {
                heads.push(n.head);
            }
            stack.extend_from_slice(&n.children);
        }
        heads
    }

    /// Visits the entries of `node`'s subtree, least recently used first, until `visit`
    /// returns false.
    fn walk_lru(&self, node: u32, mut visit: impl FnMut(&Entry) -> bool) {
        let heads = self.subtree_heads(node);
        if let [single] = heads[..] {
            let mut slot = single;
            while slot != NIL {
                let e = &self.entries[slot as usize];
                if !visit(e) {
                    return;
                }
                slot = e.next;
            }
            return;
        }
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> = heads
            .iter()
            .map(|&slot| Reverse((self.entries[slot as usize].stamp, slot)))
            .collect();
        while let Some(Reverse((_, slot))) = heap.pop() {
            let e = &self.entries[slot as usize];
            if !visit(e) {
                return;
            }
            if e.next != NIL {
                heap.push(Reverse((self.entries[e.next as usize].stamp, e.next)));
            }
        }
    }

    fn keys(&self, node: u32) -> Vec<Key> {
        let mut keys = Vec::with_capacity(self.nodes[node as usize].items);
        self.walk_lru(node, |e| {
            keys.push(e.key.clone());
            true
        });
        keys
    }

    fn spill_candidates(&self, node: u32) -> Vec<Key> {
        let n = &self.nodes[node as usize];
        let budget = u128::from(n.budget);
        if n.used <= budget {
            return Vec::new();
        }
        let mut excess = n.used - budget;
        let mut keys = Vec::new();
        self.walk_lru(node, |e| {
            keys.push(e.key.clone());
            excess = excess.saturating_sub(u128::from(e.nbytes));
            excess > 0
        });
        keys
    }
}

impl Ledger {
    /// A new root ledger (a tree of its own).
    pub fn new(budget: u64, name: &str) -> Ledger {
        let mut inner = Inner::new();
        let name: Arc<str> = Arc::from(name);
        let node = inner.add_node(NIL, budget, name.clone());
        Ledger {
            tree: Arc::new(Tree {
                inner: Mutex::new(inner),
            }),
            node,
            budget,
            name,
        }
    }

    /// A new child ledger whose usage counts toward this one.
    pub fn child(&self, budget: u64, name: &str) -> Ledger {
        let name: Arc<str> = Arc::from(name);
        let node = self
            .tree
            .inner
            .lock()
            .add_node(self.node, budget, name.clone());
        Ledger {
            tree: self.tree.clone(),
            node,
            budget,
            name,
        }
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Whether `other` belongs to the same tree.
    pub fn same_tree(&self, other: &Ledger) -> bool {
        Arc::ptr_eq(&self.tree, &other.tree)
    }

    /// Bytes of this ledger's keys and its descendants'.
    pub fn used(&self) -> u128 {
        self.tree.inner.lock().nodes[self.node as usize].used
    }

    /// The largest `used` seen.
    pub fn peak(&self) -> u128 {
        self.tree.inner.lock().nodes[self.node as usize].peak
    }

    pub fn over_budget(&self) -> bool {
        self.tree.inner.lock().nodes[self.node as usize].used > u128::from(self.budget)
    }

    /// Records (or re-sizes) `key` here, moving it from another ledger of the tree if one
    /// holds it, and marks it most recently used.
    pub fn track(&self, key: &[u8], nbytes: u64) {
        self.tree.inner.lock().track(self.node, key, nbytes);
    }

    /// Marks `key` most recently used.
    pub fn touch(&self, key: &[u8]) -> Result<(), UnknownKey> {
        self.tree.inner.lock().touch(self.node, key)
    }

    /// Stops tracking `key` (held anywhere in this subtree); returns its bytes.
    pub fn forget(&self, key: &[u8]) -> Result<u64, UnknownKey> {
        self.tree.inner.lock().forget(self.node, key)
    }

    /// The bytes recorded for `key`.
    pub fn nbytes(&self, key: &[u8]) -> Result<u64, UnknownKey> {
        let inner = self.tree.inner.lock();
        let slot = inner.find(self.node, &KeyRef::to(key))?;
        Ok(inner.entries[slot as usize].nbytes)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let probe = KeyRef::to(key);
        self.tree.inner.lock().find(self.node, &probe).is_ok()
    }

    /// Keys in this subtree.
    pub fn len(&self) -> usize {
        self.tree.inner.lock().nodes[self.node as usize].items
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The subtree's keys, least recently used first.
    pub fn keys(&self) -> Vec<Key> {
        self.tree.inner.lock().keys(self.node)
    }

    /// The shortest LRU prefix of the subtree's keys whose release brings `used` to at
    /// most the budget; empty within budget.
    pub fn spill_candidates(&self) -> Vec<Key> {
        self.tree.inner.lock().spill_candidates(self.node)
    }

    pub fn stats(&self) -> Stats {
        let inner = self.tree.inner.lock();
        let n = &inner.nodes[self.node as usize];
        Stats {
            name: self.name.clone(),
            budget: self.budget,
            used: n.used,
            peak: n.peak,
            items: n.items,
            over_budget: n.used > u128::from(self.budget),
        }
    }
}

impl Clone for Ledger {
    fn clone(&self) -> Self {
        self.tree.inner.lock().nodes[self.node as usize].handles += 1;
        Ledger {
            tree: self.tree.clone(),
            node: self.node,
            budget: self.budget,
            name: self.name.clone(),
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let mut inner = self.tree.inner.lock();
        inner.nodes[self.node as usize].handles -= 1;
        inner.reclaim(self.node);
    }
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("name", &self.name)
            .field("budget", &self.budget)
            .field("used", &self.used())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(l: &Ledger) -> Vec<String> {
        l.keys()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    fn candidates(l: &Ledger) -> Vec<String> {
        l.spill_candidates()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn track_touch_forget_keep_lru_order() {
        let l = Ledger::new(100, "root");
        for k in ["a", "b", "c"] {
            l.track(k.as_bytes(), 10);
        }
        assert_eq!(keys(&l), ["a", "b", "c"]);
        l.touch(b"a").unwrap();
        assert_eq!(keys(&l), ["b", "c", "a"]);
        l.track(b"b", 5);
        assert_eq!(keys(&l), ["c", "a", "b"]);
        assert_eq!(l.used(), 25);
        assert_eq!(l.peak(), 30);
        assert_eq!(l.forget(b"c"), Ok(10));
        assert_eq!(l.forget(b"c"), Err(UnknownKey));
        assert_eq!(l.touch(b"zz"), Err(UnknownKey));
        assert_eq!(keys(&l), ["a", "b"]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.nbytes(b"b"), Ok(5));
    }

    #[test]
    fn candidates_are_shortest_prefix() {
        let l = Ledger::new(100, "");
        l.track(b"a", 40);
        l.track(b"b", 40);
        assert!(candidates(&l).is_empty());
        l.track(b"c", 40);
        assert!(l.over_budget());
        assert_eq!(candidates(&l), ["a"]);
        l.track(b"d", 70);
        assert_eq!(candidates(&l), ["a", "b", "c"]);
    }

    #[test]
    fn children_count_toward_parents_and_merge_in_lru_order() {
        let root = Ledger::new(50, "root");
        let a = root.child(100, "a");
        let b = root.child(100, "b");
        let aa = a.child(5, "aa");
        a.track(b"a1", 20);
        b.track(b"b1", 20);
        root.track(b"r1", 20);
        aa.track(b"x", 10);
        a.track(b"a2", 20);
        assert_eq!(root.used(), 90);
        assert_eq!(a.used(), 50);
        assert_eq!(root.len(), 5);
        assert_eq!(keys(&root), ["a1", "b1", "r1", "x", "a2"]);
        assert_eq!(keys(&a), ["a1", "x", "a2"]);
        assert_eq!(candidates(&root), ["a1", "b1"]);
        assert_eq!(candidates(&aa), ["x"]);
        assert!(b.touch(b"a1").is_err());
        root.touch(b"a1").unwrap();
        assert_eq!(candidates(&root), ["b1", "r1"]);
        // moving a key between ledgers of the tree
        b.track(b"x", 1);
        assert_eq!(
            (aa.used(), a.used(), b.used(), root.used()),
            (0, 40, 21, 81)
        );
        assert_eq!(aa.peak(), 10);
        assert_eq!(root.forget(b"a2"), Ok(20));
        assert_eq!(a.used(), 20);
    }

    #[test]
    fn dropped_children_keep_their_keys_until_forgotten() {
        let root = Ledger::new(10, "");
        {
            let kid = root.child(5, "kid");
            kid.track(b"k", 7);
            let _grandkid = kid.child(1, "g");
        }
        assert_eq!(root.used(), 7);
        assert!(root.contains(b"k"));
        assert_eq!(root.forget(b"k"), Ok(7));
        let inner = root.tree.inner.lock();
        assert_eq!(inner.free_nodes.len(), 2);
        assert!(inner.nodes[root.node as usize].children.is_empty());
    }

    #[test]
    fn slots_are_reused() {
        let l = Ledger::new(10, "");
        for round in 0..3u32 {
            for i in 0..100u32 {
                l.track(&i.to_le_bytes(), u64::from(round));
            }
            for i in 0..100u32 {
                l.forget(&i.to_le_bytes()).unwrap();
            }
        }
        assert_eq!(l.tree.inner.lock().entries.len(), 100);
        assert!(l.is_empty());
    }

    #[test]
    fn large_counts_do_not_overflow() {
        let l = Ledger::new(MAX_BYTES, "");
        l.track(b"a", MAX_BYTES);
        l.track(b"b", MAX_BYTES);
        assert_eq!(l.used(), 2 * u128::from(MAX_BYTES));
        assert_eq!(candidates(&l), ["a"]);
    }

    #[test]
    fn threads_keep_totals_consistent() {
        let root = Ledger::new(u64::MAX >> 1, "");
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let kid = root.child(1000, "kid");
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        let mut key = vec![t];
                        key.extend_from_slice(&i.to_le_bytes());
                        kid.track(&key, u64::from(i % 5));
                        kid.track(b"shared", 3);
                        if i % 2 == 0 {
                            kid.forget(&key).unwrap();
                        }
                    }
                    kid.used()
                })
            })
            .collect();
        let kid_used: u128 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let per_kid: u128 = (0..10_000u32)
            .filter(|i| i % 2 == 1)
            .map(|i| u128::from(i % 5))
            .sum();
        assert_eq!(root.used(), 4 * per_kid + 3);
        assert!(kid_used >= 4 * per_kid);
        assert_eq!(root.len(), 4 * 5000 + 1);
    }
}
