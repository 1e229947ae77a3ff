//! The analytics plugin object: what the host constructs, calls hooks on,
//! forwards requests to, and shuts down.

use std::{
    mem::ManuallyDrop,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::Router;
use plugin_api::{
    FileIndexed, FileOpened, HostContext, HostLogger, HttpRequest, HttpResponse, MiddlewareSpec, Plugin,
    PluginError, ProjectSnapshot, ReplySinkBox, RequestHead, RequestRecord, RouteSpec, SearchExecuted,
};
use prometheus::core::Collector as _;
use serde_json::json;

use crate::{
    alerting::{self, Alerting},
    api,
    collector::Collector,
    config::AnalyticsConfig,
    pipeline::{
        Identity, Pipeline,
        events::Spare,
        journal::Journal,
        queue::{self, EventQueue},
        spool::Spool,
        writer::{StorageHealth, Writer},
    },
    storage::{self, Storage, privacy::Privacy},
};

/// State shared by hooks, the pipeline and the HTTP routes.
pub struct Shared {
    pub config: AnalyticsConfig,
    pub auth: api::auth::Auth,
    pub collector: Arc<Collector>,
    pub pipeline: Pipeline,
    pub storage: Arc<dyn Storage>,
    pub host: HostContext,
    pub logger: HostLogger,
    pub started: Instant,
    pub alerting: Alerting,
}

impl Shared {
    /// Gauges computed on demand, just before a scrape.
    pub fn refresh_gauges(&self) {
        let counts = self.pipeline.active_counts(now_us());
        let c = &self.collector;
        c.active_users.with_label_values(&["5m"]).set(counts.last_5m as i64);
        c.active_users.with_label_values(&["1h"]).set(counts.last_1h as i64);
        c.active_users.with_label_values(&["24h"]).set(counts.last_24h as i64);
        c.queue_depth.set(self.pipeline.depth() as i64);
        c.uptime.set(self.started.elapsed().as_secs_f64());
    }

    pub fn health(&self) -> serde_json::Value {
        let c = &self.collector;
        let received = |kind: &str| c.events_received.with_label_values(&[kind]).get();
        let dropped = |reason: &str| c.events_dropped.with_label_values(&[reason]).get();
        let panics: u64 = c
            .hook_panics
            .collect()
            .iter()
            .flat_map(|family| family.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
            .sum();
        let storage = self.pipeline.storage_health.lock().clone();
        let queue = self.pipeline.queue.stats();
        let (status, reason) = if !storage.ready && storage.last_error.is_none() {
            (
                "starting",
                Some("analytics database is opening (connecting and migrating at start-up)".to_owned()),
            )
        } else if !storage.connected {
            (
                "degraded",
                Some(format!(
                    "analytics database unreachable, events are spooled: {}",
                    storage.last_error.as_deref().unwrap_or("connection lost")
                )),
            )
        } else if storage.spool.bytes > 0 {
            ("degraded", Some("replaying spooled events into the database".to_owned()))
        } else {
            ("ok", None)
        };
        json!({
            "status": status,
            "reason": reason,
            "plugin": self.host.plugin_name.as_str(),
            "version": env!("CARGO_PKG_VERSION"),
            "interface_version": plugin_api::INTERFACE_VERSION,
            "instance_id": self.host.instance_id.as_str(),
            "host": {"name": self.host.host_name.as_str(), "version": self.host.host_version.as_str()},
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "events": {
                "received": {
                    "search": received("search"),
                    "index": received("index"),
                    "open": received("open"),
                    "snapshot": received("snapshot"),
                },
                "dropped": {
                    "queue_full": dropped("queue_full"),
                    "file_table_full": dropped("file_table_full"),
                    "spool_full": dropped("spool_full"),
                    "spool_error": dropped("spool_error"),
                },
                "written": storage.events_written,
                "hook_panics": panics,
            },
            "queue": {
                "depth": self.pipeline.depth(),
                "capacity": self.config.pipeline.queue_capacity,
                "file": self.pipeline.queue.path().display().to_string(),
                "file_bytes": self.pipeline.queue.capacity_bytes(),
                "used_bytes": self.pipeline.queue.used_bytes(),
                "recovered_events": queue.recovered_events,
                "torn_records": queue.torn_records,
                "corrupt_records": queue.corrupt_records,
                "header_reset": queue.header_reset,
                "survived": queue.survived,
                "journal_events": queue.journal_events,
                "journal_skipped": queue.journal_skipped,
            },
            "alerting": match &self.alerting.engine {
                None => json!({"enabled": false}),
                Some(engine) => json!({
                    "enabled": true,
                    "leader": engine.leading(),
                    "channels": engine.channels.iter().map(|c| c.config.name.as_str()).collect::<Vec<_>>(),
                    "refused_channel_libraries": self.alerting.refused,
                    "last_evaluation": *engine.last.lock(),
                }),
            },
            "storage": storage,
        })
    }
}

/// Rollups and retention, every `storage.maintenance_interval_secs`, while
/// the database is reachable.
async fn maintenance(shared: Arc<Shared>) {
    let every = Duration::from_secs(shared.config.storage.maintenance_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !shared.pipeline.storage_health.lock().connected {
            continue;
        }
        match shared.storage.maintain(now_us()).await {
            Ok(report) => {
                if report.ran {
                    shared.pipeline.storage_health.lock().last_maintenance_at_us = Some(now_us());
                }
                if report.rows_deleted > 0 {
                    shared.logger.info(&format!("retention removed {} expired rows", report.rows_deleted));
                }
            }
            Err(e) => shared.logger.warn(&format!("storage maintenance failed: {e}")),
        }
    }
}

/// Bytes of event queue file per event of `pipeline.queue_capacity`: a
/// search with ten result paths takes about 500.
const QUEUE_BYTES_PER_EVENT: u64 = 512;

/// Where the event queue's ring lives: `pipeline.queue_dir` if set, else
/// tmpfs (`/dev/shm`: no write-back, so no page fault on a hook's path)
/// when it is there and writable, else the data dir. Outside the data dir
/// the file is named after it, so each server finds its own.
fn queue_file(configured: &str, data_dir: &std::path::Path) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if !configured.is_empty() {
        std::path::PathBuf::from(configured)
    } else if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
        shm.to_owned()
    } else {
        return data_dir.join("events.queue");
    };
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    // FNV-1a: stable across builds and Rust versions, unlike std's hasher.
    let hash = canonical
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    dir.join(format!("context-analytics-{hash:016x}.queue"))
}

