//! `webhook`: POSTs each notification as JSON to a URL.
//!
//! ```toml
//! [[plugins.analytics.config.alerting.channels]]
//! name = "ops-hook"
//! kind = "webhook"
//! options = { url = "https://hooks.example.com/alerts", format = "json", secret_env = "OPS_HOOK_SECRET", headers = { "X-Team" = "search" } }
//! ```
//!
//! - `url` or `url_env` (exactly one): where to POST.
//! - `format`: `"json"` (default; the notification as the plugin models it)
//!   or `"alertmanager"` (Alertmanager's webhook payload, version 4, so a
//!   receiver written for Alertmanager takes it unchanged).
//! - `secret_env`: names an environment variable holding a shared secret;
//!   each request then carries `X-Context-Signature: sha256=<hex>`, the
//!   HMAC-SHA256 of the exact body bytes with that secret.
//! - `headers`: extra request headers.

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{http, options::Options};
use crate::alerting::channel::{
    Channel, ChannelContext, ChannelKind, DeliveryError, Notification, NotificationStatus,
};

/// The signature header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Context-Signature";

inventory::submit! {
    ChannelKind {
        kind: "webhook",
        description: "POSTs JSON (plain or Alertmanager webhook v4) to a URL, HMAC-signed when a secret is set",
        build,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Alertmanager,
}

struct Webhook {
    name: String,
    url: reqwest::Url,
    format: Format,
    secret: Option<Vec<u8>>,
    headers: HeaderMap,
    client: reqwest::Client,
}

fn build(ctx: &ChannelContext<'_>) -> Result<Arc<dyn Channel>, String> {
    let options = Options::new(ctx);
    let url = options.url("url", Some("url_env"))?;
    let format = match options.choice("format", &["json", "alertmanager"], "json")? {
        "alertmanager" => Format::Alertmanager,
        _ => Format::Json,
    };
    let secret = options.secret_from_env("secret_env", "the webhook's HMAC secret")?.map(String::into_bytes);
    let headers = http::headers_option(&options, "headers")?;
    options.finish()?;
    let client = http::client(ctx.timeout)?;
    Ok(Arc::new(Webhook { name: ctx.name.to_owned(), url, format, secret, headers, client }))
}

#[async_trait]
impl Channel for Webhook {
    async fn deliver(&self, notification: &Notification) -> Result<(), DeliveryError> {
        let payload = match self.format {
            Format::Json => {
                serde_json::to_value(notification).map_err(|e| DeliveryError::permanent(e.to_string()))?
            }
            Format::Alertmanager => alertmanager_v4(&self.name, notification),
        };
        let body = serde_json::to_vec(&payload).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        let mut headers = self.headers.clone();
        if let Some(secret) = &self.secret {
            let value =
                HeaderValue::from_str(&signature(secret, &body)).expect("hex is a valid header value");
            headers.insert(SIGNATURE_HEADER, value);
        }
        http::post_json(&self.client, &self.url, headers, body).await
    }
}

/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256=");
    for byte in digest.iter() {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Alertmanager's webhook payload, version 4
/// (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>),
/// with the notification as its one alert. `receiver` is the channel's name.
pub fn alertmanager_v4(receiver: &str, n: &Notification) -> Value {
    let status = match n.status {
        NotificationStatus::Firing => "firing",
        NotificationStatus::Resolved => "resolved",
    };
    // Alertmanager sends the zero time while an alert is firing.
    let ends_at = n.ends_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned());
    let group_labels = json!({ "alertname": n.rule });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={:?}}}", n.rule),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": n.labels,
        "commonAnnotations": n.annotations,
        "externalURL": external_url(&n.generator_url),
        "alerts": [{
            "status": status,
            "labels": n.labels,
            "annotations": n.annotations,
            "startsAt": n.starts_at,
            "endsAt": ends_at,
            "generatorURL": n.generator_url,
            "fingerprint": n.fingerprint,
        }],
    })
}

/// The origin of the generator URL: where the analytics API answers.
fn external_url(generator_url: &str) -> String {
    match reqwest::Url::parse(generator_url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
