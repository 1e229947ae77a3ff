//! The event pipeline: hooks push owned events into a bounded lock-free
//! queue and return; one task on the plugin's runtime drains it, feeds the
//! in-memory analyses (active users, code health), numbers the events and
//! hands them to the [`writer::Writer`] in batches (by size and by time).
//!
//! Hooks never block, never wake a thread and never do I/O: a full queue
//! drops the event and counts it (`context_analytics_events_dropped_total`);
//! the writer spills to the spool at half capacity so that stays rare.

pub mod events;
pub mod spool;
pub mod writer;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crossbeam_queue::ArrayQueue;
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
        rows::{EventId, Row, RowBatch},
    },
};
use events::Event;
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
    queue: Arc<ArrayQueue<Event>>,
    dropped_queue_full: IntCounter,
    stop: Arc<AtomicBool>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    pub active_users: Arc<Mutex<ActiveUsers>>,
    pub storage_health: Arc<Mutex<StorageHealth>>,
    /// Event buffers going round between the worker and the hooks.
    pub spare: Arc<events::Spare>,
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
        privacy: Privacy,
        identity: Identity,
        alert_feed: Option<Arc<Mutex<crate::alerting::measure::Recent>>>,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let queue = Arc::new(ArrayQueue::new(config.pipeline.queue_capacity));
        let stop = Arc::new(AtomicBool::new(false));
        let active_users = Arc::new(Mutex::new(ActiveUsers::default()));
        let spare = Arc::new(events::Spare::default());
        let storage_health = writer.health.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Two batches in flight: the worker prepares the next while the
        // writer waits for the database.
        let (batches_tx, batches_rx) = tokio::sync::mpsc::channel::<RowBatch>(2);
        runtime.spawn(write_batches(writer, batches_rx, queue.clone(), done_tx));
        let worker = Worker {
            queue: queue.clone(),
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
            spare: spare.clone(),
            next_seq: 1,
        };
        runtime.spawn(worker.run());
        Self {
            queue,
            dropped_queue_full: collector.events_dropped.with_label_values(&["queue_full"]),
            stop,
            done: Mutex::new(Some(done_rx)),
            active_users,
            storage_health,
            spare,
        }
    }

    /// Called by hooks: never blocks.
    #[inline]
    pub fn push(&self, event: Event) {
        if let Err(event) = self.queue.push(event) {
            self.dropped_queue_full.inc();
            if let Some(buffer) = event.into_buffer() {
                self.spare.give(buffer);
            }
        }
    }

    pub fn depth(&self) -> usize {
        self.queue.len()
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
    queue: Arc<ArrayQueue<Event>>,
    stop: Arc<AtomicBool>,
    batch_max: usize,
    flush_interval: Duration,
    code_health: CodeHealth,
    active_users: Arc<Mutex<ActiveUsers>>,
    dropped_table_full: IntCounter,
    collector: Arc<Collector>,
    batches: tokio::sync::mpsc::Sender<RowBatch>,
    privacy: Privacy,
    identity: Identity,
    /// The alert engine's per-second aggregates of this boot's events.
    alert_feed: Option<Arc<Mutex<crate::alerting::measure::Recent>>>,
    spare: Arc<events::Spare>,
    next_seq: i64,
}

impl Worker {
    async fn run(mut self) {
        let mut events = Vec::with_capacity(self.batch_max);
        // Rows go straight into their table's vector of the next write.
        let mut pending = RowBatch::new(self.identity.boot_id);
        let mut oldest: Option<Instant> = None;
        let mut health_dirty = false;
        let mut health_at = Instant::now();
        loop {
            // Read the flag before draining, so nothing pushed before
            // shutdown is left behind.
            let stopping = self.stop.load(Ordering::Acquire);
            while events.len() < self.batch_max {
                match self.queue.pop() {
                    Some(event) => events.push(event),
                    None => break,
                }
            }
            let took = events.len();
            if took > 0 {
                health_dirty |= self.analyze(&events);
                oldest.get_or_insert_with(Instant::now);
                for event in events.drain(..) {
                    let id = EventId { boot_id: self.identity.boot_id, seq: self.next_seq };
                    self.next_seq += 1;
                    pending.push(Row::from_event(id, &event, &self.privacy));
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
                if self.batches.send(batch).await.is_err() {
                    break;
                }
                oldest = None;
            }
            if health_dirty && (stopping || health_at.elapsed() >= CODE_HEALTH_EVERY) {
                self.publish_code_health();
                health_dirty = false;
                health_at = Instant::now();
            }
            if stopping && self.queue.is_empty() && pending.is_empty() {
                // Dropping the sender lets the writer finish and report done.
                break;
            }
            if took < self.batch_max {
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    }

    /// Returns whether the code-health tables changed.
    fn analyze(&mut self, batch: &[Event]) -> bool {
        if let Some(feed) = &self.alert_feed {
            let mut recent = feed.lock();
            for event in batch {
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
        for event in batch {
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
    mut batches: tokio::sync::mpsc::Receiver<RowBatch>,
    queue: Arc<ArrayQueue<Event>>,
    done: std::sync::mpsc::Sender<()>,
) {
    // Whatever earlier runs left in the spool goes first.
    writer.wait_connected(Duration::from_secs(3)).await;
    let backed_up = || queue.len() > queue.capacity() / 10 * 9;
    loop {
        match batches.try_recv() {
            Ok(batch) => writer.write_live(batch, backed_up()).await,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => break,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                if writer.replay_some().await > 0 {
                    continue;
                }
                match tokio::time::timeout(Duration::from_millis(50), batches.recv()).await {
                    Ok(Some(batch)) => writer.write_live(batch, backed_up()).await,
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        }
    }
    writer.sync();
    let _ = done.send(());
}
