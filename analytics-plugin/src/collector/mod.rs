//! The collector: every Prometheus metric family of the plugin, in its own
//! registry (never the default one, which the host may link a copy of), and
//! the cheap per-event updates the hooks make.
//!
//! All metric names live in this file. Labels are bounded: projects beyond
//! `max_projects` and other values beyond `max_label_values` fold into
//! `other`; file paths, query text and user ids are never labels.

pub mod active_users;
pub mod code_health;
pub mod labels;

use std::sync::Arc;

use parking_lot::RwLock;
use plugin_api::{
    CacheOutcome, FileIndexed, FileOpened, IndexOutcome, QueryKind, SearchExecuted, SearchStatus,
};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use rustc_hash::FxHashMap;

use crate::config::AnalyticsConfig;
use labels::{BoundedLabels, OTHER};

/// Search latency buckets, in seconds. 0.5 and 2 are the thresholds of the
/// high and critical latency alerts, so their quantiles are exact there.
pub const SEARCH_LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0];
const RESULT_COUNT_BUCKETS: &[f64] =
    &[0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0];
const INDEX_DURATION_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
const HTTP_DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const SIZE_BUCKETS: &[f64] =
    &[64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0];
const RANK_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0];

/// Metric handles of one project label, resolved once so the search hook
/// does no label hashing.
pub struct ProjectMetrics {
    pub label: Arc<str>,
    /// Whether `label` is the project itself (false when folded into `other`).
    pub exact: bool,
    searches: [[IntCounter; 3]; 3],
    latency: [Histogram; 3],
    results: Histogram,
    zero_results: IntCounter,
    /// [layer L1/L2/L3][hit, miss]
    cache: [[IntCounter; 2]; 3],
    opens: IntCounter,
    index_bytes: IntCounter,
    queue_depth: IntGauge,
}

