//! `log`: writes one line per notification to the host's log.
//!
//! ```toml
//! [[plugins.analytics.config.alerting.channels]]
//! name = "host-log"
//! kind = "log"
//! options = { level = "warn" }   # optional; default: by severity
//! ```
//!
//! Without `level`, resolved notifications and `info` alerts log at info,
//! `warning` at warn, `error` and `critical` at error.

use std::sync::Arc;

use async_trait::async_trait;
use plugin_api::{HostLogger, LogLevel};

use super::{options::Options, summary};
use crate::alerting::channel::{
    Channel, ChannelContext, ChannelKind, DeliveryError, Notification, NotificationStatus, Severity,
};

inventory::submit! {
    ChannelKind {
        kind: "log",
        description: "Writes one line per notification to the host's log",
        build,
    }
}

struct LogChannel {
    logger: HostLogger,
    level: Option<LogLevel>,
}

fn build(ctx: &ChannelContext<'_>) -> Result<Arc<dyn Channel>, String> {
    let options = Options::new(ctx);
    let level =
        match options.choice("level", &["by-severity", "error", "warn", "info", "debug"], "by-severity")? {
            "error" => Some(LogLevel::Error),
            "warn" => Some(LogLevel::Warn),
            "info" => Some(LogLevel::Info),
            "debug" => Some(LogLevel::Debug),
            _ => None,
        };
    options.finish()?;
    Ok(Arc::new(LogChannel { logger: ctx.logger.clone(), level }))
}

#[async_trait]
impl Channel for LogChannel {
    async fn deliver(&self, notification: &Notification) -> Result<(), DeliveryError> {
        let level = self.level.unwrap_or(match (notification.status, notification.severity) {
            (NotificationStatus::Resolved, _) | (_, Severity::Info) => LogLevel::Info,
            (_, Severity::Warning) => LogLevel::Warn,
            (_, Severity::Error | Severity::Critical) => LogLevel::Error,
        });
        self.logger.log(level, &line(notification));
        Ok(())
    }
}

/// `alert FIRING critical rule="…" summary="…" value=… threshold=… labels={…} id=… fingerprint=…`
pub fn line(n: &Notification) -> String {
    let status = match n.status {
        NotificationStatus::Firing => "FIRING",
        NotificationStatus::Resolved => "RESOLVED",
    };
    let labels = n.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(",");
    let mut line = format!("alert {status} {} rule={:?} summary={:?}", n.severity, n.rule, summary(n));
    if let Some(value) = n.value {
        line.push_str(&format!(" value={value}"));
    }
    if let Some(threshold) = n.threshold {
        line.push_str(&format!(" threshold={threshold}"));
    }
    if n.repeat > 0 {
        line.push_str(&format!(" repeat={}", n.repeat));
    }
    line.push_str(&format!(" labels={{{labels}}} starts_at={}", n.starts_at));
    if let Some(ends_at) = &n.ends_at {
        line.push_str(&format!(" ends_at={ends_at}"));
    }
    line.push_str(&format!(" id={} fingerprint={}", n.id, n.fingerprint));
    // One line, whatever the annotations hold.
    line.replace(['\n', '\r'], " ")
}
