//! The event queue's journal on disk: what survives a power loss.
//!
//! The queue's ring lives in the page cache (tmpfs where it can), which a
//! crashed process leaves intact but a power loss or a reboot does not. So
//! the worker appends every record it reads from the ring, as it is, to a
//! journal segment here (buffered, on the plugin's thread, never a hook's),
//! and syncs it every `pipeline.fsync_interval_ms`: on power loss at most
//! that window (plus the worker's ~20 ms between reads) is lost. Segments
//! whose records the writer has released (committed or spooled) are
//! deleted. The journal is read only when a start finds no trustworthy
//! ring: then its records become spool rows (the high-water mark skips what
//! was committed), and it is emptied.
//!
//! Segment files `journal/<first position, 20 digits>.jnl`: frames of
//! `[len u32][pos u64][record]`, the record checksummed by the queue's own
//! format. A short last frame (power loss mid-write) ends a segment; a
//! frame whose record fails its checksum is skipped and counted.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::queue::record_ok;

/// A segment is closed at this size and a new one started.
const SEGMENT_BYTES: u64 = 8 << 20;

struct Open {
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
    /// The ring position after its last record.
    end: u64,
}

pub struct Journal {
    dir: PathBuf,
    every: Duration,
    synced_at: Instant,
    current: Option<Open>,
    /// Closed segments and the ring position after their last record.
    closed: VecDeque<(PathBuf, u64)>,
    /// Set by a failed write, cleared by the next sync that succeeds.
    failing: bool,
    pub errors: u64,
    logger: Option<plugin_api::HostLogger>,
}

/// What [`Journal::recover`] read.
#[derive(Debug, Default)]
pub struct Recovered {
    /// (ring position, record), in write order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Frames skipped: torn or failing their checksum.
    pub skipped: u64,
}

fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .collect();
    // Zero-padded positions: name order is write order.
    found.sort();
    Ok(found)
}

