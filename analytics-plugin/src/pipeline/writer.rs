//! The storage writer: turns queued events into rows, writes them to the
//! database in batches, and diverts them to the spool while the database is
//! unreachable or behind; replays the spool, oldest first, once it is back.
//!
//! Order is what makes "exactly once" cheap: rows of one boot get their
//! sequence numbers here, in write order, and reach the database in that
//! order (while anything is spooled, new rows are spooled behind it). So a
//! single high-water mark per (instance, boot), committed with the rows,
//! tells which spooled rows are already stored after a crash.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::Serialize;

use super::spool::{Spool, SpoolStats};
use crate::{
    collector::Collector,
    storage::{
        Backend, Storage, StorageError,
        rows::{Row, RowBatch},
    },
};

/// Storage state as health reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StorageHealth {
    pub backend: &'static str,
    pub target: String,
    /// Migrations are applied: the schema is there to read.
    pub ready: bool,
    pub connected: bool,
    pub last_error: Option<String>,
    pub last_error_at_us: Option<i64>,
    pub last_write_at_us: Option<i64>,
    pub events_written: u64,
    pub events_spooled: u64,
    pub events_replayed: u64,
    pub events_dropped_spool_full: u64,
    pub spool: SpoolStats,
    pub last_maintenance_at_us: Option<i64>,
}

impl StorageHealth {
    pub fn new(backend: Backend, target: String) -> Self {
        Self {
            backend: backend.as_str(),
            target,
            ready: false,
            connected: false,
            last_error: None,
            last_error_at_us: None,
            last_write_at_us: None,
            events_written: 0,
            events_spooled: 0,
            events_replayed: 0,
            events_dropped_spool_full: 0,
            spool: SpoolStats::default(),
            last_maintenance_at_us: None,
        }
    }
}

