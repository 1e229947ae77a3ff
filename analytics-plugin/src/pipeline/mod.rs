//! The event pipeline: hooks copy events into the crash-safe queue
//! ([`queue::EventQueue`], a file mapped shared) and return; one task on the
//! plugin's runtime reads it, feeds the in-memory analyses (active users,
//! code health), turns events into rows and hands them to the
//! [`writer::Writer`] in batches (by size and by time); the writer releases
//! a batch's room in the queue once its rows are committed or spooled.
//!
//! Hooks never block, never wake a thread and never do I/O: a full queue
//! drops the event and counts it (`context_analytics_events_dropped_total`);
//! the writer spills to the spool at three quarters full so that stays rare.

pub mod events;
pub mod journal;
pub mod queue;
pub mod spool;
pub mod writer;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use prometheus::IntCounter;

use crate::{
    collector::{
        Collector,
        active_users::{ActiveCounts, ActiveUsers},
        code_health::{CodeHealth, Tracked},
    },
    config::AnalyticsConfig,
    storage::{
        privacy::Privacy,
        rows::{Row, RowBatch},
    },
};
use events::Event;
use queue::{EventQueue, Queued, Reader};
use writer::{StorageHealth, Writer};

/// How often the worker recomputes the code-health gauges.
const CODE_HEALTH_EVERY: Duration = Duration::from_secs(2);
/// How long the worker sleeps when it has drained the queue: long enough
/// that a quiet plugin wakes rarely (each wake-up costs a thread switch on
/// a host that may be saturated), short enough that the queue never fills
/// (65,536 events by default; 20 ms at 60,000 events/s is 1,200).
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// How long shutdown waits for the final flush.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

pub struct Pipeline {
    pub queue: Arc<EventQueue>,
    dropped_queue_full: IntCounter,
    stop: Arc<AtomicBool>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    pub active_users: Arc<Mutex<ActiveUsers>>,
    pub storage_health: Arc<Mutex<StorageHealth>>,
    received: [IntCounter; 4],
}

/// Who this pipeline writes as.
pub struct Identity {
    pub instance_id: String,
    /// Start time of this plugin instance (Unix µs): the boot part of event ids.
    pub boot_id: i64,
}

impl Pipeline {
    pub fn start(
        config: &AnalyticsConfig,
        collector: Arc<Collector>,
        writer: Writer,
        queue: Arc<EventQueue>,
        journal: Option<journal::Journal>,
        privacy: Privacy,
        identity: Identity,
        alert_feed: Option<Arc<Mutex<crate::alerting::measure::Recent>>>,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let active_users = Arc::new(Mutex::new(ActiveUsers::default()));
        let storage_health = writer.health.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Two batches in flight: the worker prepares the next while the
        // writer waits for the database.
        let (batches_tx, batches_rx) = tokio::sync::mpsc::channel::<(RowBatch, u64)>(2);
        runtime.spawn(write_batches(writer, batches_rx, queue.clone(), done_tx));
        let worker = Worker {
            reader: queue.reader(journal),
            stop: stop.clone(),
            batch_max: config.pipeline.batch_max_events,
            flush_interval: Duration::from_millis(config.pipeline.flush_interval_ms),
            code_health: CodeHealth::new(config.max_tracked_files, config.hot_spot_factor),
            active_users: active_users.clone(),
            dropped_table_full: collector.events_dropped.with_label_values(&["file_table_full"]),
            collector: collector.clone(),
            batches: batches_tx,
            privacy,
            identity,
            alert_feed,
            spare: events::Spare::default(),
        };
        runtime.spawn(worker.run());
        Self {
            queue,
            dropped_queue_full: collector.events_dropped.with_label_values(&["queue_full"]),
            stop,
            done: Mutex::new(Some(done_rx)),
            active_users,
            storage_health,
            received: ["search", "index", "open", "snapshot"]
                .map(|kind| collector.events_received.with_label_values(&[kind])),
        }
    }

    /// Called by hooks: counts a drop when the queue has no room.
    #[inline]
    pub fn pushed(&self, accepted: bool) {
        if !accepted {
            self.dropped_queue_full.inc();
        }
    }

