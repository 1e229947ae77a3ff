//! One project's in-memory index: the text of every indexed file, the term
//! dictionary (document frequencies), and what the indexer saw of every file
//! last time, so that a reindex reads only files that changed.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use plugin_api::IndexOutcome;

/// Folders never indexed.
const IGNORED_DIRS: &[&str] = &[".git", "target", "node_modules", ".hg", ".svn"];
/// A file whose mtime is this close to when the indexer looked at it may
/// have changed since without its size or mtime changing (timestamps are
/// coarse): the next scan re-reads it and compares content hashes.
const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Changes remembered, so that cached posting lists can be repaired rather
/// than rebuilt after a reindex.
const CHANGE_LOG: usize = 16 * 1024;
/// Bytes read to decide whether a file is binary (a NUL byte in them).
const BINARY_PROBE: usize = 8192;
/// Dictionary terms are identifiers of this many bytes.
const TERM_LEN: std::ops::RangeInclusive<usize> = 2..=64;

pub struct IndexedFile {
    /// Path relative to the project root, `/`-separated.
    pub path: Arc<str>,
    pub text: String,
    /// Lowercased text, for case-insensitive literal search.
    pub lower: String,
    hash: u64,
}

/// What the indexer recorded of a file when it last looked.
pub(super) struct Seen {
    size: u64,
    mtime: Option<SystemTime>,
    looked_at: SystemTime,
    pub(super) state: SeenState,
}

#[derive(PartialEq)]
pub(super) enum SeenState {
    Indexed { hash: u64 },
    Left { code: &'static str },
}

/// A file the scan found new or changed, to be read by an indexer thread.
#[derive(Debug)]
pub struct FileJob {
    pub path: Arc<str>,
    pub abs: PathBuf,
    /// `None` when the file cannot even be stat'ed (a dangling symlink).
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    pub looked_at: SystemTime,
}

impl FileJob {
    /// Lowercase extension without the dot, or `none`.
    pub fn file_type(&self) -> String {
        Path::new(&*self.path)
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_else(|| "none".to_owned())
    }
}

/// What a scan of the project folder found against the index.
pub struct ScanPlan {
    pub jobs: Vec<FileJob>,
    pub removed: Vec<Arc<str>>,
}

/// The result of reading one file for indexing (prepared outside the index
/// lock: lowercasing and hashing are the costly part).
pub enum FileRead {
    Text { text: String, lower: String, hash: u64 },
    Left { outcome: IndexOutcome, code: &'static str },
}

impl FileRead {
    pub fn text(text: String) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let hash = hasher.finish();
        FileRead::Text { lower: text.to_lowercase(), text, hash }
    }
}

#[derive(Default)]
pub struct ProjectIndex {
    files: Vec<Option<IndexedFile>>,
    by_path: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
    pub(super) seen: HashMap<Arc<str>, Seen>,
    /// Term → number of indexed files containing it.
    terms: HashMap<Box<str>, u32>,
    term_bytes: u64,
    /// Content hash → number of indexed files with that content.
    hashes: HashMap<u64, u32>,
    duplicates: u64,
    text_bytes: u64,
    /// Bumped by every change to the searchable files.
    generation: u64,
    /// (generation, file id) of the last changes, oldest first.
    changes: VecDeque<(u64, u32)>,
}

impl ProjectIndex {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every file the last scans saw, indexed or not.
    pub fn total_files(&self) -> u64 {
        self.seen.len() as u64
    }

    pub fn indexed_files(&self) -> u64 {
        self.by_path.len() as u64
    }

    /// Share of indexed files whose content another indexed file repeats.
    pub fn duplication_ratio(&self) -> Option<f64> {
        (!self.by_path.is_empty()).then(|| self.duplicates as f64 / self.by_path.len() as f64)
    }