pub struct Collector {
    pub registry: Registry,
    config_max_projects: usize,
    projects: RwLock<FxHashMap<Box<str>, Arc<ProjectMetrics>>>,
    file_types: BoundedLabels,
    error_codes: BoundedLabels,
    routes: BoundedLabels,
    /// The request histograms of each (method, route label, status) seen:
    /// three label lookups per request otherwise. As bounded as the labels.
    http_series: RwLock<FxHashMap<(&'static str, Arc<str>, u16), Arc<HttpSeries>>>,

    search_requests: IntCounterVec,
    search_duration: HistogramVec,
    search_results: HistogramVec,
    search_zero_results: IntCounterVec,
    search_errors: IntCounterVec,
    cache_lookups: IntCounterVec,
    index_files: IntCounterVec,
    index_errors: IntCounterVec,
    index_duration: HistogramVec,
    index_bytes: IntCounterVec,
    index_queue_depth: IntGaugeVec,
    file_opens: IntCounterVec,
    file_open_rank: Histogram,
    pub active_users: IntGaugeVec,
    pub project_files: IntGaugeVec,
    pub index_coverage: GaugeVec,
    pub dead_code: GaugeVec,
    pub dead_code_files: IntGaugeVec,
    pub hot_spots: IntGaugeVec,
    pub duplication: GaugeVec,
    pub vector_store_bytes: IntGaugeVec,
    pub embedding_cache_bytes: IntGaugeVec,
    http_duration: HistogramVec,
    http_request_size: HistogramVec,
    http_response_size: HistogramVec,
    pub events_received: IntCounterVec,
    pub events_dropped: IntCounterVec,
    pub hook_panics: IntCounterVec,
    pub queue_depth: IntGauge,
    pub queue_capacity: IntGauge,
    pub uptime: Gauge,
    pub storage_up: IntGauge,
    pub storage_errors: IntCounter,
    pub storage_write_duration: Histogram,
    pub events_written: IntCounter,
    pub events_spooled: IntCounter,
    pub events_replayed: IntCounter,
    pub spool_bytes: IntGauge,
    pub spool_segments: IntGauge,
    pub spool_corrupt_segments: IntCounter,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

fn hist(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets.to_vec())
}

impl Collector {
    pub fn new(config: &AnalyticsConfig) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let c = Self {
            config_max_projects: config.max_projects,
            projects: RwLock::new(FxHashMap::default()),
            file_types: BoundedLabels::new(config.max_label_values),
            error_codes: BoundedLabels::new(config.max_label_values),
            routes: BoundedLabels::new(config.max_label_values),
            http_series: RwLock::new(FxHashMap::default()),

            search_requests: IntCounterVec::new(
                opts("context_search_requests_total", "Searches executed, by query kind and how they ended."),
                &["project", "kind", "status"],
            )?,
            search_duration: HistogramVec::new(
                hist(
                    "context_search_duration_seconds",
                    "Search latency as measured by the host.",
                    SEARCH_LATENCY_BUCKETS,
                ),
                &["project", "kind"],
            )?,
            search_results: HistogramVec::new(
                hist(
                    "context_search_results",
                    "Number of results per successful search.",
                    RESULT_COUNT_BUCKETS,
                ),
                &["project"],
            )?,
            search_zero_results: IntCounterVec::new(
                opts("context_search_zero_results_total", "Successful searches that found nothing."),
                &["project"],
            )?,
            search_errors: IntCounterVec::new(
                opts("context_search_errors_total", "Failed or timed-out searches, by error code."),
                &["project", "code"],
            )?,
            cache_lookups: IntCounterVec::new(
                opts(
                    "context_search_cache_lookups_total",
                    "Cache lookups per layer; a search answered at L2 missed L1 first.",
                ),
                &["project", "layer", "result"],
            )?,
            index_files: IntCounterVec::new(
                opts(
                    "context_index_files_total",
                    "Files processed by the indexer, by file type and outcome.",
                ),
                &["project", "file_type", "outcome"],
            )?,
            index_errors: IntCounterVec::new(
                opts("context_index_errors_total", "Files skipped or failed by the indexer, by reason code."),
                &["project", "code"],
            )?,
            index_duration: HistogramVec::new(
                hist("context_index_duration_seconds", "Time to index one file.", INDEX_DURATION_BUCKETS),
                &["project", "file_type"],
            )?,
            index_bytes: IntCounterVec::new(
                opts("context_index_bytes_total", "Bytes of files processed by the indexer."),
                &["project"],
            )?,
            index_queue_depth: IntGaugeVec::new(
                opts("context_index_queue_depth", "Files waiting in the index queue, as last reported."),
                &["project"],
            )?,
            file_opens: IntCounterVec::new(
                opts("context_file_opens_total", "Files opened from search results (click-through)."),
                &["project"],
            )?,
            file_open_rank: Histogram::with_opts(hist(
                "context_file_open_rank",
                "1-based rank of opened files in the results they came from.",
                RANK_BUCKETS,
            ))?,
            active_users: IntGaugeVec::new(
                opts("context_active_users", "Distinct users who searched or opened files in the window."),
                &["window"],
            )?,
            project_files: IntGaugeVec::new(
                opts("context_project_files", "Files in the project, as last reported by the host."),
                &["project", "state"],
            )?,
            index_coverage: GaugeVec::new(
                opts("context_index_coverage_ratio", "Indexed files over all files of the project."),
                &["project"],
            )?,
            dead_code: GaugeVec::new(
                opts(
                    "context_dead_code_ratio",
                    "Share of indexed files never returned by a search nor opened since the plugin started.",
                ),
                &["project"],
            )?,
            dead_code_files: IntGaugeVec::new(
                opts(
                    "context_dead_code_files",
                    "Indexed files never returned nor opened since the plugin started.",
                ),
                &["project"],
            )?,
            hot_spots: IntGaugeVec::new(
                opts(
                    "context_hot_spot_files",
                    "Files accessed more than hot_spot_factor times the project average.",
                ),
                &["project"],
            )?,
            duplication: GaugeVec::new(
                opts("context_duplication_ratio", "Share of duplicated files, as reported by the host."),
                &["project"],
            )?,
            vector_store_bytes: IntGaugeVec::new(
                opts("context_vector_store_bytes", "Size of the project's vector store."),
                &["project"],
            )?,
            embedding_cache_bytes: IntGaugeVec::new(
                opts("context_embedding_cache_bytes", "Size of the project's embedding cache."),
                &["project"],
            )?,
            http_duration: HistogramVec::new(
                hist(
                    "context_http_request_duration_seconds",
                    "HTTP request duration, by route template.",
                    HTTP_DURATION_BUCKETS,
                ),
                &["method", "route", "code"],
            )?,
            http_request_size: HistogramVec::new(
                hist("context_http_request_size_bytes", "HTTP request body size.", SIZE_BUCKETS),
                &["method", "route"],
            )?,
            http_response_size: HistogramVec::new(
                hist("context_http_response_size_bytes", "HTTP response body size.", SIZE_BUCKETS),
                &["method", "route"],
            )?,
            events_received: IntCounterVec::new(
                opts("context_analytics_events_received_total", "Events received by the plugin's hooks."),
                &["kind"],
            )?,
            events_dropped: IntCounterVec::new(
                opts(
                    "context_analytics_events_dropped_total",
                    "Events the plugin could not keep, by reason.",
                ),
                &["reason"],
            )?,
            hook_panics: IntCounterVec::new(
                opts(
                    "context_analytics_hook_panics_total",
                    "Panics caught at the plugin boundary, by entry point.",
                ),
                &["entry_point"],
            )?,
            queue_depth: IntGauge::with_opts(opts(
                "context_analytics_queue_depth",
                "Events waiting between the hooks and the pipeline worker.",
            ))?,
            queue_capacity: IntGauge::with_opts(opts(
                "context_analytics_queue_capacity",
                "Capacity of the in-memory event queue.",
            ))?,
            uptime: Gauge::with_opts(opts(
                "context_analytics_uptime_seconds",
                "Seconds since the plugin started.",
            ))?,
            storage_up: IntGauge::with_opts(opts(
                "context_analytics_storage_up",
                "1 while the analytics database accepts writes, 0 while events are spooled.",
            ))?,
            storage_errors: IntCounter::with_opts(opts(
                "context_analytics_storage_errors_total",
                "Failed connections and writes to the analytics database.",
            ))?,
            storage_write_duration: Histogram::with_opts(hist(
                "context_analytics_storage_write_duration_seconds",
                "Time to commit one batch of events.",
                HTTP_DURATION_BUCKETS,
            ))?,
            events_written: IntCounter::with_opts(opts(
                "context_analytics_events_written_total",
                "Events committed to the analytics database.",
            ))?,
            events_spooled: IntCounter::with_opts(opts(
                "context_analytics_events_spooled_total",
                "Events written to the on-disk spool.",
            ))?,
            events_replayed: IntCounter::with_opts(opts(
                "context_analytics_events_replayed_total",
                "Spooled events later committed to the database.",
            ))?,
            spool_bytes: IntGauge::with_opts(opts(
                "context_analytics_spool_bytes",
                "Size of the on-disk spool.",
            ))?,
            spool_segments: IntGauge::with_opts(opts(
                "context_analytics_spool_segments",
                "Segment files in the on-disk spool.",
            ))?,
            spool_corrupt_segments: IntCounter::with_opts(opts(
                "context_analytics_spool_corrupt_segments_total",
                "Spool segments found corrupt, moved aside and skipped.",
            ))?,
            registry,
        };
        c.register_all()?;
        for kind in ["search", "index", "open", "snapshot"] {
            c.events_received.with_label_values(&[kind]);
        }
        for reason in ["queue_full", "file_table_full", "spool_full", "spool_error"] {
            c.events_dropped.with_label_values(&[reason]);
        }
        // Every entry point exists at zero, so rate() sees the first panic.
        for entry_point in [
            "routes",
            "middleware",
            "handle_request",
            "before_request",
            "after_request",
            "on_search_executed",
            "on_file_indexed",
            "on_file_opened",
            "on_project_snapshot",
            "shutdown",
        ] {
            c.hook_panics.with_label_values(&[entry_point]);
        }
        for window in ["5m", "1h", "24h"] {
            c.active_users.with_label_values(&[window]);
        }
        c.queue_capacity.set(config.pipeline.queue_capacity as i64);
        Ok(c)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let build_info = IntGaugeVec::new(
            opts(
                "context_analytics_build_info",
                "Plugin version and the interface it was built for; always 1.",
            ),
            &["version", "interface_version"],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), plugin_api::INTERFACE_VERSION]).set(1);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.search_requests.clone()),
            Box::new(self.search_duration.clone()),
            Box::new(self.search_results.clone()),
            Box::new(self.search_zero_results.clone()),
            Box::new(self.search_errors.clone()),
            Box::new(self.cache_lookups.clone()),
            Box::new(self.index_files.clone()),
            Box::new(self.index_errors.clone()),
            Box::new(self.index_duration.clone()),
            Box::new(self.index_bytes.clone()),
            Box::new(self.index_queue_depth.clone()),
            Box::new(self.file_opens.clone()),
            Box::new(self.file_open_rank.clone()),
            Box::new(self.active_users.clone()),
            Box::new(self.project_files.clone()),
            Box::new(self.index_coverage.clone()),
            Box::new(self.dead_code.clone()),
            Box::new(self.dead_code_files.clone()),
            Box::new(self.hot_spots.clone()),
            Box::new(self.duplication.clone()),
            Box::new(self.vector_store_bytes.clone()),
            Box::new(self.embedding_cache_bytes.clone()),
            Box::new(self.http_duration.clone()),
            Box::new(self.http_request_size.clone()),
            Box::new(self.http_response_size.clone()),
            Box::new(self.events_received.clone()),
            Box::new(self.events_dropped.clone()),
            Box::new(self.hook_panics.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.queue_capacity.clone()),
            Box::new(self.uptime.clone()),
            Box::new(self.storage_up.clone()),
            Box::new(self.storage_errors.clone()),
            Box::new(self.storage_write_duration.clone()),
            Box::new(self.events_written.clone()),
            Box::new(self.events_spooled.clone()),
            Box::new(self.events_replayed.clone()),
            Box::new(self.spool_bytes.clone()),
            Box::new(self.spool_segments.clone()),
            Box::new(self.spool_corrupt_segments.clone()),
            Box::new(build_info),
            // process_* families of the host process the plugin lives in.
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// The resolved metric handles of a project (or of `other`).
    pub fn project(&self, name: &str) -> Arc<ProjectMetrics> {
        if let Some(found) = self.projects.read().get(name) {
            return found.clone();
        }
        let mut projects = self.projects.write();
        if let Some(found) = projects.get(name) {
            return found.clone();
        }
        let exact_count = projects.values().filter(|p| p.exact).count();
        let metrics = if exact_count < self.config_max_projects && name != OTHER {
            Arc::new(self.project_metrics(Arc::from(name), true))
        } else {
            match projects.get(OTHER) {
                Some(other) => other.clone(),
                None => {
                    let other = Arc::new(self.project_metrics(Arc::from(OTHER), false));
                    projects.insert(Box::from(OTHER), other.clone());
                    other
                }
            }
        };
        projects.insert(Box::from(name), metrics.clone());
        metrics
    }

    fn project_metrics(&self, label: Arc<str>, exact: bool) -> ProjectMetrics {
        let p = &*label;
        let searches = QueryKind::ALL.map(|kind| {
            SearchStatus::ALL
                .map(|status| self.search_requests.with_label_values(&[p, kind.as_str(), status.as_str()]))
        });
        let latency = QueryKind::ALL.map(|kind| self.search_duration.with_label_values(&[p, kind.as_str()]));
        let cache = [CacheOutcome::L1, CacheOutcome::L2, CacheOutcome::L3].map(|layer| {
            ["hit", "miss"].map(|result| self.cache_lookups.with_label_values(&[p, layer.as_str(), result]))
        });
        ProjectMetrics {
            searches,
            latency,
            results: self.search_results.with_label_values(&[p]),
            zero_results: self.search_zero_results.with_label_values(&[p]),
            cache,
            opens: self.file_opens.with_label_values(&[p]),
            index_bytes: self.index_bytes.with_label_values(&[p]),
            queue_depth: self.index_queue_depth.with_label_values(&[p]),
            label,
            exact,
        }
    }

    /// Counts one search. Hot path: no allocation, no label hashing beyond
    /// the project lookup.
    pub fn record_search(&self, event: &SearchExecuted<'_>) {
        let project = self.project(event.project.as_str());
        project.searches[event.kind as usize][event.status as usize].inc();
        project.latency[event.kind as usize].observe(event.latency_ns as f64 * 1e-9);
        // Layers consulted before the answering one missed.
        let answered_at = match event.cache {
            CacheOutcome::L1 => Some(0),
            CacheOutcome::L2 => Some(1),
            CacheOutcome::L3 => Some(2),
            CacheOutcome::Miss => None,
        };
        for (layer, counters) in project.cache.iter().enumerate() {
            match answered_at {
                Some(hit) if layer == hit => {
                    counters[0].inc();
                    break;
                }
                _ => counters[1].inc(),
            }
        }
        match event.status {
            SearchStatus::Ok => {
                project.results.observe(event.result_count as f64);
                if event.result_count == 0 {
                    project.zero_results.inc();
                }
            }
            SearchStatus::Error | SearchStatus::Timeout => {
                let code = if event.error_code.is_empty() {
                    event.status.as_str()
                } else {
                    event.error_code.as_str()
                };
                let code = self.error_codes.get(code);
                self.search_errors.with_label_values(&[&*project.label, &*code]).inc();
            }
        }
    }

    pub fn record_index(&self, event: &FileIndexed<'_>) {
        let project = self.project(event.project.as_str());
        let file_type = self.file_types.get(event.file_type.as_str());
        let (p, ft) = (&*project.label, &*file_type);
        // All outcomes exist once a file type is seen, so the first failure
        // of a type shows in rate() and error ratios.
        for outcome in IndexOutcome::ALL {
            let counter = self.index_files.with_label_values(&[p, ft, outcome.as_str()]);
            if outcome == event.outcome {
                counter.inc();
            }
        }
        self.index_duration.with_label_values(&[p, ft]).observe(event.duration_ns as f64 * 1e-9);
        project.index_bytes.inc_by(event.bytes);
        project.queue_depth.set(event.queue_depth as i64);
        if !event.error_code.is_empty() {
            let code = self.error_codes.get(event.error_code.as_str());
            self.index_errors.with_label_values(&[p, &*code]).inc();
        }
    }

    pub fn record_open(&self, event: &FileOpened<'_>) {
        self.project(event.project.as_str()).opens.inc();
        self.file_open_rank.observe(f64::from(event.rank));
    }

    pub fn record_http(&self, record: &plugin_api::RequestRecord<'_>) {
        let method = match record.method.as_str() {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => "OTHER",
        };
        let route = self.routes.get(record.route.as_str());
        let status = record.status.min(999);
        let key = (method, route, status);
        let found = self.http_series.read().get(&key).cloned();
        let series = match found {
            Some(series) => series,
            None => {
                let (method, route, status) = (key.0, &*key.1, key.2);
                let code_buf = itoa_status(status);
                let code = std::str::from_utf8(&code_buf).unwrap_or("000");
                let series = Arc::new(HttpSeries {
                    duration: self.http_duration.with_label_values(&[method, route, code]),
                    request_bytes: self.http_request_size.with_label_values(&[method, route]),
                    response_bytes: self.http_response_size.with_label_values(&[method, route]),
                });
                self.http_series.write().insert(key, series.clone());
                series
            }
        };
        series.duration.observe(record.duration_ns as f64 * 1e-9);
        series.request_bytes.observe(record.request_bytes as f64);
        series.response_bytes.observe(record.response_bytes as f64);
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::with_capacity(64 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            out.push_str(&format!("# encoding failed: {e}\n"));
        }
        out
    }
}

/// The request histograms of one (method, route, status).
struct HttpSeries {
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// A 3-digit HTTP status as ASCII, without allocating.
fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [b'0' + (s / 100) as u8, b'0' + (s / 10 % 10) as u8, b'0' + (s % 10) as u8]
}
