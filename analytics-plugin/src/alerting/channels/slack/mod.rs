//! `slack`: posts to a Slack incoming webhook.
//!
//! ```toml
//! [[plugins.analytics.config.alerting.channels]]
//! name = "slack-oncall"
//! kind = "slack"
//! options = { url_env = "SLACK_WEBHOOK_URL", channel = "#search-oncall", username = "Context alerts" }
//! ```
//!
//! - `url_env` (recommended: the webhook URL is a secret) or `url`.
//! - `channel`, `username`, `icon_emoji`: overrides, where the workspace
//!   still honours them for incoming webhooks.
//!
//! The payload has a `text` fallback (notifications, old clients) and Block
//! Kit `blocks` (<https://api.slack.com/reference/block-kit/blocks>): a
//! `header` with the state and rule, a `section` with the summary and fields
//! (severity, value, threshold, started/resolved), and a `context` with the
//! labels and links. The severity colour is the bar of one attachment
//! carrying the labels. Slack answers 429 with `Retry-After` when rate
//! limited: that becomes `Retry { after }`.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{format_value, http, options::Options, summary};
use crate::alerting::channel::{
    Channel, ChannelContext, ChannelKind, DeliveryError, Notification, NotificationStatus, Severity,
};

inventory::submit! {
    ChannelKind {
        kind: "slack",
        description: "Posts to a Slack incoming webhook (Block Kit), honouring 429 Retry-After",
        build,
    }
}

struct Slack {
    url: reqwest::Url,
    channel: Option<String>,
    username: Option<String>,
    icon_emoji: Option<String>,
    client: reqwest::Client,
}

fn build(ctx: &ChannelContext<'_>) -> Result<Arc<dyn Channel>, String> {
    let options = Options::new(ctx);
    let url = options.url("url", Some("url_env"))?;
    let channel = options.string("channel", "a channel such as \"#search-oncall\"")?;
    let username = options.string("username", "the name the messages appear under")?;
    let icon_emoji = options.string("icon_emoji", "an emoji code such as \":rotating_light:\"")?;
    if let Some(icon) = &icon_emoji
        && !(icon.len() > 2 && icon.starts_with(':') && icon.ends_with(':'))
    {
        return Err(
            options.error("icon_emoji", format!("{icon:?} is not an emoji code; expected \":name:\""))
        );
    }
    options.finish()?;
    let client = http::client(ctx.timeout)?;
    Ok(Arc::new(Slack { url, channel, username, icon_emoji, client }))
}

#[async_trait]
impl Channel for Slack {
    async fn deliver(&self, notification: &Notification) -> Result<(), DeliveryError> {
        let mut payload = payload(notification);
        for (key, value) in
            [("channel", &self.channel), ("username", &self.username), ("icon_emoji", &self.icon_emoji)]
        {
            if let Some(value) = value {
                payload[key] = json!(value);
            }
        }
        let body = serde_json::to_vec(&payload).map_err(|e| DeliveryError::permanent(e.to_string()))?;
        http::post_json(&self.client, &self.url, HeaderMap::new(), body).await
    }
}

/// Emoji and colour per state and severity.
fn style(n: &Notification) -> (&'static str, &'static str) {
    match (n.status, n.severity) {
        (NotificationStatus::Resolved, _) => (":white_check_mark:", "#2EB67D"),
        (_, Severity::Info) => (":information_source:", "#439FE0"),
        (_, Severity::Warning) => (":warning:", "#ECB22E"),
        (_, Severity::Error) => (":red_circle:", "#E01E5A"),
        (_, Severity::Critical) => (":rotating_light:", "#A30200"),
    }
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped in text it should not
/// read as links or mentions.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Cuts to Slack's per-field limits (characters, not bytes).
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

/// The incoming-webhook payload: `text` fallback, `blocks`, one coloured
/// attachment.
pub fn payload(n: &Notification) -> Value {
    let (emoji, colour) = style(n);
    let state = match n.status {
        NotificationStatus::Firing if n.repeat > 0 => "STILL FIRING",
        NotificationStatus::Firing => "FIRING",
        NotificationStatus::Resolved => "RESOLVED",
    };
    let summary = summary(n);
    let text = cut(&format!("{emoji} [{state}] {} {}: {}", n.severity, n.rule, escape(&summary)), 3000);

    let mut section_text = format!("*{}*", escape(&summary));
    if let Some(description) = n.annotations.get("description") {
        section_text.push('\n');
        section_text.push_str(&escape(description));
    }
    let mut fields = vec![json!({"type": "mrkdwn", "text": format!("*Severity*\n{}", n.severity)})];
    if let Some(project) = n.labels.get("project") {
        fields.push(json!({"type": "mrkdwn", "text": cut(&format!("*Project*\n{}", escape(project)), 2000)}));
    }
    if let Some(value) = n.value {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Value*\n{}", format_value(value))}));
    }
    if let Some(threshold) = n.threshold {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Threshold*\n{}", format_value(threshold))}));
    }
    fields.push(json!({"type": "mrkdwn", "text": format!("*Started*\n{}", n.starts_at)}));
    if let Some(ends_at) = &n.ends_at {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Resolved*\n{ends_at}")}));
    }

    let mut links = vec![format!("<{}|Open in Context analytics>", n.generator_url)];
    if let Some(runbook) = n.annotations.get("runbook_url") {
        links.push(format!("<{runbook}|Runbook>"));
    }
    let labels =
        n.labels.iter().map(|(k, v)| format!("`{}={}`", escape(k), escape(v))).collect::<Vec<_>>().join(" ");

    json!({
        "text": text,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": cut(&format!("{emoji} {state}: {}", n.rule), 150), "emoji": true}
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": cut(&section_text, 3000)},
                "fields": fields
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": cut(&links.join(" · "), 3000)},
                    {"type": "mrkdwn", "text": cut(&format!("fingerprint `{}` · id `{}`", n.fingerprint, n.id), 3000)}
                ]
            }
        ],
        "attachments": [{
            "color": colour,
            "fallback": text,
            "blocks": [{
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": cut(if labels.is_empty() { "no labels" } else { &labels }, 3000)}]
            }]
        }]
    })
}