    /// Estimated bytes of the store: text, lowercased text, paths, the term
    /// dictionary and per-file bookkeeping.
    pub fn store_bytes(&self) -> u64 {
        self.text_bytes + self.term_bytes + self.files.len() as u64 * 96 + self.seen.len() as u64 * 96
    }

    pub fn files(&self) -> impl Iterator<Item = (u32, &IndexedFile)> {
        self.files.iter().enumerate().filter_map(|(id, f)| Some((id as u32, f.as_ref()?)))
    }

    pub fn file(&self, id: u32) -> Option<&IndexedFile> {
        self.files.get(id as usize)?.as_ref()
    }

    pub fn file_by_path(&self, path: &str) -> Option<&IndexedFile> {
        self.file(*self.by_path.get(path)?)
    }

    /// Files changed since `generation` (ids may repeat), or `None` when the
    /// change log no longer reaches back that far.
    pub fn changed_since(&self, generation: u64) -> Option<impl Iterator<Item = u32> + '_> {
        if generation > self.generation {
            return None;
        }
        if generation < self.generation {
            let oldest = self.changes.front()?.0;
            if oldest > generation + 1 {
                return None;
            }
        }
        Some(self.changes.iter().filter(move |(g, _)| *g > generation).map(|(_, id)| *id))
    }

    /// The `limit` terms found in most files, most frequent first.
    pub fn top_terms(&self, limit: usize) -> Vec<(&str, u32)> {
        let mut terms: Vec<(&str, u32)> = self.terms.iter().map(|(t, n)| (&**t, *n)).collect();
        let cmp = |a: &(&str, u32), b: &(&str, u32)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
        if terms.len() > limit && limit > 0 {
            terms.select_nth_unstable_by(limit - 1, cmp);
        }
        terms.truncate(limit);
        terms.sort_unstable_by(cmp);
        terms
    }

    /// Walks the project folder and compares what it finds with what the
    /// index saw: new files, files whose size or mtime changed (or that were
    /// modified too close to the last look to tell) become jobs; files gone
    /// from disk are listed for removal.
    pub fn plan(&self, root: &Path) -> ScanPlan {
        let mut found = Vec::new();
        collect_files(root, root, &mut found, &mut HashSet::new());
        let mut present = HashSet::with_capacity(found.len());
        let mut jobs = Vec::new();
        for (relative, abs, meta) in found {
            let looked_at = SystemTime::now();
            let (size, mtime) = match &meta {
                Some(m) => (Some(m.len()), m.modified().ok()),
                None => (None, None),
            };
            let path: Arc<str> = match self.seen.get_key_value(relative.as_str()) {
                Some((key, seen)) => {
                    present.insert(key.clone());
                    let unchanged = size == Some(seen.size)
                        && mtime.is_some()
                        && mtime == seen.mtime
                        && mtime.is_some_and(|m| m + RACY_WINDOW < seen.looked_at);
                    if unchanged {
                        continue;
                    }
                    key.clone()
                }
                None => Arc::from(relative.as_str()),
            };
            jobs.push(FileJob { path, abs, size, mtime, looked_at });
        }
        let removed = self.seen.keys().filter(|p| !present.contains(*p)).cloned().collect();
        ScanPlan { jobs, removed }
    }

    /// Forgets a file that is gone from disk. True when it was searchable.
    pub fn remove(&mut self, path: &str) -> bool {
        self.seen.remove(path);
        self.unindex(path)
    }

