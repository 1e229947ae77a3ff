//! The crash-safe event queue between the hooks and the worker: a ring of
//! records in a file mapped `MAP_SHARED` (on tmpfs, `/dev/shm`, where it
//! can be), so an event is in the kernel's page cache, which outlives the
//! process, the moment its hook returns.
//!
//! A hook reserves room with one compare-and-swap on the write position,
//! copies the event into the mapping and publishes it by storing the
//! record's stamp last (release): no lock, no system call, no allocation,
//! and on tmpfs no page fault once a page has been touched (a file on disk
//! would be written back, and every page written after its write-back
//! takes a fault: about 140 ns per event, measured).
//! The worker reads records in position order; the writer *releases* them
//! (moves the read position on) only once their rows are committed to the
//! database or appended to the spool, so a `kill -9` at any moment leaves
//! every unreleased event in the file, and the next start replays them.
//! A record's sequence number is derived from its position, so a replayed
//! event gets the id it had before the crash and the (instance, boot)
//! high-water mark skips what was already committed.
//!
//! Power loss (or a reboot) takes the ring with it: the worker copies every
//! record it reads into the [`super::journal`] on disk, synced every
//! `pipeline.fsync_interval_ms`. The header holds the kernel's boot id: a
//! ring from another boot of the machine is not trusted, and the next start
//! recovers from the journal instead.
//!
//! Layout: a 4 KiB header (magic, version, capacity, write and read
//! positions, instance id, kernel boot id), then the ring (a power of two
//! bytes). A record starts 8-byte aligned: `stamp u64` (position tag << 32
//! | length), `crc32 u32` (of the record after it, and the position),
//! `kind u8`, `fields u8`, `u16` 0, `boot_id i64`, the kind's fixed fields,
//! the ends of its text fields (`u32` each), then the text. Positions grow
//! for the life of the file (they are never reset), so a stale record from
//! an earlier lap has another tag and fails its checksum. A record whose
//! stamp never came (the process died mid-copy) is *torn*; one whose
//! checksum is wrong is *corrupt*: both are skipped, counted and reported
//! in health, and never stop the host.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use plugin_api::{
    CacheOutcome, FileIndexed, FileOpened, IndexOutcome, ProjectSnapshot, QueryKind, SearchExecuted,
    SearchStatus,
};

use super::events::{
    Event, IndexRecord, MAX_TOP_RESULTS, OpenRecord, Packed, SearchRecord, SnapshotRecord, Spare,
};
use super::journal::Journal;
use crate::storage::rows::EventId;

const MAGIC: &[u8; 8] = b"CAQUEUE1";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 4096;
const OFF_CAPACITY: usize = 16;
const OFF_WRITE: usize = 24;
const OFF_READ: usize = 32;
const OFF_INSTANCE: usize = 40;
const MAX_INSTANCE: usize = 256;
const OFF_KERNEL_BOOT: usize = 320;
const KERNEL_BOOT_LEN: usize = 36;
/// stamp, crc, kind, fields, reserved, boot id.
const RECORD_HEAD: usize = 24;
/// Records up to this size are laid out on the stack before the copy.
const ASSEMBLED: usize = 2048;
/// How long the worker waits for a reserved record's stamp before it
/// takes the record as torn (a hook cannot stop half-way unless the
/// process dies; this only guards against a bug leaving a hole for ever).
const TORN_AFTER: Duration = Duration::from_secs(1);

const KIND_SEARCH: u8 = 1;
const KIND_INDEX: u8 = 2;
const KIND_OPEN: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("event queue file '{path}': {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "event queue file '{path}' is in use by another process (each server needs a data dir of its own)"
    )]
    InUse { path: PathBuf },
}

/// What the queue found and skipped, for health.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct QueueStats {
    /// Events left by an earlier run (crash) found in the file at start.
    pub recovered_events: u64,
    /// Records whose hook never finished (the process died mid-copy).
    pub torn_records: u64,
    /// Records whose checksum or encoding was wrong.
    pub corrupt_records: u64,
    /// Whether the file's header was unreadable at start (the file was
    /// set aside as `*.corrupt` and a new one started).
    pub header_reset: bool,
    /// Whether the ring found at start was kept (same machine boot): it
    /// holds every unreleased event. Otherwise the journal is replayed.
    pub survived: bool,
    /// Events recovered from the journal at start (a ring lost with a
    /// power loss or reboot), spooled for the writer.
    pub journal_events: u64,
    /// Torn or corrupt journal records skipped at start.
    pub journal_skipped: u64,
}

/// The mapping and its positions. Shared by the hooks (push), the worker
/// (read) and the writer (release).
pub struct EventQueue {
    base: *mut u8,
    map_len: usize,
    mask: u64,
    capacity: u64,
    path: PathBuf,
    /// Held for the flock, and for msync's sake.
    _file: File,
    boot_id: i64,
    max_record: usize,
    /// Write position when the file was opened: records before it are
    /// left from an earlier run, so one without a stamp is torn at once.
    recovered_to: u64,
    start_read: u64,
    stats: parking_lot::Mutex<QueueStats>,
    /// Records the worker has read (for the depth in events).
    drained: AtomicU64,
}

