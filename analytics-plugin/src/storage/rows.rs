//! Rows as stored: hook events with the event identity (instance, boot,
//! sequence) and the privacy settings applied. The spool and every backend
//! write exactly these.

use crate::{
    pipeline::events::Event,
    storage::{latency, privacy::Privacy},
};

/// Identity of one event: unique per instance across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId {
    /// Start time of the plugin that received the event (Unix µs).
    pub boot_id: i64,
    /// Position in that boot's write order, from 1.
    pub seq: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchRow {
    pub time_us: i64,
    pub project: String,
    pub user_id: String,
    pub query: Option<String>,
    pub kind: &'static str,
    pub cache: &'static str,
    pub status: &'static str,
    pub error_code: Option<String>,
    pub latency_ms: f64,
    pub latency_bucket: i16,
    pub result_count: i32,
    pub top_results: Paths,
    pub search_id: String,
}

/// A search's result paths, best first, in two allocations whatever their
/// number: the paths' text back to back, and where each one ends. (As a
/// `Vec<String>`, the ten paths of every search were ten allocations made
/// and freed on the pipeline's thread: a tenth of its time.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Paths {
    text: String,
    ends: Vec<u32>,
}

impl Paths {
    pub fn with_capacity(paths: usize, bytes: usize) -> Self {
        Paths { text: String::with_capacity(bytes), ends: Vec::with_capacity(paths) }
    }

    pub fn push(&mut self, path: &str) {
        self.text.push_str(path);
        // Paths come from hook events capped in count and from the spool,
        // whose rows were such paths: never 4 GiB in all.
        self.ends.push(u32::try_from(self.text.len()).expect("result paths under 4 GiB"));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone + '_ {
        (0..self.ends.len()).map(move |i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            &self.text[start..self.ends[i] as usize]
        })
    }
}

impl<S: AsRef<str>> FromIterator<S> for Paths {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut paths = Paths::default();
        for path in iter {
            paths.push(path.as_ref());
        }
        paths
    }
}