    /// Events waiting in the queue: accepted by this boot's hooks and not
    /// read by the worker yet (events a crash left are not this boot's).
    pub fn depth(&self) -> usize {
        let received: u64 = self.received.iter().map(|c| c.get()).sum();
        let accepted = received.saturating_sub(self.dropped_queue_full.get());
        let read = self.queue.drained().saturating_sub(self.queue.stats().recovered_events);
        accepted.saturating_sub(read) as usize
    }

    pub fn active_counts(&self, now_us: i64) -> ActiveCounts {
        self.active_users.lock().counts(now_us)
    }

    /// Drains the queue to storage (or the spool) and stops the worker.
    /// Blocks the calling (host) thread; idempotent.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(done) = self.done.lock().take() {
            let _ = done.recv_timeout(SHUTDOWN_WAIT);
        }
    }
}

struct Worker {
    reader: Reader,
    stop: Arc<AtomicBool>,
    batch_max: usize,
    flush_interval: Duration,
    code_health: CodeHealth,
    active_users: Arc<Mutex<ActiveUsers>>,
    dropped_table_full: IntCounter,
    collector: Arc<Collector>,
    /// Rows, and the queue position to release once they are stored.
    batches: tokio::sync::mpsc::Sender<(RowBatch, u64)>,
    privacy: Privacy,
    identity: Identity,
    /// The alert engine's per-second aggregates of this boot's events.
    alert_feed: Option<Arc<Mutex<crate::alerting::measure::Recent>>>,
    /// Event buffers the worker reuses.
    spare: events::Spare,
}