// SAFETY: the mapping is shared memory accessed through atomics (stamps,
// positions) and through byte copies ordered by them: a region is written
// only by the hook that reserved it, and read only after its stamp is
// published with release ordering.
unsafe impl Send for EventQueue {}
unsafe impl Sync for EventQueue {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.to_owned(), source }
}

const fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

fn tag(pos: u64) -> u32 {
    (pos >> 3) as u32
}

impl EventQueue {
    /// Opens (or creates) the queue file: `capacity` bytes of ring, rounded
    /// up to a power of two. A file left by an earlier run keeps its
    /// records (and its size, while it holds any) for the worker to replay.
    pub fn open(path: &Path, capacity: u64, instance_id: &str, boot_id: i64) -> Result<Self, QueueError> {
        let capacity = capacity.max(1 << 16).next_power_of_two();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(QueueError::InUse { path: path.to_owned() });
        }
        let mut stats = QueueStats::default();
        let existing = read_header(&file).map_err(io_err(path))?;
        let kernel = kernel_boot_id();
        let (file, capacity, fresh) = match existing {
            // A ring from another boot of the machine (a file on disk after
            // a power loss) may miss what the page cache held: the journal
            // is the truth then.
            Header::Valid { kernel_boot, .. } if kernel_boot != kernel => (file, capacity, true),
            Header::Valid { capacity: old, write, read, .. } if write > read || old == capacity => {
                (file, old, false)
            }
            Header::Valid { .. } | Header::Empty => (file, capacity, true),
            Header::Bad => {
                // Keep it for a post-mortem; nothing in it can be trusted.
                let aside = path.with_extension(format!("corrupt.{boot_id}"));
                std::fs::rename(path, &aside).map_err(io_err(path))?;
                stats.header_reset = true;
                drop(file);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io_err(path))?;
                // SAFETY: as above.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                    return Err(QueueError::InUse { path: path.to_owned() });
                }
                (file, capacity, true)
            }
        };
        let map_len = HEADER_BYTES + capacity as usize;
        if fresh {
            file.set_len(0).map_err(io_err(path))?;
            file.set_len(map_len as u64).map_err(io_err(path))?;
            // Pages (tmpfs) or blocks (disk) allocated now rather than in a
            // hook's page fault.
            // SAFETY: fd we own; the range is the file's length.
            unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, map_len as libc::off_t) };
        }
        // SAFETY: a shared read-write mapping of the whole file, which we
        // keep open (and locked) for the mapping's life.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(QueueError::Io { path: path.to_owned(), source: io::Error::last_os_error() });
        }
        let base = base as *mut u8;
        let queue = EventQueue {
            base,
            map_len,
            mask: capacity - 1,
            capacity,
            path: path.to_owned(),
            _file: file,
            boot_id,
            max_record: (capacity / 16) as usize,
            recovered_to: 0,
            start_read: 0,
            stats: parking_lot::Mutex::new(stats),
            drained: AtomicU64::new(0),
        };
        if fresh {
            // SAFETY: within the header page of our mapping.
            unsafe {
                std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), base, 8);
                std::ptr::copy_nonoverlapping(VERSION.to_le_bytes().as_ptr(), base.add(8), 4);
                std::ptr::copy_nonoverlapping(capacity.to_le_bytes().as_ptr(), base.add(OFF_CAPACITY), 8);
            }
            queue.word(OFF_WRITE).store(0, Ordering::Release);
            queue.word(OFF_READ).store(0, Ordering::Release);
        }
        let id = instance_id.as_bytes();
        let id = &id[..id.len().min(MAX_INSTANCE)];
        // SAFETY: within the header page.
        unsafe {
            std::ptr::copy_nonoverlapping(kernel.as_ptr(), base.add(OFF_KERNEL_BOOT), KERNEL_BOOT_LEN);
            std::ptr::copy_nonoverlapping(
                (id.len() as u32).to_le_bytes().as_ptr(),
                base.add(OFF_INSTANCE),
                4,
            );
            std::ptr::copy_nonoverlapping(id.as_ptr(), base.add(OFF_INSTANCE + 4), id.len());
        }
        let read = queue.word(OFF_READ).load(Ordering::Acquire);
        let write = queue.word(OFF_WRITE).load(Ordering::Acquire);
        let (read, write) = if write < read || write - read > capacity || read % 8 != 0 || write % 8 != 0 {
            // Positions that cannot be: start over past them.
            queue.stats.lock().header_reset = true;
            let past = align8(read.max(write)) + capacity;
            queue.word(OFF_READ).store(past, Ordering::Release);
            queue.word(OFF_WRITE).store(past, Ordering::Release);
            (past, past)
        } else {
            (read, write)
        };
        let mut queue = queue;
        queue.stats.get_mut().survived = !fresh;
        queue.recovered_to = write;
        queue.start_read = read;
        Ok(queue)
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: header offsets are 8-aligned within the page-aligned map.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    fn stamp_at(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: pos is 8-aligned, and masked into the ring.
        unsafe { &*(self.base.add(HEADER_BYTES + (pos & self.mask) as usize) as *const AtomicU64) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    /// Bytes held: pushed and not yet released.
    pub fn used_bytes(&self) -> u64 {
        let write = self.word(OFF_WRITE).load(Ordering::Acquire);
        write.saturating_sub(self.word(OFF_READ).load(Ordering::Acquire))
    }

    pub fn drained(&self) -> u64 {
        self.drained.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> QueueStats {
        *self.stats.lock()
    }

    /// Copies `bytes` into the ring at `pos`, across its end if need be.
    fn put(&self, pos: u64, bytes: &[u8]) {
        let at = (pos & self.mask) as usize;
        let first = bytes.len().min(self.capacity as usize - at);
        // SAFETY: both parts lie within the ring; the region is reserved
        // by the caller, so nobody else writes or reads it meanwhile.
        unsafe {
            let ring = self.base.add(HEADER_BYTES);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ring.add(at), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), ring, bytes.len() - first);
        }
    }

    fn get(&self, pos: u64, out: &mut Vec<u8>, len: usize) {
        out.clear();
        out.reserve(len);
        let at = (pos & self.mask) as usize;
        let first = len.min(self.capacity as usize - at);
        // SAFETY: as in `put`; the record's stamp was read with acquire.
        unsafe {
            let ring = self.base.add(HEADER_BYTES);
            std::ptr::copy_nonoverlapping(ring.add(at), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(ring, out.as_mut_ptr().add(first), len - first);
            out.set_len(len);
        }
    }

    /// Reserves `len` bytes (8-aligned) or says there is no room.
    #[inline]
    fn reserve(&self, len: u64) -> Option<u64> {
        let need = align8(len);
        let write = self.word(OFF_WRITE);
        let mut pos = write.load(Ordering::Relaxed);
        loop {
            let read = self.word(OFF_READ).load(Ordering::Acquire);
            if pos + need - read > self.capacity {
                return None;
            }
            match write.compare_exchange_weak(pos, pos + need, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(pos),
                Err(now) => pos = now,
            }
        }
    }

    /// Writes one record: its fixed part (after the record head) and text
    /// fields. False when there is no room (the caller counts a drop).
    #[inline]
    fn push(&self, kind: u8, fixed: &[u8], fields: &[&str]) -> bool {
        let mut head = [0u8; RECORD_HEAD + 48 + 4 * (5 + MAX_TOP_RESULTS)];
        let ends_at = RECORD_HEAD + fixed.len();
        let text_at = ends_at + 4 * fields.len();
        let mut end = 0u32;
        for (i, field) in fields.iter().enumerate() {
            end += field.len() as u32;
            head[ends_at + 4 * i..ends_at + 4 * i + 4].copy_from_slice(&end.to_le_bytes());
        }
        let len = text_at + end as usize;
        if len > self.max_record {
            return false;
        }
        head[12] = kind;
        head[13] = fields.len() as u8;
        head[16..24].copy_from_slice(&self.boot_id.to_le_bytes());
        head[RECORD_HEAD..ends_at].copy_from_slice(fixed);
        if len <= ASSEMBLED {
            // The usual case: the record laid out on the stack, so the
            // checksum is two calls and the copy into the ring one or two
            // (many small pieces cost more than the bytes: measured).
            let mut buf = std::mem::MaybeUninit::<[u8; ASSEMBLED]>::uninit();
            let out = buf.as_mut_ptr() as *mut u8;
            // SAFETY: every write is within `len <= ASSEMBLED` bytes, and
            // only the `len` bytes written are read back.
            let record = unsafe {
                std::ptr::copy_nonoverlapping(head.as_ptr(), out, text_at);
                let mut at = text_at;
                for field in fields {
                    std::ptr::copy_nonoverlapping(field.as_ptr(), out.add(at), field.len());
                    at += field.len();
                }
                std::slice::from_raw_parts_mut(out, len)
            };
            let Some(pos) = self.reserve(len as u64) else { return false };
            let mut crc = crc32fast::Hasher::new();
            crc.update(&record[12..]);
            crc.update(&pos.to_le_bytes());
            record[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
            self.put(pos + 8, &record[8..]);
            self.stamp_at(pos).store(u64::from(tag(pos)) << 32 | len as u64, Ordering::Release);
            return true;
        }
        let Some(pos) = self.reserve(len as u64) else { return false };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head[12..text_at]);
        self.put(pos + 12, &head[12..text_at]);
        let mut at = pos + text_at as u64;
        for field in fields {
            crc.update(field.as_bytes());
            self.put(at, field.as_bytes());
            at += field.len() as u64;
        }
        crc.update(&pos.to_le_bytes());
        self.put(pos + 8, &crc.finalize().to_le_bytes());
        self.stamp_at(pos).store(u64::from(tag(pos)) << 32 | len as u64, Ordering::Release);
        true
    }

    pub fn push_search(&self, e: &SearchExecuted<'_>) -> bool {
        let mut fixed = [0u8; 32];
        fixed[0..8].copy_from_slice(&e.timestamp_us.to_le_bytes());
        fixed[8..16].copy_from_slice(&e.latency_ns.to_le_bytes());
        fixed[16..24].copy_from_slice(&e.result_count.to_le_bytes());
        fixed[24] = e.kind as u8;
        fixed[25] = e.cache as u8;
        fixed[26] = e.status as u8;
        let mut fields = [""; 5 + MAX_TOP_RESULTS];
        fields[..5].copy_from_slice(&[
            e.search_id.as_str(),
            e.project.as_str(),
            e.user.as_str(),
            e.query.as_str(),
            e.error_code.as_str(),
        ]);
        let mut n = 5;
        for path in e.top_results.as_slice().iter().take(MAX_TOP_RESULTS) {
            fields[n] = path.as_str();
            n += 1;
        }
        self.push(KIND_SEARCH, &fixed, &fields[..n])
    }

    pub fn push_index(&self, e: &FileIndexed<'_>) -> bool {
        let mut fixed = [0u8; 40];
        fixed[0..8].copy_from_slice(&e.timestamp_us.to_le_bytes());
        fixed[8..16].copy_from_slice(&e.bytes.to_le_bytes());
        fixed[16..24].copy_from_slice(&e.duration_ns.to_le_bytes());
        fixed[24..32].copy_from_slice(&e.queue_depth.to_le_bytes());
        fixed[32] = e.outcome as u8;
        let fields = [e.project.as_str(), e.path.as_str(), e.file_type.as_str(), e.error_code.as_str()];
        self.push(KIND_INDEX, &fixed, &fields)
    }

    pub fn push_open(&self, e: &FileOpened<'_>) -> bool {
        let mut fixed = [0u8; 16];
        fixed[0..8].copy_from_slice(&e.timestamp_us.to_le_bytes());
        fixed[8..12].copy_from_slice(&e.rank.to_le_bytes());
        let fields = [e.project.as_str(), e.user.as_str(), e.path.as_str(), e.search_id.as_str()];
        self.push(KIND_OPEN, &fixed, &fields)
    }

    pub fn push_snapshot(&self, e: &ProjectSnapshot<'_>) -> bool {
        let mut fixed = [0u8; 48];
        fixed[0..8].copy_from_slice(&e.timestamp_us.to_le_bytes());
        fixed[8..16].copy_from_slice(&e.total_files.to_le_bytes());
        fixed[16..24].copy_from_slice(&e.indexed_files.to_le_bytes());
        fixed[24..32].copy_from_slice(&e.vector_store_bytes.to_le_bytes());
        fixed[32..40].copy_from_slice(&e.embedding_cache_bytes.to_le_bytes());
        if let Some(ratio) = e.duplication_ratio.into_option() {
            fixed[40..48].copy_from_slice(&ratio.to_bits().to_le_bytes());
        } else {
            // A NaN with this payload means "none": no ratio is ever NaN.
            fixed[40..48].copy_from_slice(&NO_RATIO.to_le_bytes());
        }
        self.push(KIND_SNAPSHOT, &fixed, &[e.project.as_str()])
    }

    /// Everything up to `pos` is committed or spooled: its room can be
    /// reused, and a restart will not replay it. (Its pages stay mapped:
    /// unmapping them would cost the hooks a page fault per page a lap.)
    pub fn release(&self, pos: u64) {
        self.word(OFF_READ).fetch_max(pos, Ordering::AcqRel);
    }

    pub fn released(&self) -> u64 {
        self.word(OFF_READ).load(Ordering::Acquire)
    }

    /// The worker's reading end. One reader only.
    /// Copies every record read into `journal` (durability across power
    /// loss), if given.
    pub fn reader(self: &Arc<Self>, journal: Option<Journal>) -> Reader {
        Reader {
            queue: self.clone(),
            at: self.start_read,
            scratch: Vec::with_capacity(1024),
            stuck_since: None,
            journal,
        }
    }

    pub fn note_journal(&self, events: u64, skipped: u64) {
        let mut stats = self.stats.lock();
        stats.journal_events += events;
        stats.journal_skipped += skipped;
    }
}

const NO_RATIO: u64 = 0x7ff8_dead_beef_0001;

impl Drop for EventQueue {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing refers to it any more.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.map_len) };
    }
}

