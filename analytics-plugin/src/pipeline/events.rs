//! Owned copies of hook events, made by the hooks and consumed by the
//! pipeline worker. Each event's strings share one allocation, so a hook
//! allocates once.

use plugin_api::{
    CacheOutcome, FileIndexed, FileOpened, IndexOutcome, ProjectSnapshot, QueryKind, SearchExecuted,
    SearchStatus,
};

/// Result paths kept per search event.
pub const MAX_TOP_RESULTS: usize = 10;
const MAX_FIELDS: usize = 5 + MAX_TOP_RESULTS;

/// Several strings packed in one buffer.
#[derive(Debug, Clone)]
pub struct Packed {
    buf: Box<str>,
    ends: [u32; MAX_FIELDS],
    len: u8,
}

impl Packed {
    fn new<'a>(fields: &[&'a str], extra: impl Iterator<Item = &'a str> + Clone) -> Self {
        let capacity =
            fields.iter().map(|f| f.len()).sum::<usize>() + extra.clone().map(str::len).sum::<usize>();
        let mut buf = String::with_capacity(capacity);
        let mut ends = [0u32; MAX_FIELDS];
        let mut len = 0;
        for field in fields.iter().copied().chain(extra).take(MAX_FIELDS) {
            buf.push_str(field);
            ends[len] = buf.len() as u32;
            len += 1;
        }
        Self { buf: buf.into_boxed_str(), ends, len: len as u8 }
    }

    pub fn get(&self, index: usize) -> &str {
        if index >= self.len as usize {
            return "";
        }
        let start = if index == 0 { 0 } else { self.ends[index - 1] as usize };
        &self.buf[start..self.ends[index] as usize]
    }

    fn count(&self) -> usize {
        self.len as usize
    }
}

#[derive(Debug, Clone)]
pub struct SearchRecord {
    pub timestamp_us: i64,
    pub kind: QueryKind,
    pub cache: CacheOutcome,
    pub status: SearchStatus,
    pub latency_ns: u64,
    pub result_count: u64,
    /// search_id, project, user, query, error_code, then top results.
    text: Packed,
}

impl SearchRecord {
    pub fn copy_from(event: &SearchExecuted<'_>) -> Self {
        let top = event.top_results.as_slice().iter().take(MAX_TOP_RESULTS).map(|r| r.as_str());
        Self {
            timestamp_us: event.timestamp_us,
            kind: event.kind,
            cache: event.cache,
            status: event.status,
            latency_ns: event.latency_ns,
            result_count: event.result_count,
            text: Packed::new(
                &[
                    event.search_id.as_str(),
                    event.project.as_str(),
                    event.user.as_str(),
                    event.query.as_str(),
                    event.error_code.as_str(),
                ],
                top,
            ),
        }
    }
    pub fn search_id(&self) -> &str {
        self.text.get(0)
    }
    pub fn project(&self) -> &str {
        self.text.get(1)
    }
    pub fn user(&self) -> &str {
        self.text.get(2)
    }
    pub fn query(&self) -> &str {
        self.text.get(3)
    }
    pub fn error_code(&self) -> &str {
        self.text.get(4)
    }
    pub fn top_results(&self) -> impl Iterator<Item = &str> + Clone {
        (5..self.text.count()).map(|i| self.text.get(i))
    }
}

#[derive(Debug, Clone)]
pub struct IndexRecord {
    pub timestamp_us: i64,
    pub outcome: IndexOutcome,
    pub bytes: u64,
    pub duration_ns: u64,
    pub queue_depth: u64,
    /// project, path, file_type, error_code.
    text: Packed,
}

impl IndexRecord {
    pub fn copy_from(event: &FileIndexed<'_>) -> Self {
        Self {
            timestamp_us: event.timestamp_us,
            outcome: event.outcome,
            bytes: event.bytes,
            duration_ns: event.duration_ns,
            queue_depth: event.queue_depth,
            text: Packed::new(
                &[
                    event.project.as_str(),
                    event.path.as_str(),
                    event.file_type.as_str(),
                    event.error_code.as_str(),
                ],
                std::iter::empty(),
            ),
        }
    }
    pub fn project(&self) -> &str {
        self.text.get(0)
    }
    pub fn path(&self) -> &str {
        self.text.get(1)
    }
    pub fn file_type(&self) -> &str {
        self.text.get(2)
    }
    pub fn error_code(&self) -> &str {
        self.text.get(3)
    }
}

#[derive(Debug, Clone)]
pub struct OpenRecord {
    pub timestamp_us: i64,
    pub rank: u32,
    /// project, user, path, search_id.
    text: Packed,
}

impl OpenRecord {
    pub fn copy_from(event: &FileOpened<'_>) -> Self {
        Self {
            timestamp_us: event.timestamp_us,
            rank: event.rank,
            text: Packed::new(
                &[event.project.as_str(), event.user.as_str(), event.path.as_str(), event.search_id.as_str()],
                std::iter::empty(),
            ),
        }
    }
    pub fn project(&self) -> &str {
        self.text.get(0)
    }
    pub fn user(&self) -> &str {
        self.text.get(1)
    }
    pub fn path(&self) -> &str {
        self.text.get(2)
    }
    pub fn search_id(&self) -> &str {
        self.text.get(3)
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotRecord {
    pub timestamp_us: i64,
    pub project: String,
    pub total_files: u64,
    pub indexed_files: u64,
    pub vector_store_bytes: u64,
    pub embedding_cache_bytes: u64,
    pub duplication_ratio: Option<f64>,
}

impl SnapshotRecord {
    pub fn copy_from(event: &ProjectSnapshot<'_>) -> Self {
        Self {
            timestamp_us: event.timestamp_us,
            project: event.project.as_str().to_owned(),
            total_files: event.total_files,
            indexed_files: event.indexed_files,
            vector_store_bytes: event.vector_store_bytes,
            embedding_cache_bytes: event.embedding_cache_bytes,
            duplication_ratio: event.duplication_ratio.into_option(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Search(SearchRecord),
    Index(IndexRecord),
    Open(OpenRecord),
    Snapshot(SnapshotRecord),
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RSlice, RStr};

    use super::*;

    #[test]
    fn search_record_keeps_every_field() {
        let top = [RStr::from("src/a.rs"), RStr::from(""), RStr::from("src/b.rs")];
        let event = SearchExecuted {
            search_id: RStr::from("h-1"),
            project: RStr::from("demo"),
            user: RStr::from("alice"),
            query: RStr::from("fn main"),
            kind: QueryKind::Regex,
            cache: CacheOutcome::L2,
            status: SearchStatus::Ok,
            error_code: RStr::from(""),
            latency_ns: 1234,
            result_count: 3,
            top_results: RSlice::from_slice(&top),
            timestamp_us: 99,
        };
        let record = SearchRecord::copy_from(&event);
        assert_eq!(
            (record.search_id(), record.project(), record.user(), record.query(), record.error_code()),
            ("h-1", "demo", "alice", "fn main", "")
        );
        assert_eq!(record.top_results().collect::<Vec<_>>(), ["src/a.rs", "", "src/b.rs"]);
        assert_eq!((record.latency_ns, record.result_count, record.timestamp_us), (1234, 3, 99));
    }
}