impl std::fmt::Debug for Paths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// As a sequence of strings: the JSON array the databases store.
impl serde::Serialize for Paths {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub time_us: i64,
    pub project: String,
    pub path: String,
    pub file_type: String,
    pub bytes: i64,
    pub duration_ms: f64,
    pub outcome: &'static str,
    pub error_code: Option<String>,
    pub queue_depth: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenRow {
    pub time_us: i64,
    pub project: String,
    pub user_id: String,
    pub path: String,
    pub rank: i32,
    pub search_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub time_us: i64,
    pub project: String,
    pub total_files: i64,
    pub indexed_files: i64,
    pub vector_store_bytes: i64,
    pub embedding_cache_bytes: i64,
    pub duplication_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RowData {
    Search(SearchRow),
    Index(IndexRow),
    Open(OpenRow),
    Snapshot(SnapshotRow),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: EventId,
    pub data: RowData,
}

impl Row {
    pub fn time_us(&self) -> i64 {
        match &self.data {
            RowData::Search(r) => r.time_us,
            RowData::Index(r) => r.time_us,
            RowData::Open(r) => r.time_us,
            RowData::Snapshot(r) => r.time_us,
        }
    }

    pub fn from_event(id: EventId, event: &Event, privacy: &Privacy) -> Row {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let data = match event {
            Event::Search(e) => RowData::Search(SearchRow {
                time_us: e.timestamp_us,
                project: e.project().to_owned(),
                user_id: privacy.user(e.user()),
                query: privacy.query(e.query()),
                kind: e.kind.as_str(),
                cache: e.cache.as_str(),
                status: e.status.as_str(),
                error_code: non_empty(e.error_code()),
                latency_ms: e.latency_ns as f64 / 1e6,
                latency_bucket: latency::bucket_of_ns(e.latency_ns),
                result_count: e.result_count.min(i32::MAX as u64) as i32,
                top_results: {
                    let top = e.top_results();
                    let mut paths =
                        Paths::with_capacity(top.clone().count(), top.clone().map(str::len).sum());
                    top.for_each(|path| paths.push(path));
                    paths
                },
                search_id: e.search_id().to_owned(),
            }),
            Event::Index(e) => RowData::Index(IndexRow {
                time_us: e.timestamp_us,
                project: e.project().to_owned(),
                path: e.path().to_owned(),
                file_type: e.file_type().to_owned(),
                bytes: e.bytes.min(i64::MAX as u64) as i64,
                duration_ms: e.duration_ns as f64 / 1e6,
                outcome: e.outcome.as_str(),
                error_code: non_empty(e.error_code()),
                queue_depth: e.queue_depth.min(i64::MAX as u64) as i64,
            }),
            Event::Open(e) => RowData::Open(OpenRow {
                time_us: e.timestamp_us,
                project: e.project().to_owned(),
                user_id: privacy.user(e.user()),
                path: e.path().to_owned(),
                rank: e.rank.min(i32::MAX as u32) as i32,
                search_id: e.search_id().to_owned(),
            }),
            Event::Snapshot(e) => RowData::Snapshot(SnapshotRow {
                time_us: e.timestamp_us,
                project: e.project.clone(),
                total_files: e.total_files.min(i64::MAX as u64) as i64,
                indexed_files: e.indexed_files.min(i64::MAX as u64) as i64,
                vector_store_bytes: e.vector_store_bytes.min(i64::MAX as u64) as i64,
                embedding_cache_bytes: e.embedding_cache_bytes.min(i64::MAX as u64) as i64,
                duplication_ratio: e.duplication_ratio,
            }),
        };
        Row { id, data }
    }
}

/// Rows of one write, split by table, with the identity range they cover.
#[derive(Debug, Default, Clone)]
pub struct RowBatch {
    pub boot_id: i64,
    pub searches: Vec<(EventId, SearchRow)>,
    pub indexes: Vec<(EventId, IndexRow)>,
    pub opens: Vec<(EventId, OpenRow)>,
    pub snapshots: Vec<(EventId, SnapshotRow)>,
    /// Highest seq in the batch.
    pub last_seq: i64,
    pub min_time_us: i64,
    pub max_time_us: i64,
}

impl RowBatch {
    /// An empty batch of one boot.
    pub fn new(boot_id: i64) -> Self {
        RowBatch { boot_id, min_time_us: i64::MAX, max_time_us: i64::MIN, ..Default::default() }
    }

    /// An empty batch of the same boot with room for a quarter more rows of
    /// each table than this one holds: the next batch of a steady stream
    /// fills its vectors without growing (and copying) them.
    pub fn empty_like(&self) -> Self {
        let room = |n: usize| n + n / 4;
        RowBatch {
            searches: Vec::with_capacity(room(self.searches.len())),
            indexes: Vec::with_capacity(room(self.indexes.len())),
            opens: Vec::with_capacity(room(self.opens.len())),
            snapshots: Vec::with_capacity(room(self.snapshots.len())),
            ..RowBatch::new(self.boot_id)
        }
    }

    /// Adds a row of this batch's boot.
    pub fn push(&mut self, row: Row) {
        debug_assert_eq!(row.id.boot_id, self.boot_id);
        self.last_seq = self.last_seq.max(row.id.seq);
        let time = row.time_us();
        self.min_time_us = self.min_time_us.min(time);
        self.max_time_us = self.max_time_us.max(time);
        match row.data {
            RowData::Search(r) => self.searches.push((row.id, r)),
            RowData::Index(r) => self.indexes.push((row.id, r)),
            RowData::Open(r) => self.opens.push((row.id, r)),
            RowData::Snapshot(r) => self.snapshots.push((row.id, r)),
        }
    }

    /// Splits rows of one boot (callers group by boot first).
    pub fn from_rows(boot_id: i64, rows: impl IntoIterator<Item = Row>) -> Self {
        let mut batch = RowBatch::new(boot_id);
        for row in rows {
            batch.push(row);
        }
        batch
    }

    /// The rows back, in sequence order (the inverse of [`RowBatch::from_rows`]
    /// for rows given in that order).
    pub fn into_rows(self) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.len());
        rows.extend(self.searches.into_iter().map(|(id, r)| Row { id, data: RowData::Search(r) }));
        rows.extend(self.indexes.into_iter().map(|(id, r)| Row { id, data: RowData::Index(r) }));
        rows.extend(self.opens.into_iter().map(|(id, r)| Row { id, data: RowData::Open(r) }));
        rows.extend(self.snapshots.into_iter().map(|(id, r)| Row { id, data: RowData::Snapshot(r) }));
        rows.sort_by_key(|r| r.id);
        rows
    }

    pub fn len(&self) -> usize {
        self.searches.len() + self.indexes.len() + self.opens.len() + self.snapshots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_its_rows_back_in_sequence_order() {
        let id = |seq| EventId { boot_id: 7, seq };
        let open = |seq| Row {
            id: id(seq),
            data: RowData::Open(OpenRow {
                time_us: seq * 10,
                project: "p".into(),
                user_id: "u".into(),
                path: format!("f{seq}"),
                rank: 1,
                search_id: "s".into(),
            }),
        };
        let snapshot = |seq| Row {
            id: id(seq),
            data: RowData::Snapshot(SnapshotRow {
                time_us: seq * 10,
                project: "p".into(),
                total_files: 3,
                indexed_files: 2,
                vector_store_bytes: 0,
                embedding_cache_bytes: 0,
                duplication_ratio: None,
            }),
        };
        let rows = vec![open(1), snapshot(2), open(3), snapshot(4), open(5)];
        let batch = RowBatch::from_rows(7, rows.clone());
        assert_eq!((batch.opens.len(), batch.snapshots.len(), batch.last_seq), (3, 2, 5));
        assert_eq!(batch.into_rows(), rows);
    }
}