enum Header {
    Empty,
    Bad,
    Valid { capacity: u64, write: u64, read: u64, kernel_boot: [u8; KERNEL_BOOT_LEN] },
}

/// This boot of the machine (a ring file on disk outlives it).
fn kernel_boot_id() -> [u8; KERNEL_BOOT_LEN] {
    let mut id = [0u8; KERNEL_BOOT_LEN];
    if let Ok(text) = std::fs::read("/proc/sys/kernel/random/boot_id") {
        let n = text.len().min(KERNEL_BOOT_LEN);
        id[..n].copy_from_slice(&text[..n]);
    }
    id
}

fn read_header(file: &File) -> io::Result<Header> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Header::Empty);
    }
    let mut head = [0u8; OFF_KERNEL_BOOT + KERNEL_BOOT_LEN];
    if len < HEADER_BYTES as u64 || file.read_exact_at(&mut head, 0).is_err() {
        return Ok(Header::Bad);
    }
    let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().expect("8 bytes"));
    let capacity = u64_at(OFF_CAPACITY);
    if &head[..8] != MAGIC
        || u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) != VERSION
        || !capacity.is_power_of_two()
        || len != HEADER_BYTES as u64 + capacity
    {
        return Ok(Header::Bad);
    }
    let mut kernel_boot = [0u8; KERNEL_BOOT_LEN];
    kernel_boot.copy_from_slice(&head[OFF_KERNEL_BOOT..]);
    Ok(Header::Valid { capacity, write: u64_at(OFF_WRITE), read: u64_at(OFF_READ), kernel_boot })
}

