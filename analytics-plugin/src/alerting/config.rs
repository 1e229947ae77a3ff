//! `[plugins.analytics.config.alerting]`: evaluation, the rules, the
//! channels they are routed to, and delivery. Rules written in the config are
//! the base; rules created, changed or deleted through the API are stored in
//! the database and override them by name.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{anomaly::AnomalyConfig, channel::Severity};

/// A duration written like Prometheus writes them: `500ms`, `30s`, `5m`,
/// `1h`, `1d`, or combined (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn mins(m: u64) -> Self {
        Dur(Duration::from_secs(m * 60))
    }
    pub fn as_us(self) -> i64 {
        self.0.as_micros() as i64
    }

    pub fn parse(text: &str) -> Result<Dur, String> {
        let bad = || format!("'{text}' is not a duration (expected e.g. 500ms, 30s, 5m, 1h, 1d or 1h30m)");
        let mut total = Duration::ZERO;
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
                "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
                "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?),
                "w" => Duration::from_secs(n.checked_mul(7 * 86_400).ok_or_else(bad)?),
                _ => return Err(bad()),
            };
            total = total.checked_add(unit).ok_or_else(bad)?;
            rest = &rest[unit_len..];
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis() as u64;
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let mut s = ms / 1000;
        for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if s >= size {
                write!(f, "{}{unit}", s / size)?;
                s %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Dur::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a rule watches: one of the plugin's own measures over the rule's
/// window. Ratios are 0..1, latency in milliseconds, rates per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Search latency at `percentile` (ms), from the stored searches.
    SearchLatency,
    /// Searches answered by any cache layer / all searches.
    CacheHitRate,
    /// Failed searches / all searches.
    SearchErrorRate,
    /// Failed or refused files / all files indexed.
    IndexErrorRate,
    /// Files waiting in the index queue (largest seen in the window).
    IndexQueueDepth,
    /// CPU seconds per second used by this server process (1 = one core).
    Cpu,
    /// Resident memory of this server process, bytes.
    ResidentMemory,
    /// Distinct users searching in the window.
    ActiveUsers,
    /// Searches per second over the window.
    RequestRate,
    /// Indexed files never returned nor opened in the window / indexed files.
    DeadCodeRatio,
    /// Indexed files / files in the project (latest snapshot).
    IndexCoverage,
}

impl Measure {
    pub const ALL: [Measure; 11] = [
        Measure::SearchLatency,
        Measure::CacheHitRate,
        Measure::SearchErrorRate,
        Measure::IndexErrorRate,
        Measure::IndexQueueDepth,
        Measure::Cpu,
        Measure::ResidentMemory,
        Measure::ActiveUsers,
        Measure::RequestRate,
        Measure::DeadCodeRatio,
        Measure::IndexCoverage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Measure::SearchLatency => "search_latency",
            Measure::CacheHitRate => "cache_hit_rate",
            Measure::SearchErrorRate => "search_error_rate",
            Measure::IndexErrorRate => "index_error_rate",
            Measure::IndexQueueDepth => "index_queue_depth",
            Measure::Cpu => "cpu",
            Measure::ResidentMemory => "resident_memory",
            Measure::ActiveUsers => "active_users",
            Measure::RequestRate => "request_rate",
            Measure::DeadCodeRatio => "dead_code_ratio",
            Measure::IndexCoverage => "index_coverage",
        }
    }

    /// Measures of this process, not of the stored events: no project, and
    /// each instance sees only itself.
    pub fn is_process(self) -> bool {
        matches!(self, Measure::Cpu | Measure::ResidentMemory)
    }
}

/// How a measured value is compared with the threshold, or `anomalous`:
/// compared with its own seasonal baseline (see `anomaly`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "anomalous")]
    Anomalous,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Anomalous => false,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Anomalous => "anomalous",
        }
    }
}

