//! What every alert channel is: the contract between the alert engine (which
//! decides *what* to send, once per state change) and a channel (which knows
//! *how* to send it). Built-in channels live in `channels/<kind>/` and
//! register a [`ChannelKind`] through `inventory`; external channels are
//! `.so` files adapted to the same [`Channel`] trait by `channels/external/`.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// How bad an alert is, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::Info, Severity::Warning, Severity::Error, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which state change a notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    Firing,
    Resolved,
}

/// One notification: one state change (or one repeat) of one alert. The same
/// value is handed to every channel it is routed to; retries resend it
/// unchanged, so receivers can de-duplicate on `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per alert state change and repeat: `<fingerprint>-<seq>`.
    pub id: String,
    pub status: NotificationStatus,
    /// The rule's name (also in `labels.alertname`).
    pub rule: String,
    pub severity: Severity,
    /// Stable for one alert (rule + its labels), over all its state changes.
    pub fingerprint: String,
    /// `alertname`, `severity`, `project` when grouped, and the rule's labels.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `runbook_url` and the rule's other annotations,
    /// with `{{ $value }}`, `{{ $threshold }}` and `{{ $labels.x }}` filled in.
    pub annotations: BTreeMap<String, String>,
    /// The measured value that made the rule fire (or the last one before it
    /// resolved); absent when the measure had no data.
    pub value: Option<f64>,
    /// The rule's threshold; absent for anomaly rules.
    pub threshold: Option<f64>,
    /// RFC 3339, when the alert started firing.
    pub starts_at: String,
    /// RFC 3339, when it resolved (resolved notifications only).
    pub ends_at: Option<String>,
    /// A link back to the alert in the analytics API.
    pub generator_url: String,
    /// 0 for the notification of the state change itself, n for its n-th repeat.
    pub repeat: u32,
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again (timeouts, connection refused, 5xx, 429): after
    /// `after` when the receiver said so (`Retry-After`), else after the
    /// queue's exponential backoff.
    #[error("{reason}")]
    Retry { reason: String, after: Option<Duration> },
    /// Will never succeed as configured (4xx other than 408/429, a payload the
    /// receiver refuses): goes straight to the dead letters.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl DeliveryError {
    pub fn retry(reason: impl Into<String>) -> Self {
        DeliveryError::Retry { reason: reason.into(), after: None }
    }
    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent { reason: reason.into() }
    }
}

/// A configured channel instance, ready to deliver.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Sends one notification, once; the caller retries. Must finish within
    /// the context's timeout (a channel that times out returns `Retry`).
    async fn deliver(&self, notification: &Notification) -> Result<(), DeliveryError>;
}

/// Where a channel kind comes from, as listed by `GET /alerts/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum ChannelSource {
    Builtin,
    External { path: String },
}

/// What a channel kind's constructor gets.
pub struct ChannelContext<'a> {
    /// The channel's configured name (for messages: `alerting.channels."name"`).
    pub name: &'a str,
    /// The channel's `options` table from the config, as written.
    pub options: &'a toml::Table,
    /// Reads a secret from the environment (`*_env` options name the variable).
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    /// Upper bound on one delivery attempt.
    pub timeout: Duration,
    /// The host's log (the `log` channel writes here).
    pub logger: plugin_api::HostLogger,
}

impl fmt::Debug for ChannelContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelContext").field("name", &self.name).field("options", &self.options).finish()
    }
}

/// Builds a channel from its options, or says which option is wrong and
/// what it accepts.
pub type BuildChannel = fn(&ChannelContext<'_>) -> Result<Arc<dyn Channel>, String>;

/// A built-in channel kind, registered with `inventory::submit!` from its
/// own folder under `channels/`.
#[derive(Debug)]
pub struct ChannelKind {
    pub kind: &'static str,
    pub description: &'static str,
    pub build: BuildChannel,
}

inventory::collect!(ChannelKind);

/// Every built-in kind, sorted by name (inventory's order is not stable).
pub fn builtin_kinds() -> Vec<&'static ChannelKind> {
    let mut kinds: Vec<&'static ChannelKind> = inventory::iter::<ChannelKind>.into_iter().collect();
    kinds.sort_by_key(|k| k.kind);
    kinds
}