/// One event read from the queue.
pub struct Queued {
    pub id: EventId,
    pub event: Event,
    /// The position just after the record: release up to it once stored.
    pub end: u64,
}

/// The worker's side: reads records in order, skipping torn and corrupt
/// ones.
pub struct Reader {
    queue: Arc<EventQueue>,
    at: u64,
    scratch: Vec<u8>,
    stuck_since: Option<(u64, Instant)>,
    journal: Option<Journal>,
}

impl Reader {
    /// The next event, if one is published.
    pub fn pop(&mut self, spare: &Spare) -> Option<Queued> {
        let queue = self.queue.clone();
        let q = &*queue;
        loop {
            let write = q.word(OFF_WRITE).load(Ordering::Acquire);
            if self.at >= write {
                return None;
            }
            match self.record_at(self.at, write) {
                Some(len) => {
                    let pos = self.at;
                    self.at += align8(len as u64);
                    self.stuck_since = None;
                    if let Some(journal) = &mut self.journal {
                        journal.append(pos, &self.scratch);
                    }
                    match decode(&self.scratch, spare) {
                        Some((boot_id, event)) => {
                            q.drained.fetch_add(1, Ordering::Relaxed);
                            if pos < q.recovered_to {
                                q.stats.lock().recovered_events += 1;
                            }
                            let id = event_id(boot_id, pos);
                            return Some(Queued { id, event, end: self.at });
                        }
                        None => q.stats.lock().corrupt_records += 1,
                    }
                }
                None => {
                    // Before the start's write position nobody is writing:
                    // no stamp means torn. After it, a hook may be copying
                    // still: wait, within reason.
                    if self.at >= q.recovered_to {
                        match self.stuck_since {
                            Some((at, since)) if at == self.at && since.elapsed() >= TORN_AFTER => {}
                            Some((at, _)) if at == self.at => return None,
                            _ => {
                                self.stuck_since = Some((self.at, Instant::now()));
                                return None;
                            }
                        }
                    }
                    self.skip_torn(write);
                }
            }
        }
    }

