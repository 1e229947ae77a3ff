//! The event pipeline: hooks push owned events into a bounded lock-free
//! queue and return; one worker thread drains it in batches (by size, and by
//! time when traffic is low) and feeds the in-memory analyses.
//!
//! Hooks never block, never wake a thread and never do I/O: a full queue
//! drops the event and counts it (`context_analytics_events_dropped_total`).

pub mod events;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
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
};
use events::Event;

/// How often the worker recomputes the code-health gauges.
const CODE_HEALTH_EVERY: Duration = Duration::from_secs(2);

pub struct Pipeline {
    queue: Arc<ArrayQueue<Event>>,
    dropped_queue_full: IntCounter,
    stop: Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
    pub active_users: Arc<Mutex<ActiveUsers>>,
}

impl Pipeline {
    pub fn start(config: &AnalyticsConfig, collector: Arc<Collector>) -> std::io::Result<Self> {
        let queue = Arc::new(ArrayQueue::new(config.queue_capacity));
        let stop = Arc::new(AtomicBool::new(false));
        let active_users = Arc::new(Mutex::new(ActiveUsers::default()));
        let mut worker = Worker {
            queue: queue.clone(),
            stop: stop.clone(),
            batch_max: config.batch_max_events,
            wait: Duration::from_millis(config.batch_max_wait_ms.max(1)),
            code_health: CodeHealth::new(config.max_tracked_files, config.hot_spot_factor),
            active_users: active_users.clone(),
            dropped_table_full: collector.events_dropped.with_label_values(&["file_table_full"]),
            collector: collector.clone(),
        };
        let handle =
            std::thread::Builder::new().name("analytics-pipeline".into()).spawn(move || worker.run())?;
        Ok(Self {
            queue,
            dropped_queue_full: collector.events_dropped.with_label_values(&["queue_full"]),
            stop,
            worker: Mutex::new(Some(handle)),
            active_users,
        })
    }

    /// Called by hooks: never blocks.
    #[inline]
    pub fn push(&self, event: Event) {
        if self.queue.push(event).is_err() {
            self.dropped_queue_full.inc();
        }
    }

    pub fn depth(&self) -> usize {
        self.queue.len()
    }

    pub fn active_counts(&self, now_us: i64) -> ActiveCounts {
        self.active_users.lock().counts(now_us)
    }

    /// Drains the queue and stops the worker. Idempotent.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.worker.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    queue: Arc<ArrayQueue<Event>>,
    stop: Arc<AtomicBool>,
    batch_max: usize,
    wait: Duration,
    code_health: CodeHealth,
    active_users: Arc<Mutex<ActiveUsers>>,
    dropped_table_full: IntCounter,
    collector: Arc<Collector>,
}

impl Worker {
    fn run(&mut self) {
        let mut batch = Vec::with_capacity(self.batch_max);
        let mut health_dirty = false;
        let mut health_at = Instant::now();
        loop {
            // Read the flag before draining, so nothing pushed before
            // shutdown is left behind.
            let stopping = self.stop.load(Ordering::Acquire);
            while batch.len() < self.batch_max {
                match self.queue.pop() {
                    Some(event) => batch.push(event),
                    None => break,
                }
            }
            let full = batch.len() == self.batch_max;
            if !batch.is_empty() {
                health_dirty |= self.process(&batch);
                batch.clear();
            }
            if health_dirty && (stopping || health_at.elapsed() >= CODE_HEALTH_EVERY) {
                self.publish_code_health();
                health_dirty = false;
                health_at = Instant::now();
            }
            if stopping && !full && self.queue.is_empty() {
                break;
            }
            if !full {
                std::thread::sleep(self.wait);
            }
        }
    }

    /// Returns whether the code-health tables changed.
    fn process(&mut self, batch: &[Event]) -> bool {
        let mut changed = false;
        let mut users = self.active_users.lock();
        for event in batch {
            match event {
                Event::Search(search) => {
                    users.record(search.user(), search.timestamp_us);
                    for path in search.top_results() {
                        changed = true;
                        if self.code_health.accessed(search.project(), path) == Tracked::TableFull {
                            self.dropped_table_full.inc();
                        }
                    }
                }
                Event::Open(open) => {
                    users.record(open.user(), open.timestamp_us);
                    changed = true;
                    if self.code_health.accessed(open.project(), open.path()) == Tracked::TableFull {
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