/// One alert rule (`[[plugins.analytics.config.alerting.rules]]`, or the
/// JSON body of `POST /alerts/rules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; becomes the `alertname` label.
    pub name: String,
    pub measure: Measure,
    /// For `search_latency`: the percentile, 0 < p < 100 (default 95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// The window the measure is computed over, ending now.
    #[serde(default = "default_window")]
    pub window: Dur,
    pub op: Op,
    /// Required unless `op` is `anomalous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How long the condition must hold (pending) before the alert fires.
    #[serde(default, rename = "for")]
    pub for_: Dur,
    /// How long a firing alert stays firing after its condition stops
    /// holding (damps flapping); default `alerting.keep_firing_for`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<Dur>,
    pub severity: Severity,
    /// Searches (or indexed files) the window needs before a ratio or
    /// latency is judged: one failed search out of one is not an outage.
    #[serde(default)]
    pub min_samples: u64,
    /// One alert per project instead of one for the whole server.
    #[serde(default)]
    pub per_project: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `runbook_url`, …; `{{ $value }}`,
    /// `{{ $threshold }}` and `{{ $labels.NAME }}` are filled in.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// A still-firing alert is notified again after this long (0: never).
    #[serde(default = "default_repeat")]
    pub repeat_interval: Dur,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_window() -> Dur {
    Dur::mins(5)
}
fn default_repeat() -> Dur {
    Dur::mins(240)
}
fn default_true() -> bool {
    true
}

const NAME_RULE: &str = "1 to 128 characters from A-Z a-z 0-9 _ - . :";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

impl RuleConfig {
    /// Checks what serde cannot; the message names the rule and the key.
    pub fn validate(&self) -> Result<(), String> {
        let at = |key: &str| format!("rule '{}': {key}", self.name);
        if !valid_name(&self.name) {
            return Err(format!("rule name '{}' is not allowed: {NAME_RULE}", self.name));
        }
        match (self.op, self.threshold) {
            (Op::Anomalous, Some(_)) => {
                return Err(format!("{} is not used with op = \"anomalous\" (remove it)", at("threshold")));
            }
            (Op::Anomalous, None) if self.measure != Measure::RequestRate => {
                return Err(format!(
                    "{} \"anomalous\" is available for measure request_rate only (got {})",
                    at("op"),
                    self.measure.name()
                ));
            }
            (Op::Anomalous, None) => {}
            (_, None) => {
                return Err(format!("{} is required with op = \"{}\"", at("threshold"), self.op.as_str()));
            }
            (_, Some(t)) if !t.is_finite() => {
                return Err(format!("{} must be a finite number", at("threshold")));
            }
            _ => {}
        }
        if let Some(p) = self.percentile {
            if self.measure != Measure::SearchLatency {
                return Err(format!("{} applies to measure search_latency only", at("percentile")));
            }
            if !(p > 0.0 && p < 100.0) {
                return Err(format!("{} = {p} is out of range (0 < percentile < 100)", at("percentile")));
            }
        }
        if self.window.0 < Duration::from_secs(1) || self.window.0 > Duration::from_secs(7 * 86_400) {
            return Err(format!("{} = {} is out of range (1s to 7d)", at("window"), self.window));
        }
        let year = Duration::from_secs(365 * 86_400);
        for (key, d) in [
            ("for", Some(self.for_)),
            ("keep_firing_for", self.keep_firing_for),
            ("repeat_interval", Some(self.repeat_interval)),
        ] {
            if let Some(d) = d.filter(|d| d.0 > year) {
                return Err(format!("{} = {d} is out of range (at most 365d)", at(key)));
            }
        }
        if self.per_project && self.measure.is_process() {
            return Err(format!(
                "{} cannot be used with measure {}: it measures the server process, not a project",
                at("per_project"),
                self.measure.name()
            ));
        }
        for key in self.labels.keys().chain(self.annotations.keys()) {
            if !valid_name(key) || key.contains(['.', ':', '-']) {
                return Err(format!(
                    "{} key '{key}' is not allowed (A-Z a-z 0-9 _)",
                    at("labels/annotations")
                ));
            }
        }
        for reserved in ["alertname", "severity", "project"] {
            if self.labels.contains_key(reserved) {
                return Err(format!(
                    "{} '{reserved}' is set by the engine and cannot be given",
                    at("labels")
                ));
            }
        }
        Ok(())
    }

    pub fn percentile(&self) -> f64 {
        self.percentile.unwrap_or(95.0)
    }
}

