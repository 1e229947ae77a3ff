//! The append-only spool on disk: where events go while the database is
//! unreachable or slower than the traffic, replayed in order when it is back.
//!
//! Segment files `spool/<boot_id>-<first_seq>.seg`, each one boot's rows in
//! write order: a header (magic, instance id, boot id), then records
//! `[len u32][crc32 u32][payload]`. A crash mid-append leaves a short last
//! record, which is ignored; a record whose checksum or encoding is wrong
//! makes the segment corrupt: it is moved to `spool/corrupt/`, reported, and
//! replay goes on with the next one. A segment is deleted once every row of
//! it is committed; replaying one twice (after a crash) writes nothing twice
//! because the writer skips seqs at or below the stored progress.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use crate::storage::rows::{EventId, IndexRow, OpenRow, Row, RowData, SearchRow, SnapshotRow};

const MAGIC: &[u8; 8] = b"CASPOOL1";
const KINDS: [&str; 3] = ["literal", "regex", "semantic"];
const CACHES: [&str; 4] = ["l1", "l2", "l3", "miss"];
const STATUSES: [&str; 3] = ["ok", "error", "timeout"];
const OUTCOMES: [&str; 3] = ["indexed", "skipped", "failed"];

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool i/o on '{path}': {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

/// A segment waiting to be replayed.
#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    bytes: u64,
}

struct OpenSegment {
    path: PathBuf,
    boot_id: i64,
    out: BufWriter<File>,
    bytes: u64,
}

/// The segment being replayed: its rows are read once, then handed out in
/// batches.
struct Replay {
    path: PathBuf,
    instance_id: String,
    rows: VecDeque<Row>,
}

/// One batch of spooled rows to write, from one instance and boot.
#[derive(Debug)]
pub struct SpooledBatch {
    pub instance_id: String,
    pub boot_id: i64,
    pub rows: Vec<Row>,
}

/// Counters reported in health.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SpoolStats {
    pub bytes: u64,
    pub segments: usize,
    pub corrupt_segments: u64,
    pub appended_events: u64,
    pub replayed_events: u64,
}

pub struct Spool {
    dir: PathBuf,
    instance_id: String,
    max_bytes: u64,
    segment_bytes: u64,
    closed: VecDeque<Segment>,
    current: Option<OpenSegment>,
    replay: Option<Replay>,
    stats: SpoolStats,
    /// Corrupt segments found: (file name, reason), for the log.
    pub problems: Vec<String>,
}

