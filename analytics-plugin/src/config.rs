//! The plugin's configuration: the `[plugins.analytics.config]` table of the
//! host config, handed over as TOML text. Unknown keys are errors that name
//! the key and list the accepted ones.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Distinct `project` label values kept on metrics; later projects are
    /// counted under `other` (their events are still stored in full).
    pub max_projects: usize,
    /// Distinct values kept per other bounded label (file types, error
    /// codes, HTTP routes); the rest fold into `other`.
    pub max_label_values: usize,
    /// Events buffered between the hooks and the pipeline worker.
    pub queue_capacity: usize,
    /// Largest batch the worker takes from the queue at once.
    pub batch_max_events: usize,
    /// Longest time an event waits in the queue when traffic is low.
    pub batch_max_wait_ms: u64,
    /// A file is a hot spot when accessed more than this many times the
    /// project's average accesses per indexed file.
    pub hot_spot_factor: f64,
    /// Files tracked in memory for the code-health gauges, over all
    /// projects; files beyond it are not tracked (and counted as dropped).
    pub max_tracked_files: usize,
    /// Threads of the plugin's own tokio runtime.
    pub worker_threads: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            max_projects: 50,
            max_label_values: 64,
            queue_capacity: 65_536,
            batch_max_events: 4_096,
            batch_max_wait_ms: 5,
            hot_spot_factor: 3.0,
            max_tracked_files: 2_000_000,
            worker_threads: 2,
        }
    }
}

impl AnalyticsConfig {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text)
            .map_err(|e| format!("invalid [plugins.analytics.config]: {}", e.message()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_projects", self.max_projects),
            ("max_label_values", self.max_label_values),
            ("queue_capacity", self.queue_capacity),
            ("batch_max_events", self.batch_max_events),
            ("worker_threads", self.worker_threads),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("invalid [plugins.analytics.config]: {key} = 0 (expected at least 1)"));
            }
        }
        if !(self.hot_spot_factor.is_finite() && self.hot_spot_factor > 1.0) {
            return Err(format!(
                "invalid [plugins.analytics.config]: hot_spot_factor = {} (expected a number above 1)",
                self.hot_spot_factor
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_uses_defaults() {
        let config = AnalyticsConfig::from_toml("").unwrap();
        assert_eq!(config.max_projects, 50);
        assert_eq!(config.queue_capacity, 65_536);
    }

    #[test]
    fn unknown_key_is_named_with_the_accepted_ones() {
        let error = AnalyticsConfig::from_toml("max_project = 3").unwrap_err();
        assert!(error.contains("unknown field `max_project`"), "{error}");
        assert!(error.contains("`max_projects`"), "{error}");
    }

    #[test]
    fn zero_capacity_is_refused() {
        let error = AnalyticsConfig::from_toml("queue_capacity = 0").unwrap_err();
        assert_eq!(error, "invalid [plugins.analytics.config]: queue_capacity = 0 (expected at least 1)");
    }
}