/// Turns the journal's records into spool rows (each with the id it had),
/// for a start whose ring did not survive.
fn recover_journal(
    journal: &Journal,
    queue: &EventQueue,
    spool: &mut Spool,
    privacy: &Privacy,
    logger: &HostLogger,
) -> std::io::Result<()> {
    let recovered = journal.recover()?;
    let spare = Spare::default();
    let mut rows = Vec::with_capacity(recovered.records.len());
    let mut skipped = recovered.skipped;
    for (pos, record) in &recovered.records {
        match queue::decode(record, &spare) {
            Some((boot_id, event)) => {
                rows.push(storage::rows::Row::from_event(queue::event_id(boot_id, *pos), &event, privacy))
            }
            None => skipped += 1,
        }
    }
    if !rows.is_empty() || skipped > 0 {
        let kept = spool.append(&rows).map_err(|e| std::io::Error::other(e.to_string()))?;
        logger.warn(&format!(
            "the event queue did not survive (power loss or reboot): {kept} events recovered from the              journal and spooled ({skipped} torn or corrupt records skipped; events already stored are skipped              on replay)"
        ));
        queue.note_journal(kept as u64, skipped);
    }
    Ok(())
}

/// How often [`release_free_heap`] runs.
const RELEASE_HEAP_EVERY: Duration = Duration::from_secs(10);