impl Spool {
    /// Opens the spool folder, finding segments left by earlier runs.
    pub fn open(
        dir: &Path,
        instance_id: &str,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut found: Vec<Segment> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| Segment { bytes: e.metadata().map(|m| m.len()).unwrap_or(0), path: e.path() })
            .collect();
        // Names are zero-padded boot id then first seq: name order is write order.
        found.sort_by(|a, b| a.path.cmp(&b.path));
        let mut spool = Self {
            dir: dir.to_owned(),
            instance_id: instance_id.to_owned(),
            max_bytes,
            segment_bytes: segment_bytes.max(4096),
            closed: found.into(),
            current: None,
            replay: None,
            stats: SpoolStats::default(),
            problems: Vec::new(),
        };
        spool.refresh_stats();
        Ok(spool)
    }

    fn refresh_stats(&mut self) {
        let open = self.current.as_ref().map_or(0, |c| c.bytes);
        let replaying = self.replay.as_ref().map_or(0, |_| 1);
        self.stats.bytes = self.closed.iter().map(|s| s.bytes).sum::<u64>() + open;
        self.stats.segments = self.closed.len() + usize::from(self.current.is_some()) + replaying;
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    pub fn is_empty(&self) -> bool {
        self.closed.is_empty()
            && self.current.is_none()
            && self.replay.as_ref().is_none_or(|r| r.rows.is_empty())
    }

    /// Appends rows in order, durably (fsync). Returns how many were kept:
    /// once the size cap is reached the rest are refused, so the oldest data
    /// is what survives.
    pub fn append(&mut self, rows: &[Row]) -> Result<usize, SpoolError> {
        let mut kept = 0;
        let mut payload = Vec::with_capacity(256);
        for row in rows {
            let needs_new = match &self.current {
                None => true,
                Some(c) => c.boot_id != row.id.boot_id || c.bytes >= self.segment_bytes,
            };
            if needs_new {
                self.rotate()?;
            }
            payload.clear();
            encode(row, &mut payload);
            let record_len = 8 + payload.len() as u64;
            if self.stats.bytes + record_len > self.max_bytes {
                break;
            }
            if self.current.is_none() {
                self.start_segment(row)?;
            }
            let current = self.current.as_mut().expect("a segment is open");
            let crc = crc32fast::hash(&payload);
            let out = &mut current.out;
            let path = &current.path;
            out.write_all(&(payload.len() as u32).to_le_bytes()).map_err(io_err(path))?;
            out.write_all(&crc.to_le_bytes()).map_err(io_err(path))?;
            out.write_all(&payload).map_err(io_err(path))?;
            current.bytes += record_len;
            self.stats.bytes += record_len;
            kept += 1;
        }
        if let Some(current) = &mut self.current {
            current.out.flush().map_err(io_err(&current.path))?;
            current.out.get_ref().sync_data().map_err(io_err(&current.path))?;
        }
        self.stats.appended_events += kept as u64;
        self.refresh_stats();
        Ok(kept)
    }

    fn start_segment(&mut self, first: &Row) -> Result<(), SpoolError> {
        // A segment of the same first row may exist: the event queue
        // replays, after a crash, rows spooled just before it. A second
        // one sorts after it (`_` after `.`), so name order stays write order.
        let mut n = 0;
        let (path, file) = loop {
            let name = match n {
                0 => format!("{:020}-{:020}.seg", first.id.boot_id, first.id.seq),
                n => format!("{:020}-{:020}_{n:04}.seg", first.id.boot_id, first.id.seq),
            };
            let path = self.dir.join(name);
            match OpenOptions::new().create_new(true).append(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 9_999 => n += 1,
                Err(e) => return Err(io_err(&path)(e)),
            }
        };
        let mut out = BufWriter::new(file);
        let mut header = Vec::with_capacity(32 + self.instance_id.len());
        header.extend_from_slice(MAGIC);
        put_str(&mut header, &self.instance_id);
        header.extend_from_slice(&first.id.boot_id.to_le_bytes());
        out.write_all(&header).map_err(io_err(&path))?;
        self.stats.bytes += header.len() as u64;
        self.current = Some(OpenSegment { path, boot_id: first.id.boot_id, out, bytes: header.len() as u64 });
        Ok(())
    }

    /// Closes the segment being written, so it can be replayed.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        if let Some(mut current) = self.current.take() {
            current.out.flush().map_err(io_err(&current.path))?;
            current.out.get_ref().sync_data().map_err(io_err(&current.path))?;
            self.closed.push_back(Segment { path: current.path, bytes: current.bytes });
        }
        Ok(())
    }

    /// Up to `max` rows from the oldest segment, in order. They stay spooled
    /// until [`Spool::commit`] says they were written.
    pub fn peek(&mut self, max: usize) -> Result<Option<SpooledBatch>, SpoolError> {
        loop {
            if let Some(replay) = &self.replay {
                if !replay.rows.is_empty() {
                    let rows: Vec<Row> = replay.rows.iter().take(max).cloned().collect();
                    let boot_id = rows[0].id.boot_id;
                    return Ok(Some(SpooledBatch { instance_id: replay.instance_id.clone(), boot_id, rows }));
                }
                // Fully committed: the segment can go.
                let done = self.replay.take().expect("checked above");
                let _ = fs::remove_file(&done.path);
                self.refresh_stats();
                continue;
            }
            if self.closed.is_empty() {
                self.rotate()?;
            }
            let Some(segment) = self.closed.pop_front() else { return Ok(None) };
            match read_segment(&segment.path) {
                Ok((instance_id, rows)) => {
                    self.replay = Some(Replay { path: segment.path, instance_id, rows: rows.into() });
                }
                Err(reason) => self.quarantine(&segment.path, &reason),
            }
            self.refresh_stats();
        }
    }

    /// The first `count` rows returned by [`Spool::peek`] are written.
    pub fn commit(&mut self, count: usize) {
        if let Some(replay) = &mut self.replay {
            let count = count.min(replay.rows.len());
            replay.rows.drain(..count);
            self.stats.replayed_events += count as u64;
        }
    }

    fn quarantine(&mut self, path: &Path, reason: &str) {
        let corrupt = self.dir.join("corrupt");
        let _ = fs::create_dir_all(&corrupt);
        let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
        let _ = fs::rename(path, corrupt.join(&name));
        self.stats.corrupt_segments += 1;
        self.problems.push(format!(
            "spool segment '{}' is corrupt ({reason}); moved to '{}' and skipped",
            name.to_string_lossy(),
            corrupt.display()
        ));
    }

    /// Flushes and syncs the open segment (shutdown).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if let Some(current) = &mut self.current {
            current.out.flush().map_err(io_err(&current.path))?;
            current.out.get_ref().sync_data().map_err(io_err(&current.path))?;
        }
        Ok(())
    }
}