    /// Records what reading a file gave. Returns true when the file is to be
    /// reported (its content or its failure is new), false when a racy
    /// re-read found the same content or the same failure.
    pub fn apply(&mut self, job: &FileJob, read: FileRead) -> bool {
        let (state, text) = match read {
            FileRead::Text { text, lower, hash } => (SeenState::Indexed { hash }, Some((text, lower))),
            FileRead::Left { code, .. } => (SeenState::Left { code }, None),
        };
        let seen = Seen { size: job.size.unwrap_or(0), mtime: job.mtime, looked_at: job.looked_at, state };
        let same = self.seen.get(&*job.path).is_some_and(|old| {
            old.state == seen.state
                && (matches!(seen.state, SeenState::Indexed { .. })
                    || (old.size == seen.size && old.mtime == seen.mtime))
        });
        let hash = match seen.state {
            SeenState::Indexed { hash } => Some(hash),
            SeenState::Left { .. } => None,
        };
        self.seen.insert(job.path.clone(), seen);
        if same {
            return false;
        }
        self.unindex(&job.path);
        if let (Some((text, lower)), Some(hash)) = (text, hash) {
            self.index(job.path.clone(), text, lower, hash);
        }
        true
    }

    fn index(&mut self, path: Arc<str>, text: String, lower: String, hash: u64) {
        for term in unique_terms(&lower) {
            match self.terms.get_mut(term) {
                Some(n) => *n += 1,
                None => {
                    self.term_bytes += term.len() as u64 + 48;
                    self.terms.insert(term.into(), 1);
                }
            }
        }
        let copies = self.hashes.entry(hash).or_default();
        *copies += 1;
        if *copies > 1 {
            self.duplicates += 1;
        }
        self.text_bytes += (text.len() + lower.len() + 2 * path.len()) as u64;
        let file = IndexedFile { path: path.clone(), text, lower, hash };
        let id = match self.free.pop() {
            Some(id) => {
                self.files[id as usize] = Some(file);
                id
            }
            None => {
                self.files.push(Some(file));
                (self.files.len() - 1) as u32
            }
        };
        self.by_path.insert(path, id);
        self.changed(id);
    }

    fn unindex(&mut self, path: &str) -> bool {
        let Some(id) = self.by_path.remove(path) else { return false };
        let Some(file) = self.files[id as usize].take() else { return false };
        for term in unique_terms(&file.lower) {
            if let Some(n) = self.terms.get_mut(term) {
                *n -= 1;
                if *n == 0 {
                    self.terms.remove(term);
                    self.term_bytes -= term.len() as u64 + 48;
                }
            }
        }
        if let Some(copies) = self.hashes.get_mut(&file.hash) {
            if *copies > 1 {
                self.duplicates -= 1;
            }
            *copies -= 1;
            if *copies == 0 {
                self.hashes.remove(&file.hash);
            }
        }
        self.text_bytes -= (file.text.len() + file.lower.len() + 2 * file.path.len()) as u64;
        self.free.push(id);
        self.changed(id);
        true
    }

    fn changed(&mut self, id: u32) {
        self.generation += 1;
        self.changes.push_back((self.generation, id));
        if self.changes.len() > CHANGE_LOG {
            self.changes.pop_front();
        }
    }
}

/// Dictionary terms of lowercased text, each once: identifier-like tokens
/// of 2 to 64 bytes that are not plain numbers.
pub fn unique_terms(lower: &str) -> HashSet<&str> {
    terms(lower).collect()
}

/// Identifier-like tokens of `lower` in order (with repeats).
pub fn terms(lower: &str) -> impl Iterator<Item = &str> {
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| TERM_LEN.contains(&t.len()) && !t.bytes().all(|b| b.is_ascii_digit()))
}

/// Every file under `dir` (relative path, absolute path, metadata), skipping
/// ignored folders. Symlinks to files are followed; a dangling one is
/// listed without metadata (it is reported `unreadable`); symlinks to
/// folders are not followed (no loops).
fn collect_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, PathBuf, Option<std::fs::Metadata>)>,
    visited: &mut HashSet<PathBuf>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    if !visited.insert(dir.to_owned()) {
        return;
    }
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        let relative = || path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        if kind.is_dir() {
            let name = entry.file_name();
            if !IGNORED_DIRS.iter().any(|d| name == *d) {
                collect_files(root, &path, out, visited);
            }
        } else if kind.is_file() {
            out.push((relative(), path.clone(), entry.metadata().ok()));
        } else if kind.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => out.push((relative(), path.clone(), Some(m))),
                Ok(_) => {}
                Err(_) => out.push((relative(), path.clone(), None)),
            }
        }
    }
}