/// Gives the pages glibc's allocator holds free back to the system, every
/// [`RELEASE_HEAP_EVERY`]. The plugin's threads allocate and free large
/// short-lived buffers (a second of events per write batch, the sorts and
/// strings of a maintenance run); glibc keeps what is freed in the arena of
/// the thread that allocated it and returns only the top of each heap, so
/// at 10,000 events/s resident memory ratcheted up by tens of MB a minute
/// while the memory in use stayed flat. `malloc_trim(0)` releases the free
/// pages of every arena (median about 1.5 ms, at most 27 ms measured on a
/// loaded 2-core machine); other allocators need nothing.
async fn release_free_heap() {
    let mut tick = tokio::time::interval(RELEASE_HEAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases memory no allocation refers to.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

pub struct AnalyticsPlugin {
    shared: ManuallyDrop<Arc<Shared>>,
    router: ManuallyDrop<Router>,
    runtime: ManuallyDrop<tokio::runtime::Runtime>,
    received: [prometheus::IntCounter; 4],
}

impl AnalyticsPlugin {
    pub fn new(host: HostContext, config_toml: &str) -> Result<Self, PluginError> {
        let config = AnalyticsConfig::from_toml(config_toml).map_err(PluginError::config)?;
        let privacy = Privacy::from_config(&config.privacy)
            .map_err(|e| PluginError::config(format!("invalid [plugins.analytics.config]: {e}")))?;
        let auth = api::auth::Auth::from_config(&config.auth)
            .map_err(|e| PluginError::config(format!("invalid [plugins.analytics.config]: {e}")))?;
        let logger = host.logger(host.plugin_name.as_str());
        let data_dir = std::path::PathBuf::from(host.data_dir.as_str());
        let collector = Arc::new(
            Collector::new(&config).map_err(|e| PluginError::internal(format!("metric registry: {e}")))?,
        );
        // Opened before the runtime exists: a refusal (another process holds
        // the file) must not drop a runtime on the caller's thread.
        let boot_id = now_us();
        // Events a crash left in the queue are replayed by the worker first.
        let queue = Arc::new(
            EventQueue::open(
                &queue_file(&config.pipeline.queue_dir, &data_dir),
                (config.pipeline.queue_capacity as u64).saturating_mul(QUEUE_BYTES_PER_EVENT),
                host.instance_id.as_str(),
                boot_id,
            )
            .map_err(|e| PluginError::new(plugin_api::ErrorKind::Io, e.to_string()))?,
        );
        let io_error =
            |e: std::io::Error| PluginError::new(plugin_api::ErrorKind::Io, format!("event journal: {e}"));
        let mut journal = Journal::open(
            &data_dir.join("journal"),
            Duration::from_millis(config.pipeline.fsync_interval_ms.max(1)),
            Some(logger.clone()),
        )
        .map_err(io_error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .thread_name("analytics-rt")
            .enable_all()
            .build()
            .map_err(|e| PluginError::internal(format!("cannot start runtime: {e}")))?;
        // Database pools spawn their housekeeping on the current runtime: ours.
        let _entered = runtime.enter();
        let storage = storage::open(&config.storage, &config.retention, &data_dir)
            .map_err(|e| PluginError::config(format!("invalid [plugins.analytics.config]: {e}")))?;
        let instance_id = host.instance_id.to_string();
        let mut spool = Spool::open(
            &data_dir.join("spool"),
            &instance_id,
            config.pipeline.spool_max_bytes,
            config.pipeline.spool_segment_bytes,
        )
        .map_err(|e| PluginError::new(plugin_api::ErrorKind::Io, e.to_string()))?;
        if !queue.stats().survived {
            // The ring went with the machine (power loss, reboot): what the
            // journal kept goes to the spool, behind what is there.
            recover_journal(&journal, &queue, &mut spool, &privacy, &logger).map_err(io_error)?;
        }
        // Every unreleased record is in the ring (or now spooled): the worker
        // journals them again as it reads them.
        journal.clear().map_err(io_error)?;
        let health = Arc::new(parking_lot::Mutex::new(StorageHealth::new(
            storage.backend(),
            storage::redact(&config.storage.url),
        )));
        let writer = Writer::new(
            storage.clone(),
            spool,
            instance_id.clone(),
            collector.clone(),
            health,
            logger.clone(),
            Duration::from_millis(config.storage.write_timeout_ms),
            config.pipeline.batch_max_events,
            boot_id,
        );
        let identity = Identity { instance_id, boot_id };
        let alerting = alerting::build(
            &config.alerting,
            storage.clone(),
            &collector.registry,
            logger.clone(),
            &data_dir,
            (&identity.instance_id, identity.boot_id),
        )
        .map_err(|e| PluginError::config(format!("invalid [plugins.analytics.config]: {e}")))?;
        let alert_feed = alerting.engine.as_ref().map(|e| e.recent.clone());
        let pipeline = Pipeline::start(
            &config,
            collector.clone(),
            writer,
            queue,
            Some(journal),
            privacy,
            identity,
            alert_feed,
            runtime.handle(),
        );
        let received = ["search", "index", "open", "snapshot"]
            .map(|kind| collector.events_received.with_label_values(&[kind]));
        let recovered = pipeline.queue.used_bytes();
        if recovered > 0 {
            logger.info(&format!(
                "event queue '{}' holds {recovered} bytes of events from an earlier run: replaying them",
                pipeline.queue.path().display()
            ));
        }
        logger.info(&format!(
            "analytics {} started for instance '{}': storage {}, queue {} events, max {} projects",
            env!("CARGO_PKG_VERSION"),
            host.instance_id,
            storage::redact(&config.storage.url),
            config.pipeline.queue_capacity,
            config.max_projects
        ));
        let shared = Arc::new(Shared {
            config,
            auth,
            collector,
            pipeline,
            storage,
            host,
            logger,
            started: Instant::now(),
            alerting,
        });
        runtime.spawn(maintenance(shared.clone()));
        runtime.spawn(release_free_heap());
        let health = shared.pipeline.storage_health.clone();
        shared.alerting.start(runtime.handle(), move || health.lock().ready);
        let router = api::router(shared.clone());
        drop(_entered);
        Ok(Self {
            shared: ManuallyDrop::new(shared),
            router: ManuallyDrop::new(router),
            runtime: ManuallyDrop::new(runtime),
            received,
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn router(&self) -> Router {
        (*self.router).clone()
    }
}

impl Plugin for AnalyticsPlugin {
    fn routes(&self) -> Vec<RouteSpec> {
        api::route_specs()
    }

    fn middleware(&self) -> MiddlewareSpec {
        let before = self.shared.auth.prefixes().into_iter().map(Into::into).collect();
        MiddlewareSpec { before_prefixes: before, after_all: true }
    }

    fn before_request(&self, head: &RequestHead<'_>) -> Option<HttpResponse> {
        self.shared.auth.check(head)
    }

    fn handle_request(&self, request: HttpRequest, reply: ReplySinkBox) {
        self.runtime.spawn(api::bridge::serve(self.router(), request, reply));
    }

    fn after_request(&self, record: &RequestRecord<'_>) {
        self.shared.collector.record_http(record);
    }

    fn on_search_executed(&self, event: &SearchExecuted<'_>) {
        self.received[0].inc();
        self.shared.collector.record_search(event);
        let pipeline = &self.shared.pipeline;
        pipeline.pushed(pipeline.queue.push_search(event));
    }

    fn on_file_indexed(&self, event: &FileIndexed<'_>) {
        self.received[1].inc();
        self.shared.collector.record_index(event);
        let pipeline = &self.shared.pipeline;
        pipeline.pushed(pipeline.queue.push_index(event));
    }

    fn on_file_opened(&self, event: &FileOpened<'_>) {
        self.received[2].inc();
        self.shared.collector.record_open(event);
        let pipeline = &self.shared.pipeline;
        pipeline.pushed(pipeline.queue.push_open(event));
    }

    fn on_project_snapshot(&self, event: &ProjectSnapshot<'_>) {
        self.received[3].inc();
        let pipeline = &self.shared.pipeline;
        pipeline.pushed(pipeline.queue.push_snapshot(event));
    }

    fn shutdown(&self) -> Result<(), PluginError> {
        self.shared.pipeline.shutdown();
        let queue = &self.shared.pipeline.queue;
        if queue.used_bytes() == 0 {
            // Everything is stored: nothing for a restart to replay, and a
            // ring in /dev/shm should not outlive the server.
            let _ = std::fs::remove_file(queue.path());
            let journal = std::path::Path::new(self.shared.host.data_dir.as_str()).join("journal");
            if let Ok(mut journal) = Journal::open(&journal, Duration::ZERO, None) {
                let _ = journal.clear();
            }
        }
        // Hand alerting over at once rather than when the process exits.
        let (done, wait) = std::sync::mpsc::channel();
        let storage = self.shared.storage.clone();
        self.runtime.spawn(async move {
            storage.resign().await;
            let _ = done.send(());
        });
        let _ = wait.recv_timeout(Duration::from_secs(2));
        self.shared.logger.info("analytics flushed its pipeline and stopped");
        Ok(())
    }

    fn on_panic(&self, entry_point: &'static str) {
        self.shared.collector.hook_panics.with_label_values(&[entry_point]).inc();
    }
}

impl Drop for AnalyticsPlugin {
    fn drop(&mut self) {
        // SAFETY: each field is taken exactly once, here, and not used after.
        let (shared, router, runtime) = unsafe {
            (
                ManuallyDrop::take(&mut self.shared),
                ManuallyDrop::take(&mut self.router),
                ManuallyDrop::take(&mut self.runtime),
            )
        };
        // The host may drop us on one of its threads, where our tokio copy
        // has no context: state that spawns on drop must find our runtime.
        {
            let _entered = runtime.enter();
            drop(router);
            drop(shared);
        }
        // Inside some runtime (only possible when linked in-process, sharing
        // the caller's tokio) blocking is forbidden: let the threads go.
        if tokio::runtime::Handle::try_current().is_ok() {
            runtime.shutdown_background();
        } else {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