/// Reads a whole segment: its instance id and rows. A short final record
/// (a crash mid-append) ends the segment; anything else wrong is an error.
fn read_segment(path: &Path) -> Result<(String, Vec<Row>), String> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| format!("unreadable: {e}"))?;
    let mut cursor = Cursor { bytes: &bytes, at: 0 };
    let magic = cursor.take(8).map_err(|_| "no header".to_owned())?;
    if magic != MAGIC {
        return Err("not a spool segment (bad magic)".to_owned());
    }
    let instance_id = cursor.string().map_err(|e| format!("header: {e}"))?;
    let boot_id = cursor.i64().map_err(|e| format!("header: {e}"))?;
    let mut rows = Vec::new();
    while cursor.remaining() > 0 {
        if cursor.remaining() < 8 {
            break; // torn length prefix
        }
        let len = cursor.u32().expect("checked") as usize;
        let crc = cursor.u32().expect("checked");
        if cursor.remaining() < len {
            break; // torn record
        }
        let payload = cursor.take(len).expect("checked");
        if crc32fast::hash(payload) != crc {
            return Err(format!("checksum mismatch in record {}", rows.len() + 1));
        }
        let row = decode(boot_id, payload).map_err(|e| format!("record {}: {e}", rows.len() + 1))?;
        rows.push(row);
    }
    Ok((instance_id, rows))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn code_of(list: &[&str], value: &str) -> u8 {
    list.iter().position(|v| *v == value).unwrap_or(0) as u8
}

