//! `email`: sends each notification as a mail through an SMTP server
//! (lettre), with a plain-text and an HTML body (multipart/alternative).
//!
//! ```toml
//! [[plugins.analytics.config.alerting.channels]]
//! name = "mail-oncall"
//! kind = "email"
//! options = { host = "smtp.example.com", tls = "starttls", from = "Context alerts <alerts@example.com>", to = ["oncall@example.com", "lead@example.com"], username_env = "SMTP_USER", password_env = "SMTP_PASSWORD" }
//! ```
//!
//! - `host` (required); `port` (default 25 for `none`, 587 for `starttls`,
//!   465 for `tls`).
//! - `tls`: `"starttls"` (default; STARTTLS is required, never skipped),
//!   `"tls"` (implicit TLS from the first byte) or `"none"` (plain text, for
//!   a relay on the same host).
//! - `from` (required) and `to` (one address or a list): RFC 5322 mailboxes.
//! - `username_env` and `password_env`: both or neither.
//! - `ca_file`: a PEM file of CA certificates to trust instead of the
//!   system's (a private CA); `tls_server_name`: the name the server's
//!   certificate carries when it differs from `host`.
//!
//! No connection pool: alerts are rare, and lettre's pool spawns a task when
//! dropped, which panics off the runtime (DESIGN.md).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, CertificateStore, Tls, TlsParameters},
    },
};

use super::{format_value, http::install_crypto_provider, options::Options, summary};
use crate::alerting::channel::{
    Channel, ChannelContext, ChannelKind, DeliveryError, Notification, NotificationStatus,
};

inventory::submit! {
    ChannelKind {
        kind: "email",
        description: "Sends a text and HTML mail through SMTP (plain, STARTTLS or TLS)",
        build,
    }
}

struct Email {
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
    timeout: Duration,
}

fn build(ctx: &ChannelContext<'_>) -> Result<Arc<dyn Channel>, String> {
    let options = Options::new(ctx);
    let host = options.required_string("host", "the SMTP server's host name or address")?;
    let tls_mode = options.choice("tls", &["starttls", "tls", "none"], "starttls")?;
    let default_port = match tls_mode {
        "none" => 25,
        "tls" => 465,
        _ => 587,
    };
    let port = options.integer("port", 1, 65_535)?.map(|p| p as u16).unwrap_or(default_port);
    let mailbox = |key: &'static str, text: &str| -> Result<Mailbox, String> {
        text.parse::<Mailbox>().map_err(|e| {
            options.error(key, format!("{text:?} is not a mail address ({e}); expected \"name@example.com\" or \"Name <name@example.com>\""))
        })
    };
    let from_text = options.required_string("from", "the sender, \"Name <alerts@example.com>\"")?;
    let from = mailbox("from", &from_text)?;
    let to = options
        .string_list("to", "the recipients' addresses")?
        .ok_or_else(|| options.error("to", "is missing; expected one address or a list of addresses"))?
        .iter()
        .map(|text| mailbox("to", text))
        .collect::<Result<Vec<_>, _>>()?;
    let username = options.secret_from_env("username_env", "the SMTP user name")?;
    let password = options.secret_from_env("password_env", "the SMTP password")?;
    let ca_file = options.string("ca_file", "a PEM file of CA certificates")?;
    let server_name = options.string("tls_server_name", "the host name in the server's certificate")?;
    if tls_mode == "none" {
        for key in ["ca_file", "tls_server_name"] {
            if ctx.options.contains_key(key) {
                return Err(options
                    .error(key, "is set but `tls` is \"none\"; use \"starttls\" or \"tls\", or remove it"));
            }
        }
    }
    let credentials =
        match (username, password) {
            (Some(user), Some(password)) => Some(Credentials::new(user, password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(options
                    .error("password_env", "is missing while `username_env` is set; set both or neither"));
            }
            (None, Some(_)) => {
                return Err(options
                    .error("username_env", "is missing while `password_env` is set; set both or neither"));
            }
        };
    options.finish()?;

    let tls = if tls_mode == "none" {
        Tls::None
    } else {
        install_crypto_provider();
        let mut params = TlsParameters::builder(server_name.unwrap_or_else(|| host.clone()));
        if let Some(path) = &ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| options.error("ca_file", format!("cannot read '{path}': {e}")))?;
            let certificate = Certificate::from_pem(&pem)
                .map_err(|e| options.error("ca_file", format!("'{path}' holds no PEM certificate ({e})")))?;
            params = params.certificate_store(CertificateStore::None).add_root_certificate(certificate);
        }
        let params = params
            .build_rustls()
            .map_err(|e| format!("alerting.channels.{:?}: TLS setup failed: {e}", ctx.name))?;
        if tls_mode == "tls" { Tls::Wrapper(params) } else { Tls::Required(params) }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(port)
        .tls(tls)
        .timeout(Some(ctx.timeout));
    if let Some(credentials) = credentials {
        builder = builder.credentials(credentials);
    }
    Ok(Arc::new(Email {
        from,
        to,
        transport: builder.build(),
        server: format!("{host}:{port}"),
        timeout: ctx.timeout,
    }))
}

