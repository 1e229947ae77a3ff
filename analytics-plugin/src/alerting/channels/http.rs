//! What the HTTP channels (webhook, Slack, Alertmanager) share: one reqwest
//! client per channel on rustls with ring, and one classification of
//! outcomes into [`DeliveryError`]s.
//!
//! Classification: timeouts, connection errors, 5xx, 408 and 429 are
//! `Retry` (with the receiver's `Retry-After` when it gave one); any other
//! 4xx, and redirects (never followed: a POST must reach the configured URL),
//! are `Permanent`, with the status and a short excerpt of the body.

use std::time::{Duration, SystemTime};

use reqwest::{
    StatusCode,
    header::{HeaderMap, HeaderName, HeaderValue},
};

use super::options::Options;
use crate::alerting::channel::DeliveryError;

/// Installs ring as rustls' process-wide provider, once (reqwest is built
/// with `rustls-no-provider`, DESIGN.md). Another part of the plugin may
/// have installed it first: that is fine.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client for one channel: whole-request timeout, no redirects.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("context-analytics/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Extra headers from a `headers` option, checked at build.
pub fn headers_option(options: &Options<'_>, key: &'static str) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in options.string_table(key, "header name = value")? {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| options.error(&format!("{key}.{name}"), "is not a valid HTTP header name"))?;
        let header_value = HeaderValue::from_str(&value).map_err(|_| {
            options.error(&format!("{key}.{name}"), "is not a valid HTTP header value (visible ASCII only)")
        })?;
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

/// POSTs `body` as JSON and classifies the outcome.
pub async fn post_json(
    client: &reqwest::Client,
    url: &reqwest::Url,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<(), DeliveryError> {
    let response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| classify_send_error(url, &e))?;
    classify_response(response).await
}

/// A request that got no answer.
pub fn classify_send_error(url: &reqwest::Url, error: &reqwest::Error) -> DeliveryError {
    let target = redacted(url);
    if error.is_builder() {
        return DeliveryError::permanent(format!(
            "cannot build a request to {target}: {}",
            error_chain(error)
        ));
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    DeliveryError::retry(format!("{what} to {target}: {}", error_chain(error)))
}

/// A response: 2xx is delivered; everything else is classified.
pub async fn classify_response(response: reqwest::Response) -> Result<(), DeliveryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let location =
        response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // A short excerpt is enough to say why; never wait long for it.
    let body = tokio::time::timeout(Duration::from_secs(2), response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let excerpt = excerpt(&body);
    let reason = match (&location, excerpt.is_empty()) {
        (Some(location), _) if status.is_redirection() => {
            format!("HTTP {status}: redirected to {location}; configure the final URL")
        }
        (_, true) => format!("HTTP {status}"),
        (_, false) => format!("HTTP {status}: {excerpt}"),
    };
    Err(classify_status(status, reason, retry_after))
}

pub fn classify_status(status: StatusCode, reason: String, retry_after: Option<Duration>) -> DeliveryError {
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        DeliveryError::Retry { reason, after: retry_after }
    } else {
        DeliveryError::Permanent { reason }
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? + 1;
    let at_us = crate::time::parse_rfc3339(&format!("{year}-{month:02}-{day:0>2}T{time}Z"))?;
    let now_us = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?.as_micros() as i64;
    Some(Duration::from_micros(at_us.saturating_sub(now_us).max(0) as u64))
}

/// The first 200 characters of a body, on one line.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 200 {
        let mut cut: String = line.chars().take(200).collect();
        cut.push('…');
        cut
    } else {
        line
    }
}

/// The URL without credentials, query or path beyond the host (Slack's
/// webhook path is the secret).
pub fn redacted(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}", url.scheme(), url.host_str().unwrap_or("?"))
}

/// An error and its causes on one line (reqwest's own message is terse).
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        let in_a_day = parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT").unwrap();
        assert!(in_a_day > Duration::from_secs(86_400));
    }

    #[test]
    fn statuses_are_classified() {
        for status in [500, 502, 503, 408, 429] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                matches!(classify_status(status, String::new(), None), DeliveryError::Retry { .. }),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 410, 413, 301] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(
                matches!(classify_status(status, String::new(), None), DeliveryError::Permanent { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn urls_are_redacted_and_bodies_cut() {
        let url = reqwest::Url::parse("https://user:pw@hooks.slack.com/services/T0/B0/secret?x=1").unwrap();
        assert_eq!(redacted(&url), "https://hooks.slack.com");
        assert_eq!(excerpt(b"line one\n  line two"), "line one line two");
        assert_eq!(excerpt(&[b'x'; 500]).chars().count(), 201);
    }
}
