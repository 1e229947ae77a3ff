//! `GET /api/v1/analytics/live`: what the live page shows, as one snapshot
//! composed from the REST routes themselves (each is called through the
//! plugin's own router, so the page sees exactly what the API answers),
//! plus two figures only this instance knows (index queue depth as last
//! reported by the host, active users in the last 5 minutes/hour/day).
//!
//! With `Accept: text/event-stream` the answer is a stream of server-sent
//! events: a snapshot at once, then one every `interval` seconds, until
//! `duration` seconds have passed (the page then reconnects, which also
//! re-checks its token). Any other `Accept` gets one snapshot as JSON: the
//! page's polling fallback, and what an API fuzzer sees (it never waits on
//! an endless body). The stream ends as soon as the client is gone (the
//! host's sink refuses the next event) or the host stops (it ends event
//! streams when its shutdown begins).

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{RawQuery, State},
    http::{HeaderMap, Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{API_PREFIX, error::ApiError, params::Params, routes::RANGE_PARAMS};
use crate::{
    plugin::{Shared, now_us},
    time::format_rfc3339,
};

pub const LIVE_PATH: &str = "/api/v1/analytics/live";
/// Seconds between two snapshots of a stream: (min, max, default).
pub const INTERVAL: (i64, i64, i64) = (1, 60, 5);
/// Seconds a stream stays open before the server ends it: (min, max, default).
pub const DURATION: (i64, i64, i64) = (1, 3600, 300);
/// Rows in each top list of a snapshot.
const TOP: usize = 10;
/// Largest sub-response read into a snapshot.
const SOURCE_MAX_BYTES: usize = 4 << 20;

#[derive(Clone)]
struct LiveState {
    shared: Arc<Shared>,
    /// The REST routes (without this one), called for each snapshot.
    api: Router,
}

/// Adds the live route and the page to the API router.
pub fn attach(api: Router, shared: Arc<Shared>) -> Router {
    let live = Router::new().route(LIVE_PATH, get(live)).with_state(LiveState { shared, api: api.clone() });
    api.merge(live).merge(super::page::router())
}

pub fn allowed() -> Vec<&'static str> {
    RANGE_PARAMS.iter().copied().chain(["interval", "duration"]).collect()
}

/// The REST calls one snapshot is made of: (name, path and query).
fn sources(range_query: &str) -> Vec<(&'static str, String)> {
    let with = |route: &str, extra: &str| {
        let query: Vec<&str> = [range_query, extra].into_iter().filter(|s| !s.is_empty()).collect();
        format!("{API_PREFIX}/{route}?{}", query.join("&"))
    };
    let top = format!("limit={TOP}");
    vec![
        ("health", format!("{API_PREFIX}/health")),
        ("latency_p50", with("search-performance", "aggregation=p50")),
        ("latency_p95", with("search-performance", "aggregation=p95")),
        ("latency_p99", with("search-performance", "aggregation=p99")),
        ("cache", with("cache-performance", "")),
        ("index", with("index-performance", "")),
        ("usage", with("usage", &top)),
        ("top_queries", with("top-queries", &top)),
        ("zero_queries", with("top-queries", &format!("{top}&zero_results=true"))),
        ("code_health", with("code-health", &format!("page_size={TOP}"))),
        // Answered once the alerting routes exist; a 404 until then, and
        // the page shows no alerts panel for anything but a 200.
        ("alerts", format!("{API_PREFIX}/alerts")),
    ]
}