pub struct Writer {
    storage: Arc<dyn Storage>,
    spool: Spool,
    instance_id: String,
    collector: Arc<Collector>,
    pub health: Arc<Mutex<StorageHealth>>,
    logger: plugin_api::HostLogger,
    write_timeout: Duration,
    batch_max: usize,
    prepared: bool,
    connected: bool,
    retry_at: Instant,
    backoff: Duration,
    /// A connection attempt running in the background.
    probe: Option<tokio::sync::oneshot::Receiver<Result<(), StorageError>>>,
    /// Highest stored seq per (instance, boot), as far as this writer knows.
    progress: HashMap<(String, i64), i64>,
    /// This run's boot: rows of other boots come from the event queue's
    /// replay after a crash, and may be stored already.
    live_boot: i64,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: Arc<dyn Storage>,
        spool: Spool,
        instance_id: String,
        collector: Arc<Collector>,
        health: Arc<Mutex<StorageHealth>>,
        logger: plugin_api::HostLogger,
        write_timeout: Duration,
        batch_max: usize,
        live_boot: i64,
    ) -> Self {
        let mut writer = Self {
            storage,
            spool,
            instance_id,
            collector,
            health,
            logger,
            write_timeout,
            batch_max,
            prepared: false,
            connected: false,
            retry_at: Instant::now(),
            backoff: Duration::from_millis(500),
            probe: None,
            progress: HashMap::new(),
            live_boot,
        };
        writer.report_spool_problems();
        writer.publish_spool();
        writer
    }

    pub fn spool_is_empty(&self) -> bool {
        self.spool.is_empty()
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Whether storage is usable. When it is not and a retry is due, starts
    /// a probe (connect, and migrate the first time) in the background and
    /// answers false at once: the writer never waits on an absent database.
    pub async fn ensure_connected(&mut self) -> bool {
        if self.connected {
            return true;
        }
        if let Some(probe) = &mut self.probe {
            match probe.try_recv() {
                Ok(Ok(())) => {
                    self.probe = None;
                    self.mark_connected();
                    return true;
                }
                Ok(Err(error)) => {
                    self.probe = None;
                    self.fail(&error);
                    return false;
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return false,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => self.probe = None,
            }
        }
        if Instant::now() >= self.retry_at {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let storage = self.storage.clone();
            let prepared = self.prepared;
            tokio::spawn(async move {
                let result = async {
                    storage.ping().await?;
                    if !prepared {
                        storage.prepare().await?;
                    }
                    Ok(())
                }
                .await;
                let _ = tx.send(result);
            });
            self.probe = Some(rx);
        }
        false
    }

    /// Waits up to `limit` for storage (start-up: events then go straight to
    /// the database instead of through the spool).
    pub async fn wait_connected(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut connected = self.ensure_connected().await;
        // Wait only while an attempt is running: a refused connection
        // answers at once, a slow one is given up on at `limit`.
        while !connected && self.probe.is_some() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
            connected = self.ensure_connected().await;
        }
        connected
    }

    fn mark_connected(&mut self) {
        if !self.prepared {
            self.logger.info(&format!("storage ready: {}", self.storage.backend().as_str()));
        }
        self.prepared = true;
        self.connected = true;
        self.backoff = Duration::from_millis(500);
        let mut health = self.health.lock();
        health.ready = true;
        health.connected = true;
        health.backend = self.storage.backend().as_str();
        drop(health);
        self.collector.storage_up.set(1);
    }

    fn fail(&mut self, error: &StorageError) {
        let message = error.to_string();
        let was_connected = self.connected;
        self.connected = false;
        // A write that timed out may still commit: ask the database again
        // before trusting what this writer believes is stored.
        self.progress.clear();
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(15));
        self.collector.storage_up.set(0);
        self.collector.storage_errors.inc();
        let mut health = self.health.lock();
        let repeated = health.last_error.as_deref() == Some(message.as_str());
        health.connected = false;
        health.last_error = Some(message.clone());
        health.last_error_at_us = Some(crate::plugin::now_us());
        drop(health);
        if was_connected || !repeated {
            self.logger.warn(&format!("storage unavailable, spooling events: {message}"));
        }
    }

    /// Writes rows from the event queue: to the database when it is up,
    /// nothing is spooled and the queue is not backing up; else to the
    /// spool. Rows of an earlier boot (left by a crash) are written only
    /// past what the database already holds of that boot.
    pub async fn write_live(&mut self, mut batch: RowBatch, queue_backed_up: bool) {
        if batch.is_empty() {
            return;
        }
        if !queue_backed_up && self.spool.is_empty() && self.ensure_connected().await {
            let instance = self.instance_id.clone();
            if batch.boot_id != self.live_boot {
                let stored = match self.stored_seq(&instance, batch.boot_id).await {
                    Ok(seq) => seq,
                    Err(error) => {
                        self.fail(&error);
                        self.spool_rows(&batch.into_rows());
                        return;
                    }
                };
                let boot_id = batch.boot_id;
                let rows = batch.into_rows();
                let total = rows.len();
                batch = RowBatch::from_rows(boot_id, rows.into_iter().filter(|r| r.id.seq > stored));
                if batch.len() < total {
                    self.logger.info(&format!(
                        "event queue replay skipped {} events already stored",
                        total - batch.len()
                    ));
                }
                if batch.is_empty() {
                    return;
                }
            }
            // The rows come out of the batch only if they must be spooled.
            match self.write_batch(&instance, &batch).await {
                Ok(()) => return,
                Err(error) => {
                    self.fail(&error);
                    self.spool_rows(&batch.into_rows());
                    return;
                }
            }
        }
        self.spool_rows(&batch.into_rows());
    }

    fn spool_rows(&mut self, rows: &[Row]) {
        match self.spool.append(rows) {
            Ok(kept) => {
                let dropped = (rows.len() - kept) as u64;
                self.collector.events_spooled.inc_by(kept as u64);
                let mut health = self.health.lock();
                health.events_spooled += kept as u64;
                if dropped > 0 {
                    health.events_dropped_spool_full += dropped;
                    drop(health);
                    self.collector.events_dropped.with_label_values(&["spool_full"]).inc_by(dropped);
                    self.logger.error(&format!(
                        "spool is full (pipeline.spool_max_bytes): dropped {dropped} new events, kept the oldest"
                    ));
                }
            }
            Err(error) => {
                self.collector.events_dropped.with_label_values(&["spool_error"]).inc_by(rows.len() as u64);
                self.logger.error(&format!("{error}: dropped {} events", rows.len()));
            }
        }
        self.publish_spool();
    }

    async fn write_batch(&mut self, instance: &str, batch: &RowBatch) -> Result<(), StorageError> {
        let started = Instant::now();
        let timeout = self.write_timeout;
        match tokio::time::timeout(timeout, self.storage.write(instance, batch)).await {
            Ok(Ok(())) => {
                self.collector.storage_write_duration.observe(started.elapsed().as_secs_f64());
                self.collector.events_written.inc_by(batch.len() as u64);
                self.progress.insert((instance.to_owned(), batch.boot_id), batch.last_seq);
                let mut health = self.health.lock();
                health.events_written += batch.len() as u64;
                health.last_write_at_us = Some(crate::plugin::now_us());
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StorageError::Timeout(timeout.as_millis() as u64)),
        }
    }

    /// Replays one batch from the spool; returns how many rows it consumed.
    pub async fn replay_some(&mut self) -> usize {
        if self.spool.is_empty() || !self.ensure_connected().await {
            return 0;
        }
        let batch = match self.spool.peek(self.batch_max) {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                self.report_spool_problems();
                self.publish_spool();
                return 0;
            }
            Err(error) => {
                self.logger.error(&format!("cannot read spool: {error}"));
                return 0;
            }
        };
        self.report_spool_problems();
        let stored = match self.stored_seq(&batch.instance_id, batch.boot_id).await {
            Ok(seq) => seq,
            Err(error) => {
                self.fail(&error);
                return 0;
            }
        };
        let consumed = batch.rows.len();
        let fresh: Vec<Row> = batch.rows.into_iter().filter(|r| r.id.seq > stored).collect();
        let skipped = consumed - fresh.len();
        if !fresh.is_empty() {
            let rows = RowBatch::from_rows(batch.boot_id, fresh);
            if let Err(error) = self.write_batch(&batch.instance_id, &rows).await {
                self.fail(&error);
                return 0;
            }
        }
        self.spool.commit(consumed);
        self.collector.events_replayed.inc_by((consumed - skipped) as u64);
        self.health.lock().events_replayed += (consumed - skipped) as u64;
        if skipped > 0 {
            self.logger.info(&format!("spool replay skipped {skipped} events already stored"));
        }
        self.publish_spool();
        consumed
    }

    /// The highest seq of (instance, boot) the database holds.
    async fn stored_seq(&mut self, instance: &str, boot_id: i64) -> Result<i64, StorageError> {
        let key = (instance.to_owned(), boot_id);
        if let Some(&seq) = self.progress.get(&key) {
            return Ok(seq);
        }
        let seq = self.storage.last_seq(instance, boot_id).await?;
        self.progress.insert(key, seq);
        Ok(seq)
    }

    fn report_spool_problems(&mut self) {
        for problem in self.spool.problems.drain(..) {
            self.logger.error(&problem);
            self.collector.spool_corrupt_segments.inc();
        }
    }

    fn publish_spool(&mut self) {
        let stats = self.spool.stats();
        self.collector.spool_bytes.set(stats.bytes as i64);
        self.collector.spool_segments.set(stats.segments as i64);
        self.health.lock().spool = stats;
    }

    /// Makes the spool durable (shutdown).
    pub fn sync(&mut self) {
        if let Err(error) = self.spool.sync() {
            self.logger.error(&format!("cannot sync spool: {error}"));
        }
    }
}
