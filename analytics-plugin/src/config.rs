//! The plugin's configuration: the `[plugins.analytics.config]` table of the
//! host config, handed over as TOML text. One table per component; unknown
//! keys are errors that name the key and list the accepted ones; every key
//! has a default that works.

use serde::Deserialize;

use crate::{
    alerting::config::AlertingConfig,
    api::auth::AuthConfig,
    storage::{RetentionConfig, StorageConfig, privacy::PrivacyConfig},
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Distinct `project` label values kept on metrics; later projects are
    /// counted under `other` (their events are still stored in full).
    pub max_projects: usize,
    /// Distinct values kept per other bounded label (file types, error
    /// codes, HTTP routes); the rest fold into `other`.
    pub max_label_values: usize,
    /// A file is a hot spot when accessed more than this many times the
    /// project's average accesses per indexed file.
    pub hot_spot_factor: f64,
    /// Files tracked in memory for the code-health gauges, over all
    /// projects; files beyond it are not tracked (and counted as dropped).
    pub max_tracked_files: usize,
    /// Threads of the plugin's own tokio runtime.
    pub worker_threads: usize,
    pub pipeline: PipelineConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub privacy: PrivacyConfig,
    pub auth: AuthConfig,
    pub alerting: AlertingConfig,
}

/// `[plugins.analytics.config.pipeline]`: between the hooks and storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Events held between the hooks and the writer, in the event queue
    /// file (`events.queue` in the data dir, 512 bytes per event: 32 MiB by
    /// default), which survives a crash of the process. When it is full
    /// the hook drops the event (counted): the writer spills to the spool
    /// long before that.
    pub queue_capacity: usize,
    /// How often the event journal (the queue's copy on disk) is synced: on
    /// power loss (not on a crash of the process) at most this window of
    /// events is lost.
    pub fsync_interval_ms: u64,
    /// Folder of the event queue's file; empty: `/dev/shm` (tmpfs) when it
    /// is there and writable, else the plugin's data dir.
    pub queue_dir: String,
    /// A write to the database is started once this many events wait...
    pub batch_max_events: usize,
    /// ...or once the oldest waiting event is this old.
    pub flush_interval_ms: u64,
    /// Cap of the on-disk spool; beyond it new events are dropped (counted)
    /// and the oldest spooled data is kept.
    pub spool_max_bytes: u64,
    /// Size at which a spool segment file is closed and a new one started.
    pub spool_segment_bytes: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            fsync_interval_ms: 1_000,
            queue_dir: String::new(),
            batch_max_events: 8_192,
            flush_interval_ms: 1_000,
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 8 << 20,
        }
    }
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            max_projects: 50,
            max_label_values: 64,
            hot_spot_factor: 3.0,
            max_tracked_files: 2_000_000,
            worker_threads: 2,
            pipeline: PipelineConfig::default(),
            storage: StorageConfig::default(),
            retention: RetentionConfig::default(),
            privacy: PrivacyConfig::default(),
            auth: AuthConfig::default(),
            alerting: AlertingConfig::default(),
        }
    }
}

const SECTION: &str = "[plugins.analytics.config]";

impl AnalyticsConfig {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let place =
                e.span().map(|s| line_of(text, s.start)).map(|l| format!(" (line {l})")).unwrap_or_default();
            format!("invalid {SECTION}{place}: {}", e.message())
        })?;
        config.validate().map_err(|e| format!("invalid {SECTION}: {e}"))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_projects", self.max_projects),
            ("max_label_values", self.max_label_values),
            ("worker_threads", self.worker_threads),
            ("pipeline.queue_capacity", self.pipeline.queue_capacity),
            ("pipeline.fsync_interval_ms", self.pipeline.fsync_interval_ms as usize),
            ("pipeline.batch_max_events", self.pipeline.batch_max_events),
            ("storage.max_connections", self.storage.max_connections as usize),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} = 0 (expected at least 1)"));
        }
        self.alerting.validate()?;
        if !(self.hot_spot_factor.is_finite() && self.hot_spot_factor > 1.0) {
            return Err(format!("hot_spot_factor = {} (expected a number above 1)", self.hot_spot_factor));
        }
        if self.pipeline.spool_segment_bytes < 4096
            || self.pipeline.spool_max_bytes < self.pipeline.spool_segment_bytes
        {
            return Err(format!(
                "pipeline.spool_segment_bytes = {} and spool_max_bytes = {} (expected 4096 <= segment <= max)",
                self.pipeline.spool_segment_bytes, self.pipeline.spool_max_bytes
            ));
        }
        self.retention.validate()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_uses_defaults() {
        let config = AnalyticsConfig::from_toml("").unwrap();
        assert_eq!(config.max_projects, 50);
        assert_eq!(config.pipeline.queue_capacity, 65_536);
        assert_eq!(config.storage.url, "sqlite://analytics.db");
        assert_eq!(config.retention.raw_days, 7);
    }

    #[test]
    fn unknown_key_is_named_with_the_accepted_ones() {
        let error = AnalyticsConfig::from_toml("max_project = 3").unwrap_err();
        assert!(
            error.starts_with("invalid [plugins.analytics.config] (line 1): unknown field `max_project`"),
            "{error}"
        );
        assert!(error.contains("`max_projects`"), "{error}");
        let error = AnalyticsConfig::from_toml("[storage]\nurl = \"sqlite://x\"\nurll = 1").unwrap_err();
        assert!(error.contains("(line 3): unknown field `urll`"), "{error}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = AnalyticsConfig::from_toml("[pipeline]\nqueue_capacity = 0").unwrap_err();
        assert_eq!(
            error,
            "invalid [plugins.analytics.config]: pipeline.queue_capacity = 0 (expected at least 1)"
        );
        let error = AnalyticsConfig::from_toml("[privacy]\nqueries = \"encrypted\"").unwrap_err();
        assert!(
            error.contains("unknown variant `encrypted`, expected one of `full`, `hashed`, `none`"),
            "{error}"
        );
    }
}