impl Worker {
    async fn run(mut self) {
        let mut events = Vec::with_capacity(self.batch_max);
        // Rows go straight into their table's vector of the next write.
        let mut pending = RowBatch::new(self.identity.boot_id);
        // The queue position just after the last event in `pending`.
        let mut pending_end = 0u64;
        let mut oldest: Option<Instant> = None;
        let mut health_dirty = false;
        let mut health_at = Instant::now();
        'run: loop {
            // Read the flag before draining, so nothing pushed before
            // shutdown is left behind.
            let stopping = self.stop.load(Ordering::Acquire);
            while events.len() < self.batch_max {
                match self.reader.pop(&self.spare) {
                    Some(queued) => events.push(queued),
                    None => break,
                }
            }
            let took = events.len();
            if took > 0 {
                health_dirty |= self.analyze(&events);
                oldest.get_or_insert_with(Instant::now);
                for Queued { id, event, end } in events.drain(..) {
                    // A batch holds one boot's rows (events a crash left
                    // are of an earlier boot, and come first).
                    if id.boot_id != pending.boot_id {
                        if !pending.is_empty() {
                            let batch = std::mem::replace(&mut pending, RowBatch::new(id.boot_id));
                            if self.batches.send((batch, pending_end)).await.is_err() {
                                break 'run;
                            }
                        } else {
                            pending = RowBatch::new(id.boot_id);
                        }
                    }
                    pending.push(Row::from_event(id, &event, &self.privacy));
                    pending_end = end;
                    if let Some(buffer) = event.into_buffer() {
                        self.spare.give(buffer);
                    }
                }
            }
            let due = pending.len() >= self.batch_max
                || oldest.is_some_and(|t| t.elapsed() >= self.flush_interval)
                || stopping;
            if due && !pending.is_empty() {
                let next = pending.empty_like();
                let batch = std::mem::replace(&mut pending, next);
                // Waits while two batches are in flight: the queue absorbs.
                if self.batches.send((batch, pending_end)).await.is_err() {
                    break;
                }
                oldest = None;
            }
            if health_dirty && (stopping || health_at.elapsed() >= CODE_HEALTH_EVERY) {
                self.publish_code_health();
                health_dirty = false;
                health_at = Instant::now();
            }
            self.reader.tick();
            if stopping && took == 0 && pending.is_empty() {
                self.reader.finish();
                // Dropping the sender lets the writer finish and report done.
                break;
            }
            if took < self.batch_max {
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    }

    /// Returns whether the code-health tables changed.
    fn analyze(&mut self, batch: &[Queued]) -> bool {
        if let Some(feed) = &self.alert_feed {
            let mut recent = feed.lock();
            // Only this boot's events: the engine reads earlier boots'
            // (a crash's replay included) from the database.
            for Queued { event, .. } in batch.iter().filter(|q| q.id.boot_id == self.identity.boot_id) {
                match event {
                    Event::Search(s) => recent.record_search(
                        s.timestamp_us,
                        s.project(),
                        s.cache != plugin_api::CacheOutcome::Miss,
                        s.status != plugin_api::SearchStatus::Ok,
                        crate::storage::latency::bucket_of_ns(s.latency_ns),
                    ),
                    Event::Index(i) => recent.record_index(
                        i.timestamp_us,
                        i.project(),
                        i.outcome != plugin_api::IndexOutcome::Indexed,
                        i64::try_from(i.queue_depth).unwrap_or(i64::MAX),
                    ),
                    _ => {}
                }
            }
        }
        let mut changed = false;
        let mut users = self.active_users.lock();
        for Queued { event, .. } in batch {
            match event {
                Event::Search(search) => {
                    users.record(search.user(), search.timestamp_us);
                    let full = self.code_health.accessed(search.project(), search.top_results());
                    changed |= search.top_results().next().is_some();
                    if full > 0 {
                        self.dropped_table_full.inc_by(full);
                    }
                }
                Event::Open(open) => {
                    users.record(open.user(), open.timestamp_us);
                    changed = true;
                    if self.code_health.accessed(open.project(), [open.path()]) > 0 {
                        self.dropped_table_full.inc();
                    }
                }
                Event::Index(index) => {
                    changed = true;
                    let ok = index.outcome == plugin_api::IndexOutcome::Indexed;
                    if self.code_health.indexed(index.project(), index.path(), ok) == Tracked::TableFull {
                        self.dropped_table_full.inc();
                    }
                }
                Event::Snapshot(snapshot) => self.publish_snapshot(snapshot),
            }
        }
        changed
    }

    fn publish_snapshot(&self, snapshot: &events::SnapshotRecord) {
        let project = self.collector.project(&snapshot.project);
        // A gauge of `other` would mix projects and mean nothing.
        if !project.exact {
            return;
        }
        let c = &self.collector;
        let p = &*project.label;
        c.project_files.with_label_values(&[p, "total"]).set(snapshot.total_files as i64);
        c.project_files.with_label_values(&[p, "indexed"]).set(snapshot.indexed_files as i64);
        if snapshot.total_files > 0 {
            c.index_coverage
                .with_label_values(&[p])
                .set(snapshot.indexed_files as f64 / snapshot.total_files as f64);
        }
        c.vector_store_bytes.with_label_values(&[p]).set(snapshot.vector_store_bytes as i64);
        c.embedding_cache_bytes.with_label_values(&[p]).set(snapshot.embedding_cache_bytes as i64);
        if let Some(ratio) = snapshot.duplication_ratio {
            c.duplication.with_label_values(&[p]).set(ratio);
        }
    }

    fn publish_code_health(&self) {
        for summary in self.code_health.summaries() {
            let project = self.collector.project(&summary.project);
            if !project.exact {
                continue;
            }
            let p = &*project.label;
            self.collector.dead_code.with_label_values(&[p]).set(summary.dead_ratio);
            self.collector.dead_code_files.with_label_values(&[p]).set(summary.dead_files as i64);
            self.collector.hot_spots.with_label_values(&[p]).set(summary.hot_spots as i64);
        }
    }
}

/// The writer's task: live batches in order, the spool in between, until
/// the worker hangs up; then makes the spool durable and reports done.
async fn write_batches(
    mut writer: Writer,
    mut batches: tokio::sync::mpsc::Receiver<(RowBatch, u64)>,
    queue: Arc<EventQueue>,
    done: std::sync::mpsc::Sender<()>,
) {
    // Whatever earlier runs left in the spool goes first.
    writer.wait_connected(Duration::from_secs(3)).await;
    // Three quarters full (rows waiting on a slow database hold their
    // room; two batches in flight hold about half of a default queue at
    // full speed): spool, which frees it before hooks must drop.
    let backed_up = || queue.used_bytes() > queue.capacity_bytes() / 4 * 3;
    loop {
        let (batch, end) = match batches.try_recv() {
            Ok(next) => next,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                if writer.replay_some().await > 0 {
                    continue;
                }
                match tokio::time::timeout(Duration::from_millis(50), batches.recv()).await {
                    Ok(Some(next)) => next,
                    Ok(None) => break,
                    Err(_) => continue,
                }
            }
        };
        // Committed or spooled (durably) either way: a restart must not
        // replay it, and its room is free.
        writer.write_live(batch, backed_up()).await;
        queue.release(end);
    }
    writer.sync();
    let _ = done.send(());
}