/// Where notifications go (`[[plugins.analytics.config.alerting.channels]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Unique name, used in delivery records and metrics.
    pub name: String,
    /// A built-in kind (webhook, slack, email, alertmanager, log) or the kind
    /// an external `.so` in `channels_dir` provides.
    pub kind: String,
    /// Severities routed here (default: all).
    #[serde(default = "all_severities")]
    pub severities: Vec<Severity>,
    /// Labels an alert must carry, exactly, to be routed here (default: none).
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Whether resolved notifications are sent here too.
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// The kind's own options; secrets are read from environment variables
    /// named by `*_env` options, never written here.
    #[serde(default)]
    pub options: toml::Table,
}

fn all_severities() -> Vec<Severity> {
    Severity::ALL.to_vec()
}

impl ChannelConfig {
    pub fn routes(&self, severity: Severity, labels: &BTreeMap<String, String>) -> bool {
        self.severities.contains(&severity) && self.matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Retries of one notification on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Upper bound on one attempt.
    pub timeout: Dur,
    /// First retry delay; doubled each attempt (with ±20% jitter)...
    pub initial_backoff: Dur,
    /// ...up to this.
    pub max_backoff: Dur,
    /// Retrying stops this long after the first attempt: the notification
    /// becomes a dead letter (API and `context_analytics_alert_dead_letters_total`).
    pub horizon: Dur,
    /// Notifications waiting per channel; beyond it new ones are dead letters.
    pub queue_capacity: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: Dur::secs(10),
            initial_backoff: Dur::secs(1),
            max_backoff: Dur::mins(5),
            horizon: Dur::mins(60),
            queue_capacity: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    pub enabled: bool,
    /// How often the rules are evaluated (by the leader instance).
    pub evaluation_interval: Dur,
    /// Default `keep_firing_for` of every rule.
    pub keep_firing_for: Dur,
    /// Ship the built-in rules (the seed's defaults); a rule of the same name
    /// in `rules` or created through the API replaces one.
    pub default_rules: bool,
    pub rules: Vec<RuleConfig>,
    pub channels: Vec<ChannelConfig>,
    /// Folder of external channel `.so` files (relative to the plugin's data
    /// folder); none loaded when absent.
    pub channels_dir: Option<String>,
    /// Base of the links in notifications (`generator_url`), e.g. the
    /// server's public URL.
    pub external_url: String,
    pub delivery: DeliveryConfig,
    /// The detector of `anomalous` rules. Its unit is searches per 5
    /// minutes: the rule's window scaled to 5 minutes, against the hours
    /// around the same time of previous weeks (hourly rollup, scaled alike).
    pub anomaly: AnomalyConfig,
    /// History rows kept, in days.
    pub history_days: u32,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            evaluation_interval: Dur::secs(15),
            keep_firing_for: Dur::mins(2),
            default_rules: true,
            rules: Vec::new(),
            channels: Vec::new(),
            channels_dir: None,
            external_url: "http://127.0.0.1:8080".to_owned(),
            delivery: DeliveryConfig::default(),
            anomaly: AnomalyConfig::default(),
            history_days: 90,
        }
    }
}

