//! Owned events as the pipeline worker reads them back from the event
//! queue ([`super::queue`]). Each event's strings share one buffer, and
//! the worker reuses buffers it is done with ([`Spare`]).

use plugin_api::{CacheOutcome, IndexOutcome, QueryKind, SearchStatus};

/// Result paths kept per search event.
pub const MAX_TOP_RESULTS: usize = 10;
const MAX_FIELDS: usize = 5 + MAX_TOP_RESULTS;

/// Buffers kept for reuse at most, and the largest kept.
const SPARE_BUFFERS: usize = 4_096;
const SPARE_MAX_BYTES: usize = 4_096;

/// Event buffers the worker is done with, to fill with the next events it
/// reads: in a steady stream it allocates nothing per event. At most 4,096
/// buffers of at most 4 KB each are kept.
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
    /// Fields already laid out in `buf`, ending at `ends`: None unless the
    /// ends rise within the buffer and fall on character boundaries.
    pub(super) fn laid_out(buf: String, ends: &[u32]) -> Option<Self> {
        if ends.len() > MAX_FIELDS || ends.last().copied().unwrap_or(0) as usize != buf.len() {
            return None;
        }
        let mut previous = 0;
        let mut packed = [0u32; MAX_FIELDS];
        for (i, &end) in ends.iter().enumerate() {
            if end < previous || !buf.is_char_boundary(end as usize) {
                return None;
            }
            packed[i] = end;
            previous = end;
        }
        Some(Self { buf, ends: packed, len: ends.len() as u8 })
    }

    pub(super) fn into_buffer(self) -> String {
        self.buf
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
    pub(super) text: Packed,
}

impl SearchRecord {
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
    pub(super) text: Packed,
}

impl IndexRecord {
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
    pub(super) text: Packed,
}

impl OpenRecord {
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
    use super::*;

    #[test]
    fn laid_out_fields_must_rise_on_character_boundaries() {
        let packed = Packed::laid_out("h-1demoé".to_owned(), &[3, 7, 9]).unwrap();
        assert_eq!((packed.get(0), packed.get(1), packed.get(2), packed.get(3)), ("h-1", "demo", "é", ""));
        assert!(Packed::laid_out("abc".to_owned(), &[2, 1, 3]).is_none(), "ends must rise");
        assert!(Packed::laid_out("é".to_owned(), &[1, 2]).is_none(), "inside a character");
        assert!(Packed::laid_out("abc".to_owned(), &[2]).is_none(), "the last end is the buffer's");
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