fn encode(row: &Row, out: &mut Vec<u8>) {
    out.extend_from_slice(&row.id.seq.to_le_bytes());
    match &row.data {
        RowData::Search(r) => {
            out.push(1);
            out.extend_from_slice(&r.time_us.to_le_bytes());
            put_str(out, &r.project);
            put_str(out, &r.user_id);
            put_opt_str(out, r.query.as_deref());
            out.push(code_of(&KINDS, r.kind));
            out.push(code_of(&CACHES, r.cache));
            out.push(code_of(&STATUSES, r.status));
            put_opt_str(out, r.error_code.as_deref());
            out.extend_from_slice(&r.latency_ms.to_le_bytes());
            out.extend_from_slice(&r.latency_bucket.to_le_bytes());
            out.extend_from_slice(&r.result_count.to_le_bytes());
            out.extend_from_slice(&(r.top_results.len() as u32).to_le_bytes());
            for path in r.top_results.iter() {
                put_str(out, path);
            }
            put_str(out, &r.search_id);
        }
        RowData::Index(r) => {
            out.push(2);
            out.extend_from_slice(&r.time_us.to_le_bytes());
            put_str(out, &r.project);
            put_str(out, &r.path);
            put_str(out, &r.file_type);
            out.extend_from_slice(&r.bytes.to_le_bytes());
            out.extend_from_slice(&r.duration_ms.to_le_bytes());
            out.push(code_of(&OUTCOMES, r.outcome));
            put_opt_str(out, r.error_code.as_deref());
            out.extend_from_slice(&r.queue_depth.to_le_bytes());
        }
        RowData::Open(r) => {
            out.push(3);
            out.extend_from_slice(&r.time_us.to_le_bytes());
            put_str(out, &r.project);
            put_str(out, &r.user_id);
            put_str(out, &r.path);
            out.extend_from_slice(&r.rank.to_le_bytes());
            put_str(out, &r.search_id);
        }
        RowData::Snapshot(r) => {
            out.push(4);
            out.extend_from_slice(&r.time_us.to_le_bytes());
            put_str(out, &r.project);
            out.extend_from_slice(&r.total_files.to_le_bytes());
            out.extend_from_slice(&r.indexed_files.to_le_bytes());
            out.extend_from_slice(&r.vector_store_bytes.to_le_bytes());
            out.extend_from_slice(&r.embedding_cache_bytes.to_le_bytes());
            match r.duplication_ratio {
                Some(ratio) => {
                    out.push(1);
                    out.extend_from_slice(&ratio.to_le_bytes());
                }
                None => out.push(0),
            }
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.remaining() < n {
            return Err("truncated");
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16, &'static str> {
        Ok(i16::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, &'static str> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn str(&mut self) -> Result<&'a str, &'static str> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| "invalid utf-8")
    }
    fn string(&mut self) -> Result<String, &'static str> {
        self.str().map(str::to_owned)
    }
    fn opt_string(&mut self) -> Result<Option<String>, &'static str> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            _ => Err("bad option tag"),
        }
    }
    fn code(&mut self, list: &[&'static str]) -> Result<&'static str, &'static str> {
        list.get(self.u8()? as usize).copied().ok_or("unknown code")
    }
}

fn decode(boot_id: i64, payload: &[u8]) -> Result<Row, &'static str> {
    let mut c = Cursor { bytes: payload, at: 0 };
    let seq = c.i64()?;
    let data = match c.u8()? {
        1 => RowData::Search(SearchRow {
            time_us: c.i64()?,
            project: c.string()?,
            user_id: c.string()?,
            query: c.opt_string()?,
            kind: c.code(&KINDS)?,
            cache: c.code(&CACHES)?,
            status: c.code(&STATUSES)?,
            error_code: c.opt_string()?,
            latency_ms: c.f64()?,
            latency_bucket: c.i16()?,
            result_count: c.i32()?,
            top_results: {
                let n = c.u32()? as usize;
                if n > 1024 {
                    return Err("implausible result count");
                }
                let mut paths = crate::storage::rows::Paths::default();
                for _ in 0..n {
                    paths.push(c.str()?);
                }
                paths
            },
            search_id: c.string()?,
        }),
        2 => RowData::Index(IndexRow {
            time_us: c.i64()?,
            project: c.string()?,
            path: c.string()?,
            file_type: c.string()?,
            bytes: c.i64()?,
            duration_ms: c.f64()?,
            outcome: c.code(&OUTCOMES)?,
            error_code: c.opt_string()?,
            queue_depth: c.i64()?,
        }),
        3 => RowData::Open(OpenRow {
            time_us: c.i64()?,
            project: c.string()?,
            user_id: c.string()?,
            path: c.string()?,
            rank: c.i32()?,
            search_id: c.string()?,
        }),
        4 => RowData::Snapshot(SnapshotRow {
            time_us: c.i64()?,
            project: c.string()?,
            total_files: c.i64()?,
            indexed_files: c.i64()?,
            vector_store_bytes: c.i64()?,
            embedding_cache_bytes: c.i64()?,
            duplication_ratio: match c.u8()? {
                0 => None,
                1 => Some(c.f64()?),
                _ => return Err("bad option tag"),
            },
        }),
        _ => return Err("unknown row kind"),
    };
    if c.remaining() != 0 {
        return Err("trailing bytes");
    }
    Ok(Row { id: EventId { boot_id, seq }, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spool-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    pub(crate) fn rows(boot_id: i64, seqs: std::ops::RangeInclusive<i64>) -> Vec<Row> {
        seqs.map(|seq| {
            let data = match seq % 4 {
                0 => RowData::Search(SearchRow {
                    time_us: 1_000 + seq,
                    project: "p".into(),
                    user_id: "u".into(),
                    query: (seq % 8 == 0).then(|| "q".to_owned()),
                    kind: "regex",
                    cache: "l2",
                    status: "ok",
                    error_code: None,
                    latency_ms: 1.25,
                    latency_bucket: 1400,
                    result_count: 3,
                    top_results: ["a.rs", "b.rs"].into_iter().collect(),
                    search_id: format!("s{seq}"),
                }),
                1 => RowData::Index(IndexRow {
                    time_us: 1_000 + seq,
                    project: "p".into(),
                    path: "x.bin".into(),
                    file_type: "bin".into(),
                    bytes: 10,
                    duration_ms: 0.5,
                    outcome: "skipped",
                    error_code: Some("binary".into()),
                    queue_depth: 4,
                }),
                2 => RowData::Open(OpenRow {
                    time_us: 1_000 + seq,
                    project: "p".into(),
                    user_id: "u".into(),
                    path: "a.rs".into(),
                    rank: 2,
                    search_id: "s".into(),
                }),
                _ => RowData::Snapshot(SnapshotRow {
                    time_us: 1_000 + seq,
                    project: "p".into(),
                    total_files: 5,
                    indexed_files: 4,
                    vector_store_bytes: 100,
                    embedding_cache_bytes: 7,
                    duplication_ratio: Some(0.1),
                }),
            };
            Row { id: EventId { boot_id, seq }, data }
        })
        .collect()
    }

    #[test]
    fn rows_come_back_in_order_across_segments_and_restarts() {
        let dir = scratch("order");
        let written = [rows(7, 1..=300), rows(8, 1..=50)].concat();
        {
            let mut spool = Spool::open(&dir, "inst-a", 1 << 30, 4096).unwrap();
            assert_eq!(spool.append(&written).unwrap(), 350);
            assert!(spool.stats().segments > 2, "small segments rotate");
        }
        // A new process finds the segments and replays them in order.
        let mut spool = Spool::open(&dir, "inst-b", 1 << 30, 4096).unwrap();
        let mut read = Vec::new();
        while let Some(batch) = spool.peek(64).unwrap() {
            assert_eq!(batch.instance_id, "inst-a", "rows keep the instance that received them");
            assert!(batch.rows.iter().all(|r| r.id.boot_id == batch.boot_id));
            let n = batch.rows.len();
            read.extend(batch.rows);
            spool.commit(n);
        }
        assert_eq!(read, written);
        assert!(spool.is_empty());
        assert_eq!(fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count(), 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_cap_keeps_the_oldest_rows() {
        let dir = scratch("cap");
        let mut spool = Spool::open(&dir, "i", 4096, 1 << 20).unwrap();
        let kept = spool.append(&rows(1, 1..=1000)).unwrap();
        assert!(kept > 10 && kept < 1000, "kept {kept}");
        assert_eq!(spool.append(&rows(1, 1001..=1001)).unwrap(), 0);
        let batch = spool.peek(usize::MAX).unwrap().unwrap();
        assert_eq!(batch.rows.first().unwrap().id.seq, 1);
        assert_eq!(batch.rows.len(), kept);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_is_ignored_and_a_corrupt_segment_is_quarantined() {
        let dir = scratch("corrupt");
        {
            let mut spool = Spool::open(&dir, "i", 1 << 30, 1 << 20).unwrap();
            spool.append(&rows(1, 1..=10)).unwrap();
            spool.append(&rows(2, 1..=10)).unwrap();
            spool.append(&rows(3, 1..=10)).unwrap();
        }
        let mut segments: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        segments.sort();
        // Boot 1: a crash mid-append left half a record.
        let mut torn = fs::read(&segments[0]).unwrap();
        torn.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
        fs::write(&segments[0], torn).unwrap();
        // Boot 2: a flipped byte inside a record.
        let mut bad = fs::read(&segments[1]).unwrap();
        let middle = bad.len() / 2;
        bad[middle] ^= 0xff;
        fs::write(&segments[1], bad).unwrap();

        let mut spool = Spool::open(&dir, "i", 1 << 30, 1 << 20).unwrap();
        let mut boots = Vec::new();
        while let Some(batch) = spool.peek(100).unwrap() {
            boots.push((batch.boot_id, batch.rows.len()));
            let n = batch.rows.len();
            spool.commit(n);
        }
        assert_eq!(boots, [(1, 10), (3, 10)]);
        assert_eq!(spool.stats().corrupt_segments, 1);
        assert_eq!(spool.problems.len(), 1);
        assert!(spool.problems[0].contains("is corrupt"), "{}", spool.problems[0]);
        assert!(dir.join("corrupt").read_dir().unwrap().count() == 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