impl Journal {
    pub fn open(dir: &Path, every: Duration, logger: Option<plugin_api::HostLogger>) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Journal {
            dir: dir.to_owned(),
            every,
            synced_at: Instant::now(),
            current: None,
            closed: VecDeque::new(),
            failing: false,
            errors: 0,
            logger,
        })
    }

    /// Every record of every segment, in order.
    pub fn recover(&self) -> io::Result<Recovered> {
        let mut recovered = Recovered::default();
        for path in segments(&self.dir)? {
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut at = 0;
            while bytes.len() - at >= 12 {
                let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
                let pos = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().expect("8 bytes"));
                if bytes.len() - at - 12 < len {
                    recovered.skipped += 1; // torn: the last frame
                    break;
                }
                let record = &bytes[at + 12..at + 12 + len];
                if record_ok(pos, record) {
                    recovered.records.push((pos, record.to_vec()));
                } else {
                    recovered.skipped += 1;
                }
                at += 12 + len;
            }
        }
        Ok(recovered)
    }

    /// Deletes every segment (their records are in the ring, or spooled).
    pub fn clear(&mut self) -> io::Result<()> {
        self.current = None;
        self.closed.clear();
        for path in segments(&self.dir)? {
            fs::remove_file(path)?;
        }
        Ok(())
    }

    /// Appends one record read from the ring at `pos`.
    pub fn append(&mut self, pos: u64, record: &[u8]) {
        if let Err(error) = self.try_append(pos, record) {
            self.fail(&error);
        }
    }

    fn try_append(&mut self, pos: u64, record: &[u8]) -> io::Result<()> {
        if self.current.as_ref().is_some_and(|c| c.bytes >= SEGMENT_BYTES) {
            self.rotate()?;
        }
        if self.current.is_none() {
            let path = self.dir.join(format!("{pos:020}.jnl"));
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.current =
                Some(Open { path, out: BufWriter::with_capacity(256 << 10, file), bytes: 0, end: pos });
        }
        let current = self.current.as_mut().expect("opened above");
        current.out.write_all(&(record.len() as u32).to_le_bytes())?;
        current.out.write_all(&pos.to_le_bytes())?;
        current.out.write_all(record)?;
        current.bytes += 12 + record.len() as u64;
        current.end = pos + ((record.len() as u64 + 7) & !7);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut current) = self.current.take() {
            current.out.flush()?;
            current.out.get_ref().sync_data()?;
            self.closed.push_back((current.path, current.end));
        }
        Ok(())
    }

    /// When due: syncs the open segment and deletes closed ones wholly
    /// released (up to `released`).
    pub fn tick(&mut self, released: u64) {
        if self.synced_at.elapsed() < self.every {
            return;
        }
        self.sync_now();
        while let Some((path, end)) = self.closed.front() {
            if *end > released {
                break;
            }
            let _ = fs::remove_file(path);
            self.closed.pop_front();
        }
        // An open segment wholly released is closed, so it can go next time.
        if self.current.as_ref().is_some_and(|c| c.end <= released && c.bytes > 0) {
            if let Err(error) = self.rotate() {
                self.fail(&error);
            }
        }
    }

    pub fn sync_now(&mut self) {
        self.synced_at = Instant::now();
        if let Some(current) = &mut self.current {
            match current.out.flush().and_then(|_| current.out.get_ref().sync_data()) {
                Ok(()) => self.failing = false,
                Err(error) => self.fail(&error),
            }
        }
    }

    fn fail(&mut self, error: &io::Error) {
        self.errors += 1;
        if !self.failing {
            self.failing = true;
            if let Some(logger) = &self.logger {
                logger.error(&format!(
                    "cannot write the event journal in '{}': {error}; a crash of the process still loses \
                     nothing, a power loss may lose more than pipeline.fsync_interval_ms",
                    self.dir.display()
                ));
            }
        }
        // Start a new segment next time: this one may end mid-frame (its
        // whole frames are still read at a start; it goes once released).
        if let Some(current) = self.current.take() {
            self.closed.push_back((current.path, current.end));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use abi_stable::std_types::{RSlice, RStr};
    use plugin_api::{CacheOutcome, QueryKind, SearchExecuted, SearchStatus};

    use super::*;
    use crate::pipeline::{
        events::{Event, Spare},
        queue::{EventQueue, decode},
    };

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("journal-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn push(q: &EventQueue, query: &str) {
        assert!(q.push_search(&SearchExecuted {
            search_id: RStr::from("s"),
            project: RStr::from("demo"),
            user: RStr::from("alice"),
            query: RStr::from(query),
            kind: QueryKind::Literal,
            cache: CacheOutcome::Miss,
            status: SearchStatus::Ok,
            error_code: RStr::from(""),
            latency_ns: 1,
            result_count: 0,
            top_results: RSlice::from_slice(&[]),
            timestamp_us: 1,
        }));
    }

    fn queries(recovered: &Recovered) -> Vec<String> {
        let spare = Spare::default();
        recovered
            .records
            .iter()
            .map(|(_, r)| match decode(r, &spare) {
                Some((_, Event::Search(s))) => s.query().to_owned(),
                _ => panic!("a search"),
            })
            .collect()
    }

    #[test]
    fn what_the_reader_read_is_recovered_torn_and_corrupt_frames_skipped_released_segments_dropped() {
        let dir = dir("recover");
        let q = Arc::new(EventQueue::open(&dir.join("ring"), 1 << 16, "inst", 1).unwrap());
        let journal = Journal::open(&dir.join("journal"), Duration::ZERO, None).unwrap();
        let mut reader = q.reader(Some(journal));
        let spare = Spare::default();
        for n in 0..5 {
            push(&q, &format!("q{n}"));
        }
        let read: Vec<_> = std::iter::from_fn(|| reader.pop(&spare)).collect();
        assert_eq!(read.len(), 5);
        reader.tick();
        let journal = Journal::open(&dir.join("journal"), Duration::ZERO, None).unwrap();
        let recovered = journal.recover().unwrap();
        assert_eq!(queries(&recovered), ["q0", "q1", "q2", "q3", "q4"]);
        assert_eq!(recovered.records[2].0 / 8 + 1, read[2].id.seq as u64, "positions give the same ids");

        // A power loss mid-write: a torn last frame, and a frame whose
        // record changed.
        let segment = segments(&dir.join("journal")).unwrap().remove(0);
        let mut bytes = fs::read(&segment).unwrap();
        let second = 12 + recovered.records[0].1.len();
        bytes[second + 12 + 30] ^= 0xff;
        bytes.truncate(bytes.len() - 3);
        fs::write(&segment, &bytes).unwrap();
        let recovered = journal.recover().unwrap();
        assert_eq!(queries(&recovered), ["q0", "q2", "q3"]);
        assert_eq!(recovered.skipped, 2);

        // Released: the next tick drops the segment.
        q.release(read[4].end);
        reader.tick();
        reader.tick();
        assert!(segments(&dir.join("journal")).unwrap().is_empty(), "a released segment is deleted");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn clear_empties_it() {
        let dir = dir("clear");
        let mut journal = Journal::open(&dir, Duration::from_secs(60), None).unwrap();
        journal.append(8, &[0u8; 40]);
        journal.sync_now();
        assert_eq!(segments(&dir).unwrap().len(), 1);
        journal.clear().unwrap();
        assert!(segments(&dir).unwrap().is_empty());
        assert!(journal.recover().unwrap().records.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
