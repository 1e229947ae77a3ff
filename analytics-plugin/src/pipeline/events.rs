//! Owned copies of hook events, made by the hooks and consumed by the
//! pipeline worker. Each event's strings share one buffer, and buffers go
//! round: the worker hands the ones it is done with back ([`Spare`]) for
//! the hooks to fill again.

use plugin_api::{
    CacheOutcome, FileIndexed, FileOpened, IndexOutcome, ProjectSnapshot, QueryKind, SearchExecuted,
    SearchStatus,
};

/// Result paths kept per search event.
pub const MAX_TOP_RESULTS: usize = 10;
const MAX_FIELDS: usize = 5 + MAX_TOP_RESULTS;

/// Buffers kept for reuse at most, and the largest kept.
const SPARE_BUFFERS: usize = 4_096;
const SPARE_MAX_BYTES: usize = 4_096;

/// Event buffers the worker is done with, for the hooks to fill again: in
/// a steady stream a hook allocates nothing, and no buffer a host thread
/// allocated is freed on the plugin's. (glibc gives such a free back to
/// the allocating thread's arena, and that thread's next allocations took
/// its slow path: 0.9 µs more of the host's CPU per request, measured.)
/// At most 4,096 buffers of at most 4 KB each are kept.
pub struct Spare {
    buffers: crossbeam_queue::ArrayQueue<String>,
}

impl Default for Spare {
    fn default() -> Self {
        Spare { buffers: crossbeam_queue::ArrayQueue::new(SPARE_BUFFERS) }
    }
}

impl Spare {
    /// An empty buffer: a used one if there is one.
    #[inline]
    pub fn take(&self) -> String {
        self.buffers.pop().unwrap_or_default()
    }

    /// Keeps `buffer` for a hook to fill, unless enough are kept or it is
    /// large (one odd event must not pin its size).
    pub fn give(&self, mut buffer: String) {
        if buffer.capacity() <= SPARE_MAX_BYTES {
            buffer.clear();
            let _ = self.buffers.push(buffer);
        }
    }
}

/// Several strings packed in one buffer.
#[derive(Debug, Clone)]
pub struct Packed {
    buf: String,
    ends: [u32; MAX_FIELDS],
    len: u8,
}

impl Packed {
    fn new<'a>(mut buf: String, fields: &[&'a str], extra: impl Iterator<Item = &'a str> + Clone) -> Self {
        let capacity =
            fields.iter().map(|f| f.len()).sum::<usize>() + extra.clone().map(str::len).sum::<usize>();
        buf.clear();
        buf.reserve(capacity);
        let mut ends = [0u32; MAX_FIELDS];
        let mut len = 0;
        for field in fields.iter().copied().chain(extra).take(MAX_FIELDS) {
            buf.push_str(field);
            ends[len] = buf.len() as u32;
            len += 1;
        }
        Self { buf, ends, len: len as u8 }
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
    pub fn copy_from(event: &SearchExecuted<'_>, buffer: String) -> Self {
        let top = event.top_results.as_slice().iter().take(MAX_TOP_RESULTS).map(|r| r.as_str());
        Self {
            timestamp_us: event.timestamp_us,
            kind: event.kind,
            cache: event.cache,
            status: event.status,
            latency_ns: event.latency_ns,
            result_count: event.result_count,
            text: Packed::new(
                buffer,
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
    pub fn copy_from(event: &FileIndexed<'_>, buffer: String) -> Self {
        Self {
            timestamp_us: event.timestamp_us,
            outcome: event.outcome,
            bytes: event.bytes,
            duration_ns: event.duration_ns,
            queue_depth: event.queue_depth,
            text: Packed::new(
                buffer,
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
    pub fn copy_from(event: &FileOpened<'_>, buffer: String) -> Self {
        Self {
            timestamp_us: event.timestamp_us,
            rank: event.rank,
            text: Packed::new(
                buffer,
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

impl Event {
    /// The event's text buffer, for [`Spare::give`].
    pub fn into_buffer(self) -> Option<String> {
        match self {
            Event::Search(e) => Some(e.text.buf),
            Event::Index(e) => Some(e.text.buf),
            Event::Open(e) => Some(e.text.buf),
            Event::Snapshot(_) => None,
        }
    }
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
        // A used buffer, longer than this event needs, holds it exactly.
        let used = SearchRecord::copy_from(&event, String::new()).text.buf;
        let spare = Spare::default();
        spare.give(used.repeat(3));
        let record = SearchRecord::copy_from(&event, spare.take());
        assert_eq!(
            (record.search_id(), record.project(), record.user(), record.query(), record.error_code()),
            ("h-1", "demo", "alice", "fn main", "")
        );
        assert_eq!(record.top_results().collect::<Vec<_>>(), ["src/a.rs", "", "src/b.rs"]);
        assert_eq!((record.latency_ns, record.result_count, record.timestamp_us), (1234, 3, 99));
        assert!(record.text.buf.capacity() >= 3 * used.len(), "the spare buffer was used");
        assert!(spare.take().capacity() == 0, "one spare, taken");
    }

    #[test]
    fn spare_buffers_are_bounded_in_size_and_number() {
        let spare = Spare::default();
        spare.give(String::with_capacity(SPARE_MAX_BYTES + 1));
        assert_eq!(spare.take().capacity(), 0, "a large buffer is not kept");
        for _ in 0..SPARE_BUFFERS + 10 {
            spare.give(String::with_capacity(16));
        }
        assert_eq!(spare.buffers.len(), SPARE_BUFFERS);
    }
}