/// One REST call through the router: its status and JSON body (null when
/// the body is not JSON).
async fn call(api: Router, uri: String) -> (u16, Value) {
    let request = match Request::get(uri).header(header::ACCEPT, "application/json").body(Body::empty()) {
        Ok(request) => request,
        Err(_) => return (500, Value::Null),
    };
    let response = match api.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let status = response.status().as_u16();
    let body = match http_body_util::Limited::new(response.into_body(), SOURCE_MAX_BYTES).collect().await {
        Ok(collected) => serde_json::from_slice(&collected.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    (status, body)
}

/// Figures of this instance that no REST route carries.
fn instance(shared: &Shared, project: Option<&str>) -> Value {
    let active = shared.pipeline.active_counts(now_us());
    let mut depths = Vec::new();
    for family in shared.collector.registry.gather() {
        if family.name() != "context_index_queue_depth" {
            continue;
        }
        for metric in family.get_metric() {
            let label = metric.get_label().iter().find(|l| l.name() == "project").map(|l| l.value());
            let Some(label) = label else { continue };
            if project.is_some_and(|p| p != label) {
                continue;
            }
            depths.push(json!({"project": label, "files": metric.get_gauge().get_value() as i64}));
        }
    }
    json!({
        "instance_id": shared.host.instance_id.as_str(),
        "active_users": {"5m": active.last_5m, "1h": active.last_1h, "24h": active.last_24h},
        "index_queue_depth": depths,
    })
}

/// One snapshot: every source called concurrently; `full: false` calls
/// only `health` (the stream's tick when nothing new was written).
async fn snapshot(
    state: &LiveState,
    range_query: &str,
    project: Option<&str>,
    seq: u64,
    full: bool,
) -> Value {
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for (name, uri) in sources(range_query).into_iter().filter(|(name, _)| full || *name == "health") {
        let api = state.api.clone();
        calls.spawn(async move { (name, call(api, uri).await) });
    }
    let mut out = serde_json::Map::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok((name, (status, body))) = joined {
            out.insert(name.to_owned(), json!({"status": status, "body": body}));
        }
    }
    json!({
        "seq": seq,
        "time": format_rfc3339(now_us()),
        "query": range_query,
        "partial": !full,
        "compute_ms": (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
        "sources": out,
        "instance": instance(&state.shared, project),
    })
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/event-stream")))
}

async fn live(State(state): State<LiveState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let checked = (|| {
        let params = Params::parse(query.as_deref(), &allowed())?;
        params.range(now_us())?;
        let project = params.project()?;
        let interval = params.integer("interval", INTERVAL.0, INTERVAL.1, INTERVAL.2)?;
        let duration = params.integer("duration", DURATION.0, DURATION.1, DURATION.2)?;
        // The range parameters, passed on to every source as given.
        let range: Vec<(&str, &str)> =
            RANGE_PARAMS.iter().filter_map(|k| params.get(k).map(|v| (*k, v))).collect();
        let range = serde_urlencoded::to_string(range).map_err(|_| ApiError::internal())?;
        Ok::<_, ApiError>((range, project, interval, duration))
    })();
    let (range, project, interval, duration) = match checked {
        Ok(checked) => checked,
        Err(error) => return error.into_response(),
    };
    if !wants_stream(&headers) {
        return Json(snapshot(&state, &range, project.as_deref(), 1, true).await).into_response();
    }
    let stream = Stream {
        state,
        range,
        project,
        interval: Duration::from_secs(interval as u64),
        deadline: Instant::now() + Duration::from_secs(duration as u64),
        next_at: Instant::now(),
        seq: 0,
        ended: false,
        written: 0,
        full_at: Instant::now(),
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<Bytes, Infallible>(Bytes::from(chunk)), s))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The state of one event stream.
struct Stream {
    state: LiveState,
    range: String,
    project: Option<String>,
    interval: Duration,
    deadline: Instant,
    next_at: Instant,
    seq: u64,
    ended: bool,
    /// Events this instance had written at the last full snapshot, and when.
    written: u64,
    full_at: Instant,
}

/// A stream recomputes everything at least this often, and at every tick
/// after this instance wrote events; other ticks carry health only.
const FULL_EVERY: Duration = Duration::from_secs(30);

impl Stream {
    /// The next event's text, after waiting for its time; `None` once the
    /// stream's duration is over (after an `end` event).
    async fn next(&mut self) -> Option<String> {
        if self.ended {
            return None;
        }
        let mut out = String::new();
        if self.seq == 0 {
            // Reconnect after 2 s when the connection drops.
            out.push_str("retry: 2000\n\n");
        }
        if self.next_at >= self.deadline {
            self.ended = true;
            return Some("event: end\ndata: {\"reason\":\"duration\"}\n\n".to_owned());
        }
        tokio::time::sleep_until(self.next_at.into()).await;
        self.seq += 1;
        let written = self.state.shared.pipeline.storage_health.lock().events_written;
        let full = self.seq == 1 || written != self.written || self.full_at.elapsed() >= FULL_EVERY;
        if full {
            (self.written, self.full_at) = (written, Instant::now());
        }
        let snapshot = snapshot(&self.state, &self.range, self.project.as_deref(), self.seq, full).await;
        // Ticks stay on a fixed schedule; a slow snapshot skips ahead.
        let now = Instant::now();
        self.next_at += self.interval;
        while self.next_at < now {
            self.next_at += self.interval;
        }
        self.next_at = self.next_at.min(self.deadline);
        out.push_str(&format!("id: {}\nevent: snapshot\ndata: {snapshot}\n\n", self.seq));
        Some(out)
    }
}

/// This route in the OpenAPI document (`openapi.rs` inserts it).
pub fn openapi() -> Value {
    let range: Vec<Value> =
        RANGE_PARAMS.iter().map(|p| json!({"$ref": format!("#/components/parameters/{p}")})).collect();
    let seconds = |name: &str, description: &str, (min, max, default): (i64, i64, i64)| {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "schema": {"type": "integer", "minimum": min, "maximum": max, "default": default}})
    };
    let mut params = range;
    params.push(seconds("interval", "event streams only: seconds between snapshots", INTERVAL));
    params.push(seconds(
        "duration",
        "event streams only: seconds until the server ends the stream (the client reconnects)",
        DURATION,
    ));
    let source = json!({"type": "object", "required": ["status", "body"], "properties": {
        "status": {"type": "integer"},
        "body": {"description": "that route's JSON answer (its document, or its error)"},
    }});
    let snapshot = json!({"type": "object",
    "required": ["seq", "time", "query", "partial", "compute_ms", "sources", "instance"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1},
        "partial": {"type": "boolean", "description": "true: only health (nothing new was written since the last full snapshot)"},
        "time": {"type": "string", "format": "date-time"},
        "query": {"type": "string"},
        "compute_ms": {"type": "number"},
        "sources": {"type": "object", "additionalProperties": source},
        "instance": {"type": "object", "required": ["instance_id", "active_users", "index_queue_depth"], "properties": {
            "instance_id": {"type": "string"},
            "active_users": {"type": "object"},
            "index_queue_depth": {"type": "array", "items": {"type": "object"}},
        }},
    }});
    json!({"get": {
        "summary": "Live page data: one snapshot, or a stream of them",
        "description": "One snapshot of what the live page shows, composed from the other routes (health, \
            search-performance at p50/p95/p99, cache-performance, index-performance, usage, top-queries, \
            zero-result top-queries, code-health, and alerts when that route exists), each as {status, body}, \
            plus this instance's index queue depth and active users. With `Accept: text/event-stream`: \
            server-sent `snapshot` events (the same JSON), the first at once, then every `interval` seconds, \
            and an `end` event after `duration` seconds; a tick with nothing newly written by this instance \
            (and less than 30 s after the last full one) carries health only (`partial`). Any other Accept: one snapshot as JSON.",
        "parameters": params,
        "security": [{"bearer": []}, {}],
        "responses": {
            "200": {"description": "a snapshot, or an event stream of snapshots", "content": {
                "application/json": {"schema": snapshot},
                "text/event-stream": {"schema": {"type": "string"}},
            }},
            "400": {"$ref": "#/components/responses/BadRequest"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
        },
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_pass_the_range_on() {
        let s = sources("timerange=1h&project=a%20b");
        assert_eq!(s[0], ("health", "/api/v1/analytics/health".to_owned()));
        assert!(s.iter().any(|(n, u)| *n == "zero_queries"
            && u == "/api/v1/analytics/top-queries?timerange=1h&project=a%20b&limit=10&zero_results=true"));
        assert!(sources("").iter().any(|(_, u)| u == "/api/v1/analytics/cache-performance?"));
    }

    #[test]
    fn event_stream_is_asked_for_by_accept() {
        let mut h = HeaderMap::new();
        assert!(!wants_stream(&h));
        h.insert(header::ACCEPT, "text/html, text/event-stream;q=0.9".parse().unwrap());
        assert!(wants_stream(&h));
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        assert!(!wants_stream(&h));
    }
}
