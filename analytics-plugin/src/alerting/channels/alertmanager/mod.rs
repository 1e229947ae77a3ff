//! `alertmanager`: hands alerts to a real Prometheus Alertmanager through
//! its API (`POST <url>/api/v2/alerts`, a list of postableAlerts), so its
//! routing, grouping, inhibition and silences apply.
//!
//! ```toml
//! [[plugins.analytics.config.alerting.channels]]
//! name = "am"
//! kind = "alertmanager"
//! options = { url = "http://alertmanager:9093" }
//! ```
//!
//! - `url` or `url_env`: the Alertmanager's base URL (with its route prefix
//!   if it has one); `/api/v2/alerts` is appended.
//! - `headers`: extra request headers (for a proxy in front of it).
//!
//! A firing alert is posted without `endsAt`: Alertmanager keeps it active
//! for its `resolve_timeout`, and each repeat refreshes it. A resolved one
//! carries `endsAt`, which resolves it at once.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{format_value, http, options::Options};
use crate::alerting::channel::{
    Channel, ChannelContext, ChannelKind, DeliveryError, Notification, NotificationStatus,
};

inventory::submit! {
    ChannelKind {
        kind: "alertmanager",
        description: "Posts alerts to a Prometheus Alertmanager (/api/v2/alerts)",
        build,
    }
}

struct Alertmanager {
    endpoint: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
}

fn build(ctx: &ChannelContext<'_>) -> Result<Arc<dyn Channel>, String> {
    let options = Options::new(ctx);
    let base = options.url("url", Some("url_env"))?;
    let headers = http::headers_option(&options, "headers")?;
    options.finish()?;
    let endpoint = alerts_endpoint(&base);
    let client = http::client(ctx.timeout)?;
    Ok(Arc::new(Alertmanager { endpoint, headers, client }))
}

/// `<base>/api/v2/alerts`, keeping any route prefix of the base.
pub fn alerts_endpoint(base: &reqwest::Url) -> reqwest::Url {
    let mut url = base.clone();
    let path = format!("{}/api/v2/alerts", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

#[async_trait]
impl Channel for Alertmanager {
    async fn deliver(&self, notification: &Notification) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(&postable_alerts(notification))
            .map_err(|e| DeliveryError::permanent(e.to_string()))?;
        http::post_json(&self.client, &self.endpoint, self.headers.clone(), body).await
    }
}

/// The request body: one postableAlert. Alertmanager identifies an alert by
/// its label set, so the labels go as they are; the value and threshold
/// become annotations when the rule did not set ones of those names.
pub fn postable_alerts(n: &Notification) -> Value {
    let mut annotations = n.annotations.clone();
    if let Some(value) = n.value {
        annotations.entry("value".to_owned()).or_insert_with(|| format_value(value));
    }
    if let Some(threshold) = n.threshold {
        annotations.entry("threshold".to_owned()).or_insert_with(|| format_value(threshold));
    }
    let mut alert = json!({
        "labels": n.labels,
        "annotations": annotations,
        "startsAt": n.starts_at,
        "generatorURL": n.generator_url,
    });
    if n.status == NotificationStatus::Resolved {
        alert["endsAt"] = json!(n.ends_at.clone().unwrap_or_else(|| crate::time::format_rfc3339(now_us())));
    }
    json!([alert])
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keeps_a_route_prefix() {
        let base = reqwest::Url::parse("http://am:9093/").unwrap();
        assert_eq!(alerts_endpoint(&base).as_str(), "http://am:9093/api/v2/alerts");
        let base = reqwest::Url::parse("https://ops.example.com/alertmanager/?x=1").unwrap();
        assert_eq!(alerts_endpoint(&base).as_str(), "https://ops.example.com/alertmanager/api/v2/alerts");
    }
}