    /// Syncs the journal when due and drops its segments the writer has
    /// released; the worker calls it on every round.
    pub fn tick(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.tick(self.queue.released());
        }
    }

    /// Syncs the journal now (shutdown).
    pub fn finish(&mut self) {
        if let Some(journal) = &mut self.journal {
            journal.sync_now();
        }
    }

    /// The length of a valid record at `pos` (its bytes in `scratch`), or
    /// None if there is none: no stamp, or a checksum that fails (counted).
    fn record_at(&mut self, pos: u64, write: u64) -> Option<usize> {
        let q = &*self.queue;
        let stamp = q.stamp_at(pos).load(Ordering::Acquire);
        let len = (stamp & 0xffff_ffff) as usize;
        if (stamp >> 32) as u32 != tag(pos)
            || len < RECORD_HEAD
            || pos + len as u64 > write
            || len > q.max_record
        {
            return None;
        }
        q.get(pos, &mut self.scratch, len);
        checksum_ok(pos, &self.scratch).then_some(len)
    }

    /// Moves past a record that has no valid stamp: to the next position
    /// where a valid record starts, or to the write position.
    fn skip_torn(&mut self, write: u64) {
        let from = self.at;
        let mut pos = from + 8;
        while pos < write && self.record_at(pos, write).is_none() {
            pos += 8;
        }
        self.at = pos;
        self.stuck_since = None;
        let mut stats = self.queue.stats.lock();
        // A record with a stamp but a bad checksum is corrupt; without
        // one, torn.
        let stamp = self.queue.stamp_at(from).load(Ordering::Acquire);
        if (stamp >> 32) as u32 == tag(from) {
            stats.corrupt_records += 1;
        } else {
            stats.torn_records += 1;
        }
    }
}