#[async_trait]
impl Channel for Email {
    async fn deliver(&self, notification: &Notification) -> Result<(), DeliveryError> {
        let mut message = Message::builder().from(self.from.clone()).subject(subject(notification));
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .header(lettre::message::header::MessageId::from(format!(
                "<{}@context-analytics>",
                notification.id
            )))
            .multipart(MultiPart::alternative_plain_html(text_body(notification), html_body(notification)))
            .map_err(|e| DeliveryError::permanent(format!("cannot build the mail: {e}")))?;
        let sent = tokio::time::timeout(self.timeout, self.transport.send(message)).await;
        match sent {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(error)) => Err(classify(&self.server, &error)),
            Err(_) => {
                Err(DeliveryError::retry(format!("SMTP {}: timed out after {:?}", self.server, self.timeout)))
            }
        }
    }
}

/// SMTP 5xx replies (bad recipient, authentication refused, message
/// refused) are permanent; 4xx replies, connection, TLS and timeout
/// failures are worth retrying.
fn classify(server: &str, error: &lettre::transport::smtp::Error) -> DeliveryError {
    let text = super::http::error_chain(error);
    let reason = format!("SMTP {server}: {}", text.replace(['\n', '\r'], " "));
    if error.is_permanent() || error.is_client() {
        DeliveryError::permanent(reason)
    } else {
        DeliveryError::retry(reason)
    }
}

fn state(n: &Notification) -> &'static str {
    match n.status {
        NotificationStatus::Firing if n.repeat > 0 => "STILL FIRING",
        NotificationStatus::Firing => "FIRING",
        NotificationStatus::Resolved => "RESOLVED",
    }
}

/// `[FIRING critical] search_latency_critical: p95 search latency is 2.4 s`
pub fn subject(n: &Notification) -> String {
    let mut subject = format!("[{} {}] {}", state(n), n.severity, n.rule);
    let summary = summary(n);
    if summary != n.rule {
        subject.push_str(": ");
        subject.push_str(&summary);
    }
    subject.replace(['\n', '\r'], " ")
}

/// The facts as `(name, value)` rows, shared by both bodies.
fn facts(n: &Notification) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("Status", state(n).to_lowercase()),
        ("Severity", n.severity.to_string()),
        ("Rule", n.rule.clone()),
    ];
    if let Some(value) = n.value {
        rows.push(("Value", format_value(value)));
    }
    if let Some(threshold) = n.threshold {
        rows.push(("Threshold", format_value(threshold)));
    }
    rows.push(("Started", n.starts_at.clone()));
    if let Some(ends_at) = &n.ends_at {
        rows.push(("Resolved", ends_at.clone()));
    }
    if !n.labels.is_empty() {
        rows.push((
            "Labels",
            n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
        ));
    }
    rows.push(("Fingerprint", n.fingerprint.clone()));
    rows
}

pub fn text_body(n: &Notification) -> String {
    let mut body = format!("{}\n\n", summary(n));
    if let Some(description) = n.annotations.get("description") {
        body.push_str(description);
        body.push_str("\n\n");
    }
    for (name, value) in facts(n) {
        body.push_str(&format!("{name:<12} {value}\n"));
    }
    if let Some(runbook) = n.annotations.get("runbook_url") {
        body.push_str(&format!("\nRunbook: {runbook}\n"));
    }
    body.push_str(&format!("Details: {}\n", n.generator_url));
    body
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn html_body(n: &Notification) -> String {
    let colour = match (n.status, n.severity) {
        (NotificationStatus::Resolved, _) => "#2EB67D",
        (_, crate::alerting::channel::Severity::Info) => "#439FE0",
        (_, crate::alerting::channel::Severity::Warning) => "#ECB22E",
        (_, crate::alerting::channel::Severity::Error) => "#E01E5A",
        (_, crate::alerting::channel::Severity::Critical) => "#A30200",
    };
    let mut html = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\
         <h2 style=\"border-left:6px solid {colour};padding-left:8px\">{}</h2>",
        escape_html(&summary(n))
    );
    if let Some(description) = n.annotations.get("description") {
        html.push_str(&format!("<p>{}</p>", escape_html(description)));
    }
    html.push_str("<table>");
    for (name, value) in facts(n) {
        html.push_str(&format!("<tr><th align=\"left\">{name}</th><td>{}</td></tr>", escape_html(&value)));
    }
    html.push_str("</table><p>");
    if let Some(runbook) = n.annotations.get("runbook_url") {
        html.push_str(&format!("<a href=\"{0}\">Runbook</a> · ", escape_html(runbook)));
    }
    html.push_str(&format!(
        "<a href=\"{0}\">Open in Context analytics</a></p></body></html>",
        escape_html(&n.generator_url)
    ));
    html
}
