//! `GET /api/v1/analytics/live`: what the live page shows, as one snapshot
//! composed from the REST routes themselves (each is called through the
//! plugin's own router, so the page sees exactly what the API answers),
//! plus two figures only this instance knows (index queue depth as last
//! reported by the host, active users in the last 5 minutes/hour/day).
//!
//! With `Accept: text/event-stream` the answer is a stream of server-sent
//! events: a snapshot at once, then one about a second after this instance
//! writes new events (no more often than 1 s, nor than five times a
//! snapshot's compute time), and a heartbeat at least every `interval`
//! seconds, until `duration` seconds have passed (the page then
//! reconnects, which also re-checks its token). What answers within 250 ms
//! goes first; the heavier usage-rollup sources follow in a second event (and
//! over hour-bucket ranges are shared between snapshots for a minute). Any other `Accept` gets one snapshot as JSON: the
//! page's polling fallback, and what an API fuzzer sees (it never waits on
//! an endless body). The stream ends as soon as the client is gone (the
//! host's sink refuses the next event) or the host stops (it ends event
//! streams when its shutdown begins).

use std::{
    collections::HashMap,
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
    /// Heavy sources' recent answers, by path and query.
    cache: Cache,
}

/// Adds the live route and the page to the API router.
pub fn attach(api: Router, shared: Arc<Shared>) -> Router {
    let state = LiveState { shared, api: api.clone(), cache: Cache::default() };
    let live = Router::new().route(LIVE_PATH, get(live)).with_state(state);
    api.merge(live).merge(super::page::router())
}

pub fn allowed() -> Vec<&'static str> {
    RANGE_PARAMS.iter().copied().chain(["interval", "duration"]).collect()
}