/// Whether `record` (its stamp first) is whole and was written at `pos`.
pub(super) fn record_ok(pos: u64, record: &[u8]) -> bool {
    if record.len() < RECORD_HEAD {
        return false;
    }
    let stamp = u64_at(record, 0);
    (stamp >> 32) as u32 == tag(pos)
        && (stamp & 0xffff_ffff) as usize == record.len()
        && checksum_ok(pos, record)
}

fn checksum_ok(pos: u64, record: &[u8]) -> bool {
    let stored = u32::from_le_bytes(record[8..12].try_into().expect("4 bytes"));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&record[12..]);
    crc.update(&pos.to_le_bytes());
    crc.finalize() == stored
}

/// The id a record at `pos` has.
pub fn event_id(boot_id: i64, pos: u64) -> EventId {
    EventId { boot_id, seq: (pos >> 3) as i64 + 1 }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// A record's bytes back into an event (and the boot it was pushed in).
pub fn decode(record: &[u8], spare: &Spare) -> Option<(i64, Event)> {
    let kind = record[12];
    let fields = record[13] as usize;
    let boot_id = u64_at(record, 16) as i64;
    let fixed_len = match kind {
        KIND_SEARCH => 32,
        KIND_INDEX => 40,
        KIND_OPEN => 16,
        KIND_SNAPSHOT => 48,
        _ => return None,
    };
    let expected = match kind {
        KIND_SEARCH => (5..=5 + MAX_TOP_RESULTS).contains(&fields),
        KIND_SNAPSHOT => fields == 1,
        _ => fields == 4,
    };
    let ends_at = RECORD_HEAD + fixed_len;
    let text_at = ends_at + 4 * fields;
    if !expected || record.len() < text_at {
        return None;
    }
    let fixed = &record[RECORD_HEAD..ends_at];
    let mut ends = [0u32; 5 + MAX_TOP_RESULTS];
    for (i, end) in ends.iter_mut().take(fields).enumerate() {
        *end = u32::from_le_bytes(record[ends_at + 4 * i..ends_at + 4 * i + 4].try_into().expect("4 bytes"));
    }
    let text = std::str::from_utf8(&record[text_at..]).ok()?;
    let mut buffer = spare.take();
    buffer.push_str(text);
    let packed = Packed::laid_out(buffer, &ends[..fields])?;
    let time = u64_at(fixed, 0) as i64;
    let event = match kind {
        KIND_SEARCH => Event::Search(SearchRecord {
            timestamp_us: time,
            latency_ns: u64_at(fixed, 8),
            result_count: u64_at(fixed, 16),
            kind: *QueryKind::ALL.get(fixed[24] as usize)?,
            cache: *CacheOutcome::ALL.get(fixed[25] as usize)?,
            status: *SearchStatus::ALL.get(fixed[26] as usize)?,
            text: packed,
        }),
        KIND_INDEX => Event::Index(IndexRecord {
            timestamp_us: time,
            bytes: u64_at(fixed, 8),
            duration_ns: u64_at(fixed, 16),
            queue_depth: u64_at(fixed, 24),
            outcome: *IndexOutcome::ALL.get(fixed[32] as usize)?,
            text: packed,
        }),
        KIND_OPEN => Event::Open(OpenRecord {
            timestamp_us: time,
            rank: u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes")),
            text: packed,
        }),
        _ => {
            let ratio = u64_at(fixed, 40);
            let project = packed.get(0).to_owned();
            spare.give(packed.into_buffer());
            Event::Snapshot(SnapshotRecord {
                timestamp_us: time,
                project,
                total_files: u64_at(fixed, 8),
                indexed_files: u64_at(fixed, 16),
                vector_store_bytes: u64_at(fixed, 24),
                embedding_cache_bytes: u64_at(fixed, 32),
                duplication_ratio: (ratio != NO_RATIO).then(|| f64::from_bits(ratio)),
            })
        }
    };
    Some((boot_id, event))
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{ROption, RSlice, RStr};

    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("queue-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn search(query: &str, paths: &[RStr<'static>]) -> SearchExecuted<'static> {
        let query: &'static str = Box::leak(query.to_owned().into_boxed_str());
        let paths: &'static [RStr<'static>] = Box::leak(paths.to_vec().into_boxed_slice());
        SearchExecuted {
            search_id: RStr::from("s-1"),
            project: RStr::from("demo"),
            user: RStr::from("alice"),
            query: RStr::from(query),
            kind: QueryKind::Regex,
            cache: CacheOutcome::L3,
            status: SearchStatus::Timeout,
            error_code: RStr::from("deadline"),
            latency_ns: 1_234_567,
            result_count: 42,
            top_results: RSlice::from_slice(paths),
            timestamp_us: 1_700_000_000_000_000,
        }
    }

    fn queries(reader: &mut Reader, spare: &Spare) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        while let Some(q) = reader.pop(spare) {
            if let Event::Search(s) = &q.event {
                out.push((q.id.seq, s.query().to_owned()));
            }
        }
        out
    }

    #[test]
    fn every_kind_comes_back_as_pushed() {
        let dir = dir("kinds");
        let q = Arc::new(EventQueue::open(&dir.join("q"), 1 << 20, "inst", 9).unwrap());
        let paths = [RStr::from("src/a.rs"), RStr::from(""), RStr::from("src/é.rs")];
        assert!(q.push_search(&search("fn main", &paths)));
        assert!(q.push_index(&FileIndexed {
            project: RStr::from("demo"),
            path: RStr::from("src/b.rs"),
            file_type: RStr::from("rust"),
            bytes: 10,
            duration_ns: 20,
            outcome: IndexOutcome::Failed,
            error_code: RStr::from("too_large"),
            queue_depth: 30,
            timestamp_us: 5,
        }));
        assert!(q.push_open(&FileOpened {
            project: RStr::from("demo"),
            user: RStr::from("bob"),
            path: RStr::from("src/a.rs"),
            rank: 3,
            search_id: RStr::from("s-1"),
            timestamp_us: 6,
        }));
        for ratio in [ROption::RSome(0.25), ROption::RNone] {
            assert!(q.push_snapshot(&ProjectSnapshot {
                project: RStr::from("demo"),
                total_files: 1,
                indexed_files: 2,
                vector_store_bytes: 3,
                embedding_cache_bytes: 4,
                duplication_ratio: ratio,
                timestamp_us: 7,
            }));
        }
        // Longer than the records laid out on the stack: copied in pieces.
        let long = "y".repeat(3 * ASSEMBLED);
        assert!(q.push_search(&search(&long, &paths)));
        let spare = Spare::default();
        let mut reader = q.reader(None);
        let mut got: Vec<Queued> = std::iter::from_fn(|| reader.pop(&spare)).collect();
        let Some(Queued { event: Event::Search(last), .. }) = got.pop() else { panic!("the long search") };
        assert_eq!((last.query(), last.top_results().count()), (long.as_str(), 3));
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|g| g.id.boot_id == 9));
        assert!(got.windows(2).all(|w| w[0].id.seq < w[1].id.seq && w[0].end < w[1].end));
        let Event::Search(s) = &got[0].event else { panic!("a search") };
        assert_eq!(
            (s.search_id(), s.project(), s.user(), s.query(), s.error_code()),
            ("s-1", "demo", "alice", "fn main", "deadline")
        );
        assert_eq!(s.top_results().collect::<Vec<_>>(), ["src/a.rs", "", "src/é.rs"]);
        assert_eq!((s.kind, s.cache, s.status), (QueryKind::Regex, CacheOutcome::L3, SearchStatus::Timeout));
        assert_eq!((s.latency_ns, s.result_count, s.timestamp_us), (1_234_567, 42, 1_700_000_000_000_000));
        let Event::Index(i) = &got[1].event else { panic!("an index event") };
        assert_eq!(
            (i.project(), i.path(), i.file_type(), i.error_code()),
            ("demo", "src/b.rs", "rust", "too_large")
        );
        assert_eq!((i.bytes, i.duration_ns, i.queue_depth, i.outcome), (10, 20, 30, IndexOutcome::Failed));
        let Event::Open(o) = &got[2].event else { panic!("an open") };
        assert_eq!(
            (o.project(), o.user(), o.path(), o.search_id(), o.rank),
            ("demo", "bob", "src/a.rs", "s-1", 3)
        );
        let Event::Snapshot(a) = &got[3].event else { panic!("a snapshot") };
        let Event::Snapshot(b) = &got[4].event else { panic!("a snapshot") };
        assert_eq!((a.project.as_str(), a.total_files, a.indexed_files), ("demo", 1, 2));
        assert_eq!((a.duplication_ratio, b.duplication_ratio), (Some(0.25), None));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_queue_refuses_and_released_room_is_reused_across_the_end() {
        let dir = dir("full");
        let q = Arc::new(EventQueue::open(&dir.join("q"), 1 << 16, "inst", 1).unwrap());
        let spare = Spare::default();
        let mut reader = q.reader(None);
        let long = "x".repeat(1000);
        let mut pushed = 0;
        while q.push_search(&search(&format!("{pushed}{long}"), &[])) {
            pushed += 1;
        }
        assert!(pushed > 50 && pushed < 66, "about 64 KiB of ~1 KiB records: {pushed}");
        // Read but not released: still no room.
        let first = queries(&mut reader, &spare);
        assert_eq!(first.len(), pushed);
        assert!(!q.push_search(&search(&long, &[])), "read is not released");
        // Released: room again, records now wrap around the ring's end.
        q.release(q.word(OFF_WRITE).load(Ordering::Acquire));
        for n in 0..pushed {
            assert!(q.push_search(&search(&format!("{n}-again{long}"), &[])));
        }
        let again = queries(&mut reader, &spare);
        assert_eq!(again.len(), pushed);
        assert!(again.iter().enumerate().all(|(n, (_, query))| query.starts_with(&format!("{n}-again"))));
        assert!(again[0].0 > first.last().unwrap().0, "seqs keep rising");
        assert_eq!((q.stats().torn_records, q.stats().corrupt_records), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreleased_events_come_back_after_a_crash_with_their_ids_torn_and_corrupt_ones_skipped() {
        let dir = dir("crash");
        let path = dir.join("q");
        let spare = Spare::default();
        let (committed, ids) = {
            let q = Arc::new(EventQueue::open(&path, 1 << 16, "inst", 1).unwrap());
            for n in 0..10 {
                assert!(q.push_search(&search(&format!("q{n}"), &[])));
            }
            let mut reader = q.reader(None);
            let seen: Vec<Queued> = std::iter::from_fn(|| reader.pop(&spare)).collect();
            // The first four were stored and released; then the crash.
            q.release(seen[3].end);
            // A hook reserved room and died before its stamp...
            q.reserve(64).unwrap();
            assert!(q.push_search(&search("after the torn one", &[])));
            // ...and a power loss left half a record (its text changed).
            assert!(q.push_search(&search("corrupt", &[])));
            let write = q.word(OFF_WRITE).load(Ordering::Acquire);
            let byte = write - 8;
            q.put(byte, b"\xff");
            assert!(q.push_search(&search("last", &[])));
            (seen[3].end, seen.iter().map(|s| s.id.seq).collect::<Vec<_>>())
            // dropped here without releasing the rest: the crash
        };
        let q = Arc::new(EventQueue::open(&path, 1 << 16, "inst", 2).unwrap());
        let mut reader = q.reader(None);
        let got: Vec<Queued> = std::iter::from_fn(|| reader.pop(&spare)).collect();
        let names: Vec<String> = got
            .iter()
            .map(|g| match &g.event {
                Event::Search(s) => s.query().to_owned(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(names, ["q4", "q5", "q6", "q7", "q8", "q9", "after the torn one", "last"]);
        assert_eq!(got.iter().take(6).map(|g| g.id.seq).collect::<Vec<_>>(), ids[4..]);
        assert!(got.iter().all(|g| g.id.boot_id == 1), "replayed under the boot that pushed them");
        assert!(got[0].end > committed);
        let stats = q.stats();
        assert_eq!((stats.recovered_events, stats.torn_records, stats.corrupt_records), (8, 1, 1));
        // The new boot's events follow, under its own id.
        assert!(q.push_search(&search("new boot", &[])));
        let next = reader.pop(&spare).unwrap();
        assert_eq!(next.id.boot_id, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_ring_from_another_boot_of_the_machine_is_not_trusted() {
        let dir = dir("kernel");
        let path = dir.join("q");
        let q = EventQueue::open(&path, 1 << 16, "inst", 1).unwrap();
        assert!(q.push_search(&search("before the reboot", &[])));
        drop(q);
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        use std::io::{Seek, Write};
        file.seek(io::SeekFrom::Start(OFF_KERNEL_BOOT as u64)).unwrap();
        file.write_all(b"00000000-0000-0000-0000-000000000000").unwrap();
        drop(file);
        let q = Arc::new(EventQueue::open(&path, 1 << 16, "inst", 2).unwrap());
        assert!(!q.stats().survived);
        assert!(q.reader(None).pop(&Spare::default()).is_none(), "its records are the journal's to recover");
        drop(q);
        let q = EventQueue::open(&path, 1 << 16, "inst", 3).unwrap();
        assert!(q.stats().survived, "the same boot's ring is kept");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_process_is_refused_and_a_bad_header_is_set_aside() {
        let dir = dir("header");
        let path = dir.join("q");
        let q = EventQueue::open(&path, 1 << 16, "inst", 1).unwrap();
        let error = EventQueue::open(&path, 1 << 16, "inst", 2).err().unwrap();
        assert!(error.to_string().contains("in use by another process"), "{error}");
        drop(q);
        std::fs::write(&path, b"not a queue").unwrap();
        let q = EventQueue::open(&path, 1 << 16, "inst", 3).unwrap();
        assert!(q.stats().header_reset);
        assert!(dir.join("q.corrupt.3").exists());
        assert!(q.push_search(&search("fresh", &[])));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
