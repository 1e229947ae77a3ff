//! The search caches: L1 (answers by exact query text), L2 (answers by
//! normalized query) and L3 (per-term posting lists), each a bounded LRU.
//!
//! L1 and L2 answers are valid only for the index generation they were
//! computed on (any change to a project's searchable files makes them
//! stale); L3 posting lists are repaired from the index's change log, so
//! they survive reindexing.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use plugin_api::QueryKind;

use super::SearchHit;

/// A bounded least-recently-used map from text keys, limited by entries and
/// by (estimated) bytes, whichever comes first.
pub struct Lru<V> {
    map: HashMap<Box<str>, Slot<V>>,
    /// Recency stamp → key; the first entry is the least recently used.
    order: BTreeMap<u64, Box<str>>,
    tick: u64,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

struct Slot<V> {
    value: V,
    stamp: u64,
    bytes: usize,
}

impl<V> Lru<V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// The value under `key`, now the most recently used.
    pub fn get(&mut self, key: &str) -> Option<&mut V> {
        let slot = self.map.get_mut(key)?;
        self.tick += 1;
        if let Some(owned) = self.order.remove(&slot.stamp) {
            self.order.insert(self.tick, owned);
        }
        slot.stamp = self.tick;
        Some(&mut slot.value)
    }

    /// Inserts or replaces, evicting least recently used entries to stay
    /// within both limits. An entry larger than the byte limit is not kept.
    pub fn insert(&mut self, key: &str, value: V, bytes: usize) {
        self.remove(key);
        if bytes > self.max_bytes {
            return;
        }
        while !self.map.is_empty()
            && (self.map.len() >= self.max_entries || self.bytes + bytes > self.max_bytes)
        {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some(slot) = self.map.remove(&oldest) {
                self.bytes -= slot.bytes;
            }
        }
        self.tick += 1;
        let key: Box<str> = key.into();
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, Slot { value, stamp: self.tick, bytes });
        self.bytes += bytes;
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.order.remove(&slot.stamp);
        self.bytes -= slot.bytes;
        Some(slot.value)
    }

    /// Records a new size for an entry whose value changed in place.
    pub fn resize(&mut self, key: &str, bytes: usize) {
        if let Some(slot) = self.map.get_mut(key) {
            self.bytes = self.bytes - slot.bytes + bytes;
            slot.bytes = bytes;
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Estimated bytes held: values, keys twice (map and recency order) and
    /// per-entry bookkeeping.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A whole answer, as L1 and L2 keep it.
#[derive(Debug)]
pub struct CachedAnswer {
    /// The index generation it was computed on.
    pub generation: u64,
    pub total: u64,
    pub hits: Vec<SearchHit>,
}

impl CachedAnswer {
    fn bytes(&self, key: &str) -> usize {
        let hits: usize = self.hits.iter().map(|h| h.path.len() + std::mem::size_of::<SearchHit>()).sum();
        2 * key.len() + hits + ENTRY_OVERHEAD
    }
}

/// Map slot, recency entry and `Arc` header, roughly.
const ENTRY_OVERHEAD: usize = 128;

/// Literal search ignores case, so literal queries that differ only in case
/// have the same answer. Regex queries are case-sensitive: their normal form
/// is the pattern itself (L2 then only outlives L1's smaller capacity).
pub fn normalize(kind: QueryKind, query: &str) -> Cow<'_, str> {
    match kind {
        QueryKind::Literal if query.chars().any(char::is_uppercase) => Cow::Owned(query.to_lowercase()),
        _ => Cow::Borrowed(query),
    }
}

fn kind_slot(kind: QueryKind) -> usize {
    match kind {
        QueryKind::Literal => 0,
        QueryKind::Regex | QueryKind::Semantic => 1,
    }
}

/// Which layer answered a lookup.
pub enum AnswerLayer {
    L1,
    L2,
}

/// L1 and L2 of one project, per query kind.
pub struct AnswerCache {
    l1: [Lru<Arc<CachedAnswer>>; 2],
    l2: [Lru<Arc<CachedAnswer>>; 2],
}

impl AnswerCache {
    pub fn new(l1_entries: usize, l2_entries: usize) -> Self {
        Self {
            l1: [Lru::new(l1_entries, usize::MAX), Lru::new(l1_entries, usize::MAX)],
            l2: [Lru::new(l2_entries, usize::MAX), Lru::new(l2_entries, usize::MAX)],
        }
    }

    /// The answer for `query` at `generation`: L1 by exact text, else L2 by
    /// normal form (then copied into L1). Stale entries are dropped on sight.
    pub fn lookup(
        &mut self,
        kind: QueryKind,
        query: &str,
        generation: u64,
    ) -> Option<(AnswerLayer, Arc<CachedAnswer>)> {
        let k = kind_slot(kind);
        match self.l1[k].get(query).map(|a| a.clone()) {
            Some(answer) if answer.generation == generation => return Some((AnswerLayer::L1, answer)),
            Some(_) => {
                self.l1[k].remove(query);
            }
            None => {}
        }
        let normal = normalize(kind, query);
        match self.l2[k].get(&normal).map(|a| a.clone()) {
            Some(answer) if answer.generation == generation => {
                self.l1[k].insert(query, answer.clone(), answer.bytes(query));
                Some((AnswerLayer::L2, answer))
            }
            Some(_) => {
                self.l2[k].remove(&normal);
                None
            }
            None => None,
        }
    }

    pub fn store(&mut self, kind: QueryKind, query: &str, answer: Arc<CachedAnswer>) {
        let k = kind_slot(kind);
        let normal = normalize(kind, query);
        self.l2[k].insert(&normal, answer.clone(), answer.bytes(&normal));
        self.l1[k].insert(query, answer.clone(), answer.bytes(query));
    }

    pub fn entries(&self) -> (usize, usize) {
        (self.l1.iter().map(Lru::len).sum(), self.l2.iter().map(Lru::len).sum())
    }

    pub fn bytes(&self) -> usize {
        self.l1.iter().chain(&self.l2).map(Lru::bytes).sum()
    }
}

/// Where a term occurs: (file id, occurrences) sorted by file id, as of an
/// index generation.
#[derive(Debug, Clone)]
pub struct Postings {
    pub generation: u64,
    pub entries: Vec<(u32, u32)>,
}

impl Postings {
    pub fn bytes(&self, term: &str) -> usize {
        self.entries.capacity() * 8 + 2 * term.len() + ENTRY_OVERHEAD
    }

    /// Sets the count of one file (0 removes it).
    pub fn set(&mut self, file: u32, count: u32) {
        match (self.entries.binary_search_by_key(&file, |e| e.0), count) {
            (Ok(i), 0) => {
                self.entries.remove(i);
            }
            (Ok(i), n) => self.entries[i].1 = n,
            (Err(_), 0) => {}
            (Err(i), n) => self.entries.insert(i, (file, n)),
        }
    }

    pub fn contains(&self, file: u32) -> bool {
        self.entries.binary_search_by_key(&file, |e| e.0).is_ok()
    }
}

/// L3 of one project.
pub type PostingCache = Lru<Arc<Postings>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used_entry() {
        let mut lru = Lru::new(2, usize::MAX);
        lru.insert("a", 1, 10);
        lru.insert("b", 2, 10);
        assert_eq!(lru.get("a"), Some(&mut 1));
        lru.insert("c", 3, 10);
        assert!(lru.get("b").is_none(), "b was least recently used");
        assert_eq!((lru.len(), lru.bytes()), (2, 20));
        lru.resize("a", 4);
        assert_eq!(lru.bytes(), 14);
    }

    #[test]
    fn lru_respects_the_byte_limit() {
        let mut lru = Lru::new(100, 25);
        lru.insert("a", (), 10);
        lru.insert("b", (), 10);
        lru.insert("c", (), 10);
        assert_eq!(lru.len(), 2);
        assert!(lru.get("a").is_none());
        lru.insert("huge", (), 26);
        assert!(lru.get("huge").is_none(), "larger than the whole cache");
    }

    #[test]
    fn l2_answers_a_case_variant_and_stale_answers_miss() {
        let mut cache = AnswerCache::new(4, 4);
        let answer = Arc::new(CachedAnswer { generation: 7, total: 0, hits: Vec::new() });
        cache.store(QueryKind::Literal, "Needle", answer);
        assert!(matches!(cache.lookup(QueryKind::Literal, "Needle", 7), Some((AnswerLayer::L1, _))));
        assert!(matches!(cache.lookup(QueryKind::Literal, "NEEDLE", 7), Some((AnswerLayer::L2, _))));
        assert!(matches!(cache.lookup(QueryKind::Literal, "NEEDLE", 7), Some((AnswerLayer::L1, _))));
        assert!(cache.lookup(QueryKind::Regex, "needle", 7).is_none(), "kinds do not share answers");
        assert!(cache.lookup(QueryKind::Literal, "NEEDLE", 8).is_none(), "the index changed");
        assert_eq!(cache.entries(), (1, 0), "stale answers are dropped when met ('Needle' was not)");
    }

    #[test]
    fn postings_set_keeps_file_order() {
        let mut p = Postings { generation: 0, entries: vec![(1, 1), (5, 2)] };
        p.set(3, 4);
        p.set(5, 0);
        p.set(1, 9);
        p.set(8, 0);
        assert_eq!(p.entries, vec![(1, 9), (3, 4)]);
    }
}