/// The REST calls one snapshot is made of: (name, path and query).
fn sources(range_query: &str, project: Option<&str>) -> Vec<(&'static str, String)> {
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
        // Over 30 days, daily active users: distinct users per day come
        // from the daily usage rollup, where the 6-hour buckets of the
        // other panels need every hourly (hour, project, user) row of the
        // month (0.6 s on the page benchmark's history).
        (
            "usage",
            with(
                "usage",
                &if range_query.split('&').any(|p| p == "timerange=30d") {
                    format!("{top}&step=1d")
                } else {
                    top.clone()
                },
            ),
        ),
        ("top_queries", with("top-queries", &top)),
        ("zero_queries", with("top-queries", &format!("{top}&zero_results=true"))),
        ("code_health", with("code-health", &format!("page_size={TOP}"))),
        // Pending and firing alerts (of the chosen project): a 404 when
        // alerting is switched off, and the page shows no alerts panel for
        // anything but a 200.
        (
            "alerts",
            match project {
                Some(p) => format!(
                    "{API_PREFIX}/alerts?{}",
                    serde_urlencoded::to_string([("project", p)]).unwrap_or_default()
                ),
                None => format!("{API_PREFIX}/alerts"),
            },
        ),
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

/// Sources of top lists, distinct users and files reached (usage rollups
/// plus the range's raw remainder): a few hundred milliseconds over 30 days
/// of a busy server (seconds before the usage rollups), where the others
/// take tens. Over ranges with buckets of an hour or more
/// their answers are shared between snapshots (and pages) for
/// [`HEAVY_TTL`]; a stream sends the quick sources first.
const HEAVY: [&str; 4] = ["usage", "top_queries", "zero_queries", "code_health"];
const HEAVY_TTL: Duration = Duration::from_secs(60);
/// How long a stream waits for every source before sending what it has.
const FIRST_PART: Duration = Duration::from_millis(250);
/// The cache holds at most this many answers and this many bytes of JSON.
const CACHE_ENTRIES: usize = 64;
const CACHE_BYTES: usize = 16 << 20;

/// Path and query → (when, status, body, its size in bytes).
type Cache = Arc<parking_lot::Mutex<HashMap<String, (Instant, u16, Value, usize)>>>;

/// A snapshot being computed: sources answered so far, calls still running.
struct Pending {
    calls: tokio::task::JoinSet<(&'static str, (u16, Value))>,
    /// Heavy calls, started once the quick ones are done so that they do
    /// not slow them down: (name, path and query, cache to fill).
    heavy: Vec<(&'static str, String, Option<Cache>)>,
    waiting: Vec<&'static str>,
    done: serde_json::Map<String, Value>,
    seq: u64,
    full: bool,
    started: Instant,
}

/// Starts a snapshot: every source called concurrently (heavy ones from
/// the cache when `cached`); `full: false` calls only `health` (the
/// stream's heartbeat when nothing new was written).
async fn start(
    state: &LiveState,
    range_query: &str,
    project: Option<&str>,
    seq: u64,
    full: bool,
    cached: bool,
) -> Pending {
    let mut pending = Pending {
        calls: tokio::task::JoinSet::new(),
        heavy: Vec::new(),
        waiting: Vec::new(),
        done: serde_json::Map::new(),
        seq,
        full,
        started: Instant::now(),
    };
    for (name, uri) in sources(range_query, project).into_iter().filter(|(name, _)| full || *name == "health")
    {
        let cache = (cached && HEAVY.contains(&name)).then(|| state.cache.clone());
        if let Some(cache) = &cache {
            let hit = cache.lock().get(&uri).filter(|(at, ..)| at.elapsed() < HEAVY_TTL).cloned();
            if let Some((_, status, body, _)) = hit {
                pending.done.insert(name.to_owned(), json!({"status": status, "body": body}));
                continue;
            }
        }
        pending.waiting.push(name);
        if HEAVY.contains(&name) {
            pending.heavy.push((name, uri, cache));
        } else {
            pending.spawn(state, name, uri, cache);
        }
    }
    pending
}

impl Pending {
    fn spawn(&mut self, state: &LiveState, name: &'static str, uri: String, cache: Option<Cache>) {
        let api = state.api.clone();
        self.calls.spawn(async move {
            let (status, body) = call(api, uri.clone()).await;
            if let (Some(cache), 200) = (cache, status) {
                let size = body.to_string().len();
                let mut cache = cache.lock();
                cache.retain(|_, (at, ..)| at.elapsed() < HEAVY_TTL);
                let held: usize = cache.values().map(|entry| entry.3).sum();
                if cache.len() < CACHE_ENTRIES && held + size <= CACHE_BYTES {
                    cache.insert(uri, (Instant::now(), status, body.clone(), size));
                }
            }
            (name, (status, body))
        });
    }

    /// Collects answers until every call is done or `until` has passed.
    async fn collect(&mut self, state: &LiveState, until: Option<Instant>) {
        loop {
            if self.calls.is_empty() {
                for (name, uri, cache) in std::mem::take(&mut self.heavy) {
                    self.spawn(state, name, uri, cache);
                }
            }
            let joined = match until {
                None => self.calls.join_next().await,
                Some(until) => match tokio::time::timeout_at(until.into(), self.calls.join_next()).await {
                    Ok(joined) => joined,
                    Err(_) => return,
                },
            };
            let Some(joined) = joined else { return };
            if let Ok((name, (status, body))) = joined {
                self.waiting.retain(|w| *w != name);
                self.done.insert(name.to_owned(), json!({"status": status, "body": body}));
            }
        }
    }

    /// The snapshot document of what was collected since the last one.
    fn document(&mut self, state: &LiveState, range_query: &str, project: Option<&str>) -> Value {
        json!({
            "seq": self.seq,
            "time": format_rfc3339(now_us()),
            "query": range_query,
            "partial": !self.full || !self.waiting.is_empty(),
            "pending": self.waiting,
            "compute_ms": (self.started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
            "sources": std::mem::take(&mut self.done),
            "instance": instance(&state.shared, project),
        })
    }
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
        // Heavy sources are shared between snapshots over hour-bucket ranges.
        let cached = params.range(now_us())?.step_us >= 3_600_000_000;
        let project = params.project()?;
        let interval = params.integer("interval", INTERVAL.0, INTERVAL.1, INTERVAL.2)?;
        let duration = params.integer("duration", DURATION.0, DURATION.1, DURATION.2)?;
        // The range parameters, passed on to every source as given.
        let range: Vec<(&str, &str)> =
            RANGE_PARAMS.iter().filter_map(|k| params.get(k).map(|v| (*k, v))).collect();
        let range = serde_urlencoded::to_string(range).map_err(|_| ApiError::internal())?;
        Ok::<_, ApiError>((range, project, interval, duration, cached))
    })();
    let (range, project, interval, duration, cached) = match checked {
        Ok(checked) => checked,
        Err(error) => return error.into_response(),
    };
    if !wants_stream(&headers) {
        let mut pending = start(&state, &range, project.as_deref(), 1, true, cached).await;
        pending.collect(&state, None).await;
        return Json(pending.document(&state, &range, project.as_deref())).into_response();
    }
    let stream = Stream {
        state,
        range,
        project,
        interval: Duration::from_secs(interval as u64),
        deadline: Instant::now() + Duration::from_secs(duration as u64),
        seq: 0,
        ended: false,
        sent_at: Instant::now(),
        written: 0,
        full_at: Instant::now(),
        full_gap: MIN_FULL_GAP,
        cached,
        rest: None,
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
    /// Longest silence between two events.
    interval: Duration,
    deadline: Instant,
    seq: u64,
    ended: bool,
    sent_at: Instant,
    /// Events this instance had written at the last full snapshot, when
    /// that was, and the shortest wait before the next one.
    written: u64,
    full_at: Instant,
    full_gap: Duration,
    cached: bool,
    /// The rest of a snapshot whose quick part was sent.
    rest: Option<Pending>,
}

/// A stream recomputes everything at least this often; in between, a
/// heartbeat carries health only unless something new was written.
const FULL_EVERY: Duration = Duration::from_secs(30);
/// How often a stream looks whether this instance wrote new events.
const WATCH: Duration = Duration::from_millis(250);
/// Shortest wait between two full snapshots of a stream; at least five
/// times the last one's compute time, so a page costs at most a fifth of
/// a core however busy the server.
const MIN_FULL_GAP: Duration = Duration::from_secs(1);

impl Stream {
    fn written_now(&self) -> u64 {
        self.state.shared.pipeline.storage_health.lock().events_written
    }

    /// The next event's text, after waiting for news (events written by
    /// this instance) or the heartbeat; `None` once the stream's duration is
    /// over (after an `end` event).
    async fn next(&mut self) -> Option<String> {
        if self.ended {
            return None;
        }
        if let Some(pending) = self.rest.take() {
            return Some(self.rest(pending).await);
        }
        let mut out = String::new();
        if self.seq == 0 {
            // Reconnect after 2 s when the connection drops.
            out.push_str("retry: 2000\n\n");
        } else {
            loop {
                let now = Instant::now();
                if now >= self.deadline {
                    self.ended = true;
                    return Some("event: end\ndata: {\"reason\":\"duration\"}\n\n".to_owned());
                }
                let news = self.written_now() != self.written && now >= self.full_at + self.full_gap;
                if news || now >= self.sent_at + self.interval {
                    break;
                }
                tokio::time::sleep(WATCH.min(self.deadline - now)).await;
            }
        }
        self.seq += 1;
        let written = self.written_now();
        let full = self.seq == 1 || written != self.written || self.full_at.elapsed() >= FULL_EVERY;
        if full {
            self.written = written;
        }
        let mut pending =
            start(&self.state, &self.range, self.project.as_deref(), self.seq, full, self.cached).await;
        // What answers quickly goes first; the rest follows in its own event.
        pending.collect(&self.state, Some(Instant::now() + FIRST_PART)).await;
        let document = pending.document(&self.state, &self.range, self.project.as_deref());
        if !pending.waiting.is_empty() {
            self.rest = Some(pending);
        } else if full {
            self.full_done(&document);
        }
        out.push_str(&self.event(&document));
        Some(out)
    }

    /// The rest of a snapshot whose quick part was sent.
    async fn rest(&mut self, mut pending: Pending) -> String {
        pending.collect(&self.state, None).await;
        let document = pending.document(&self.state, &self.range, self.project.as_deref());
        if pending.full {
            self.full_done(&document);
        }
        self.event(&document)
    }

    /// After a full snapshot: the next one waits at least five times its
    /// compute time.
    fn full_done(&mut self, document: &Value) {
        let compute = Duration::from_secs_f64(document["compute_ms"].as_f64().unwrap_or(0.0) / 1e3);
        self.full_at = Instant::now();
        self.full_gap = MIN_FULL_GAP.max(compute * 5);
    }

    fn event(&mut self, document: &Value) -> String {
        self.sent_at = Instant::now();
        format!("id: {}\nevent: snapshot\ndata: {document}\n\n", self.seq)
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
    params.push(seconds(
        "interval",
        "event streams only: longest silence between two events, in seconds (events written by this instance are pushed within about a second)",
        INTERVAL,
    ));
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
    "required": ["seq", "time", "query", "partial", "pending", "compute_ms", "sources", "instance"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1},
        "partial": {"type": "boolean", "description": "true: only some sources (merge them into the last snapshot)"},
        "pending": {"type": "array", "items": {"type": "string"}, "description": "sources still computing: a later event of the same seq carries them"},
        "time": {"type": "string", "format": "date-time"},
        "query": {"type": "string"},
        "compute_ms": {"type": "number", "description": "time spent reading the sources"},
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
            zero-result top-queries, code-health and the alerts of the project), each as {status, body}, \
            plus this instance's index queue depth and active users. With `Accept: text/event-stream`: \
            server-sent `snapshot` events (the same JSON): the first at once, then one soon after this instance \
            writes new events (at least 1 s apart), and at least every `interval` seconds (health only, \
            `partial`, when nothing new was written and the last full one is under 30 s old); an `end` event \
            after `duration` seconds. A stream sends the sources that answer within 250 ms first and the rest \
            (`pending`) in a second event of the same seq; over ranges with buckets of an hour or more, the \
            heavier sources (usage, top-queries, code-health) are shared between snapshots for 60 s. \
            Any other Accept: one snapshot as JSON, complete.",
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
        let s = sources("timerange=1h&project=a%20b", Some("a b"));
        assert_eq!(s[0], ("health", "/api/v1/analytics/health".to_owned()));
        assert!(s.iter().any(|(n, u)| *n == "zero_queries"
            && u == "/api/v1/analytics/top-queries?timerange=1h&project=a%20b&limit=10&zero_results=true"));
        assert!(s.iter().any(|(n, u)| *n == "alerts" && u == "/api/v1/analytics/alerts?project=a+b"));
        assert!(sources("", None).iter().any(|(_, u)| u == "/api/v1/analytics/cache-performance?"));
        assert!(sources("", None).iter().any(|(_, u)| u == "/api/v1/analytics/alerts"));
        assert!(
            sources("timerange=30d", None)
                .iter()
                .any(|(n, u)| *n == "usage" && u == "/api/v1/analytics/usage?timerange=30d&limit=10&step=1d")
        );
        assert!(
            sources("timerange=7d", None)
                .iter()
                .any(|(n, u)| *n == "usage" && u == "/api/v1/analytics/usage?timerange=7d&limit=10")
        );
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