impl AlertingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.evaluation_interval.0 < Duration::from_millis(100) {
            return Err(format!(
                "alerting.evaluation_interval = {} is too short (at least 100ms)",
                self.evaluation_interval
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for rule in &self.rules {
            rule.validate().map_err(|e| format!("alerting.rules: {e}"))?;
            if !names.insert(&rule.name) {
                return Err(format!("alerting.rules: rule '{}' is defined twice", rule.name));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for channel in &self.channels {
            if !valid_name(&channel.name) {
                return Err(format!(
                    "alerting.channels: name '{}' is not allowed: {NAME_RULE}",
                    channel.name
                ));
            }
            if !names.insert(&channel.name) {
                return Err(format!("alerting.channels: channel '{}' is defined twice", channel.name));
            }
            if channel.severities.is_empty() {
                return Err(format!(
                    "alerting.channels.\"{}\".severities is empty: nothing would be routed to it",
                    channel.name
                ));
            }
        }
        let d = &self.delivery;
        if d.initial_backoff.0.is_zero() || d.max_backoff < d.initial_backoff {
            return Err("alerting.delivery: initial_backoff must be > 0 and <= max_backoff".to_owned());
        }
        if d.timeout.0.is_zero() || d.queue_capacity == 0 {
            return Err("alerting.delivery: timeout and queue_capacity must be > 0".to_owned());
        }
        self.anomaly.validate().map_err(|e| format!("alerting.anomaly: {e}"))?;
        Ok(())
    }

    /// The rules from the config: the defaults (unless switched off) with
    /// configured rules replacing defaults of the same name.
    pub fn config_rules(&self) -> Vec<RuleConfig> {
        let mut rules: BTreeMap<String, RuleConfig> = BTreeMap::new();
        if self.default_rules {
            for rule in default_rules() {
                rules.insert(rule.name.clone(), rule);
            }
        }
        for rule in &self.rules {
            rules.insert(rule.name.clone(), rule.clone());
        }
        rules.into_values().collect()
    }
}

const RUNBOOK: &str =
    "https://github.com/context-analytics/context-analytics/blob/main/alert_rules/runbook.md";

/// The seed's default rules, named and set like the Prometheus rules in
/// `alert_rules/` so an operator meets the same alerts either way.
pub fn default_rules() -> Vec<RuleConfig> {
    struct D {
        name: &'static str,
        measure: Measure,
        percentile: Option<f64>,
        window: Dur,
        op: Op,
        threshold: Option<f64>,
        for_: Dur,
        severity: Severity,
        min_samples: u64,
        per_project: bool,
        summary: &'static str,
    }
    let d = |name, measure, op, threshold, for_, severity, summary| D {
        name,
        measure,
        percentile: None,
        window: Dur::mins(5),
        op,
        threshold,
        for_,
        severity,
        min_samples: 0,
        per_project: true,
        summary,
    };
    let rules = [
        D {
            percentile: Some(95.0),
            min_samples: 20,
            ..d(
                "ContextSearchLatencyHigh",
                Measure::SearchLatency,
                Op::Gt,
                Some(500.0),
                Dur::mins(5),
                Severity::Warning,
                "p95 search latency of {{ $labels.project }} is {{ $value }} ms (threshold {{ $threshold }} ms)",
            )
        },
        D {
            percentile: Some(95.0),
            min_samples: 20,
            ..d(
                "ContextSearchLatencyCritical",
                Measure::SearchLatency,
                Op::Gt,
                Some(2000.0),
                Dur::mins(2),
                Severity::Critical,
                "p95 search latency of {{ $labels.project }} is {{ $value }} ms (threshold {{ $threshold }} ms)",
            )
        },
        D {
            min_samples: 50,
            ..d(
                "ContextSearchCacheHitRateLow",
                Measure::CacheHitRate,
                Op::Lt,
                Some(0.5),
                Dur::mins(15),
                Severity::Warning,
                "cache hit rate of {{ $labels.project }} is {{ $value }} (below {{ $threshold }})",
            )
        },
        D {
            min_samples: 20,
            ..d(
                "ContextSearchErrorRateHigh",
                Measure::SearchErrorRate,
                Op::Gt,
                Some(0.05),
                Dur::mins(5),
                Severity::Warning,
                "search error rate of {{ $labels.project }} is {{ $value }} (above {{ $threshold }})",
            )
        },
        D {
            window: Dur::mins(10),
            min_samples: 20,
            ..d(
                "ContextIndexErrorRateHigh",
                Measure::IndexErrorRate,
                Op::Gt,
                Some(0.1),
                Dur::mins(10),
                Severity::Warning,
                "index error rate of {{ $labels.project }} is {{ $value }} (above {{ $threshold }})",
            )
        },
        d(
            "ContextIndexQueueLarge",
            Measure::IndexQueueDepth,
            Op::Gt,
            Some(1000.0),
            Dur::mins(10),
            Severity::Warning,
            "{{ $value }} files wait in the index queue of {{ $labels.project }}",
        ),
        D {
            per_project: false,
            ..d(
                "ContextCPUUsageHigh",
                Measure::Cpu,
                Op::Gt,
                Some(0.9),
                Dur::mins(10),
                Severity::Warning,
                "the server uses {{ $value }} cores of CPU",
            )
        },
        D {
            per_project: false,
            ..d(
                "ContextMemoryUsageHigh",
                Measure::ResidentMemory,
                Op::Gt,
                Some(2.0 * 1024.0 * 1024.0 * 1024.0),
                Dur::mins(10),
                Severity::Warning,
                "the server's resident memory is {{ $value }} bytes",
            )
        },
        D {
            per_project: false,
            ..d(
                "ContextSearchTrafficSpike",
                Measure::RequestRate,
                Op::Anomalous,
                None,
                Dur::mins(5),
                Severity::Warning,
                "search traffic is {{ $value }} searches/s, far from its usual level for this hour of the week",
            )
        },
        D {
            window: Dur::mins(30),
            ..d(
                "ContextIndexCoverageLow",
                Measure::IndexCoverage,
                Op::Lt,
                Some(0.8),
                Dur::mins(30),
                Severity::Warning,
                "only {{ $value }} of the files of {{ $labels.project }} are indexed",
            )
        },
    ];
    rules
        .into_iter()
        .map(|r| RuleConfig {
            name: r.name.to_owned(),
            measure: r.measure,
            percentile: r.percentile,
            window: r.window,
            op: r.op,
            threshold: r.threshold,
            for_: r.for_,
            keep_firing_for: None,
            severity: r.severity,
            min_samples: r.min_samples,
            per_project: r.per_project,
            labels: BTreeMap::new(),
            annotations: BTreeMap::from([
                ("summary".to_owned(), r.summary.to_owned()),
                ("runbook_url".to_owned(), format!("{RUNBOOK}#{}", r.name.to_lowercase())),
            ]),
            repeat_interval: default_repeat(),
            enabled: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_like_prometheus() {
        assert_eq!(Dur::parse("5m"), Ok(Dur::mins(5)));
        assert_eq!(Dur::parse("1h30m"), Ok(Dur::mins(90)));
        assert_eq!(Dur::parse("250ms"), Ok(Dur(Duration::from_millis(250))));
        assert_eq!(Dur::mins(90).to_string(), "1h30m");
        assert_eq!(Dur(Duration::from_millis(250)).to_string(), "250ms");
        assert_eq!(Dur::parse("0s").unwrap().to_string(), "0s");
        for bad in ["", "5", "m", "5 minutes", "-1s", "1y"] {
            let e = Dur::parse(bad).unwrap_err();
            assert!(e.contains("expected e.g. 500ms"), "{bad}: {e}");
        }
    }

    #[test]
    fn default_rules_are_valid_and_cover_the_seed() {
        let rules = default_rules();
        for rule in &rules {
            rule.validate().unwrap();
        }
        let measures: std::collections::BTreeSet<_> = rules.iter().map(|r| r.measure.name()).collect();
        for m in [
            "search_latency",
            "cache_hit_rate",
            "search_error_rate",
            "index_error_rate",
            "index_queue_depth",
            "cpu",
            "resident_memory",
            "request_rate",
            "index_coverage",
        ] {
            assert!(measures.contains(m), "{m}");
        }
        AlertingConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_rules_say_what_and_where() {
        let base = default_rules().remove(0);
        let mut r = base.clone();
        r.threshold = None;
        assert_eq!(
            r.validate().unwrap_err(),
            "rule 'ContextSearchLatencyHigh': threshold is required with op = \">\""
        );
        let mut r = base.clone();
        r.percentile = Some(100.0);
        assert!(
            r.validate().unwrap_err().contains("percentile = 100 is out of range (0 < percentile < 100)")
        );
        let mut r = base.clone();
        r.name = "bad name".into();
        assert!(r.validate().unwrap_err().contains("'bad name' is not allowed"));
        let mut r = base;
        r.labels.insert("severity".into(), "x".into());
        assert!(r.validate().unwrap_err().contains("'severity' is set by the engine"));
        let toml_err = toml::from_str::<AlertingConfig>(
            "[[rules]]\nname='x'\nmeasure='latency'\nop='>'\nseverity='warning'",
        )
        .unwrap_err()
        .to_string();
        assert!(toml_err.contains("unknown variant `latency`"), "{toml_err}");
        assert!(toml_err.contains("search_latency"), "{toml_err}");
    }
}