/// Reads a file for indexing, or says why it is left out: too large (never
/// read), unreadable, binary (a NUL byte early on) or not UTF-8.
pub fn read_indexable(job: &FileJob, max_bytes: u64) -> (FileRead, u64) {
    let left = |outcome, code| FileRead::Left { outcome, code };
    let Some(size) = job.size else {
        return (left(IndexOutcome::Failed, "unreadable"), 0);
    };
    if size > max_bytes {
        return (left(IndexOutcome::Skipped, "too_large"), size);
    }
    let bytes = match std::fs::read(&job.abs) {
        Ok(bytes) => bytes,
        Err(_) => return (left(IndexOutcome::Failed, "unreadable"), size),
    };
    let size = bytes.len() as u64;
    if bytes.iter().take(BINARY_PROBE).any(|&b| b == 0) {
        return (left(IndexOutcome::Skipped, "binary"), size);
    }
    match String::from_utf8(bytes) {
        Ok(text) => (FileRead::text(text), size),
        Err(_) => (left(IndexOutcome::Failed, "invalid_utf8"), size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(path: &str) -> FileJob {
        FileJob {
            path: Arc::from(path),
            abs: PathBuf::from(path),
            size: Some(1),
            mtime: None,
            looked_at: SystemTime::now(),
        }
    }

    #[test]
    fn terms_are_identifiers_not_numbers() {
        let t: Vec<&str> = terms("fn parse_config(x: u8) -> 42 { a.b_c }").collect();
        assert_eq!(t, ["fn", "parse_config", "u8", "b_c"]);
    }

    #[test]
    fn apply_tracks_terms_duplicates_and_changes() {
        let mut index = ProjectIndex::default();
        assert!(index.apply(&job("a.rs"), FileRead::text("fn alpha() {}".into())));
        assert!(index.apply(&job("b.rs"), FileRead::text("fn alpha() {}".into())));
        assert_eq!(index.top_terms(10), [("alpha", 2), ("fn", 2)]);
        assert_eq!(index.duplication_ratio(), Some(0.5));
        let before = index.generation();
        assert!(!index.apply(&job("a.rs"), FileRead::text("fn alpha() {}".into())), "same content");
        assert_eq!(index.generation(), before);
        assert!(index.apply(&job("a.rs"), FileRead::text("fn beta() {}".into())));
        assert_eq!(index.duplication_ratio(), Some(0.0));
        let changed: Vec<u32> = index.changed_since(before).unwrap().collect();
        assert_eq!(changed, [0, 0], "removed then re-added under the same id");
        assert!(index.remove("b.rs"));
        assert_eq!(index.top_terms(10), [("beta", 1), ("fn", 1)]);
        assert_eq!((index.total_files(), index.indexed_files()), (1, 1));
        let left = FileRead::Left { outcome: IndexOutcome::Skipped, code: "binary" };
        assert!(index.apply(&job("a.rs"), left));
        assert_eq!((index.total_files(), index.indexed_files()), (1, 0));
        assert_eq!(index.store_bytes(), 96 * 2 + 96, "only bookkeeping is left");
    }

    #[test]
    fn the_change_log_answers_only_as_far_back_as_it_reaches() {
        let mut index = ProjectIndex::default();
        for i in 0..CHANGE_LOG + 10 {
            index.apply(&job(&format!("f{i}")), FileRead::text(format!("t{i}")));
        }
        assert!(index.changed_since(0).is_none());
        assert_eq!(index.changed_since(index.generation() - 3).unwrap().count(), 3);
        assert_eq!(index.changed_since(index.generation()).unwrap().count(), 0);
    }
}
