//! The host's HTTP server: its own search routes, plugin routes forwarded
//! across the boundary, and plugin middleware around everything.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RStr, RString, RVec},
};
use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{MatchedPath, Path, Query, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http_body::{Frame, SizeHint};
use plugin_api::{
    Header, HeaderRef, HttpRequest, HttpResponse, QueryKind, ReplySink, ReplySink_TO, RequestHead,
    RequestRecord,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    engine::{Engine, Requested, SearchError},
    plugins::SharedPlugins,
};

/// Largest request body forwarded to a plugin.
const MAX_FORWARDED_BODY: usize = 8 * 1024 * 1024;
/// Streamed-response chunks buffered between plugin and client.
const STREAM_BUFFER_CHUNKS: usize = 8;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub plugins: SharedPlugins,
    /// Turns true when shutdown begins: plugin event streams
    /// (`text/event-stream`, endless by nature) end then, so that the
    /// graceful shutdown, which waits for every response, is not held
    /// open by a browser tab.
    pub stopping: watch::Receiver<bool>,
}

/// The route template a response was produced by, for after-request
/// middleware; set by the routers below, read by [`plugin_middleware`].
#[derive(Clone)]
struct RouteTemplate(Arc<str>);

pub fn app(state: AppState) -> Router {
    let host_routes = Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/projects", get(projects))
        .route("/api/v1/projects/{name}/terms", get(terms))
        .route("/api/v1/projects/{name}/reindex", post(reindex))
        .route("/api/v1/files/open", post(open_file))
        .route("/healthz", get(healthz))
        .route_layer(middleware::from_fn(tag_matched_route));
    host_routes
        .fallback(forward_to_plugin)
        .layer(middleware::from_fn_with_state(state.clone(), plugin_middleware))
        .with_state(state)
}

async fn tag_matched_route(matched: MatchedPath, request: Request, next: Next) -> Response {
    let template = RouteTemplate(Arc::from(matched.as_str()));
    let mut response = next.run(request).await;
    response.extensions_mut().insert(template);
    response
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message.into()}}))).into_response()
}

fn user_of(headers: &HeaderMap) -> String {
    headers
        .get("x-context-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("anonymous")
        .to_owned()
}

#[derive(Deserialize)]
struct SearchParams {
    q: Option<String>,
    project: Option<String>,
    kind: Option<String>,
}

async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Response {
    let Some(project) = params.project else {
        return error(StatusCode::BAD_REQUEST, "missing_parameter", "parameter 'project' is required");
    };
    let kind = match params.kind.as_deref().unwrap_or("literal") {
        "literal" => QueryKind::Literal,
        "regex" => QueryKind::Regex,
        "semantic" => QueryKind::Semantic,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("unknown kind '{other}' (expected literal or regex)"),
            );
        }
    };
    let started = Instant::now();
    let user = user_of(&headers);
    let query = params.q.unwrap_or_default();
    // L1/L2 answers are cheap: only the rest goes to a blocking thread.
    let result = match state.engine.search_cached(&project, &user, &query, kind, started) {
        Some(answered) => Ok(answered),
        None => {
            let engine = state.engine.clone();
            tokio::task::spawn_blocking(move || engine.search(&project, &user, &query, kind, started)).await
        }
    };
    match result {
        Ok(Ok(outcome)) => Json(outcome).into_response(),
        Ok(Err(SearchError::UnknownProject(p))) => {
            error(StatusCode::NOT_FOUND, "unknown_project", format!("unknown project '{p}'"))
        }
        Ok(Err(SearchError::BadRequest(m))) => error(StatusCode::BAD_REQUEST, "invalid_parameter", m),
        Ok(Err(SearchError::Failed(outcome, message))) => {
            let status = if outcome.status == "timeout" {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_REQUEST
            };
            let body = json!({"error": {"code": outcome.status, "message": message}, "search": outcome});
            (status, Json(body)).into_response()
        }
        Err(e) => {
            tracing::error!("search task failed: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "search failed")
        }
    }
}

/// The body is read (and ignored) before answering: a body still in flight
/// when the answer is written would make hyper close the keep-alive
/// connection under a client that is about to reuse it.
async fn reindex(State(state): State<AppState>, Path(name): Path<String>, _body: Bytes) -> Response {
    match state.engine.request_reindex(&name) {
        None => error(StatusCode::NOT_FOUND, "unknown_project", format!("unknown project '{name}'")),
        Some(Requested::Closed) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the indexer is stopping")
        }
        Some(requested) => {
            (StatusCode::ACCEPTED, Json(json!({"project": name, "status": requested.as_str()})))
                .into_response()
        }
    }
}

async fn projects(State(state): State<AppState>) -> Response {
    Json(json!({"ready": state.engine.ready(), "projects": state.engine.stats()})).into_response()
}

#[derive(Deserialize)]
struct TermsParams {
    limit: Option<usize>,
}

/// Most frequent terms first (files containing each): the vocabulary a
/// workload draws its queries from.
async fn terms(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<TermsParams>,
) -> Response {
    let limit = params.limit.unwrap_or(1000).min(100_000);
    match state.engine.top_terms(&name, limit) {
        Some(terms) => {
            let terms: Vec<_> =
                terms.into_iter().map(|(term, files)| json!({"term": term, "files": files})).collect();
            Json(json!({"project": name, "terms": terms})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "unknown_project", format!("unknown project '{name}'")),
    }
}

#[derive(Deserialize)]
struct OpenRequest {
    project: String,
    path: String,
    #[serde(default)]
    search_id: String,
    #[serde(default = "first_rank")]
    rank: u32,
}

fn first_rank() -> u32 {
    1
}

async fn open_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<OpenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(open) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()),
    };
    let user = user_of(&headers);
    match state.engine.open_file(&open.project, &user, &open.path, open.rank, &open.search_id) {
        Ok(bytes) => {
            Json(json!({"project": open.project, "path": open.path, "bytes": bytes})).into_response()
        }
        Err(SearchError::UnknownProject(p)) => {
            error(StatusCode::NOT_FOUND, "unknown_project", format!("unknown project '{p}'"))
        }
        Err(SearchError::BadRequest(m)) => error(StatusCode::NOT_FOUND, "unknown_file", m),
        Err(SearchError::Failed(_, m)) => error(StatusCode::BAD_REQUEST, "failed", m),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let plugins: Vec<_> = state
        .plugins
        .plugins()
        .iter()
        .map(|p| json!({"name": p.info.name.as_str(), "version": p.info.version.as_str()}))
        .collect();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "ready": state.engine.ready(),
        "projects": state.engine.project_names(),
        "plugins": plugins,
    }))
    .into_response()
}

/// Runs plugins' before-request middleware, then the request, then reports
/// it to after-request middleware once the response body is done.
async fn plugin_middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let request_bytes = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);

    let early = {
        let header_refs: Vec<HeaderRef<'_>> = request
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some(HeaderRef { name: RStr::from(name.as_str()), value: RStr::from(value.to_str().ok()?) })
            })
            .collect();
        let head = RequestHead {
            method: RStr::from(method.as_str()),
            path: RStr::from(request.uri().path()),
            query: RStr::from(request.uri().query().unwrap_or("")),
            headers: header_refs.as_slice().into(),
        };
        state.plugins.before_request(&head)
    };
    let response = match early {
        Some(response) => {
            let mut response = into_axum_response(response);
            response.extensions_mut().insert(RouteTemplate(Arc::from("middleware")));
            response
        }
        None => next.run(request).await,
    };
    if !state.plugins.wants_after_request() {
        return response;
    }
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map(|t| t.0.clone())
        .unwrap_or_else(|| Arc::from("unmatched"));
    let (parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    let body = ReportingBody {
        inner: body,
        bytes: 0,
        report: Some(Box::new(move |response_bytes| {
            state.plugins.after_request(&RequestRecord {
                method: RStr::from(method.as_str()),
                route: RStr::from(&*route),
                status,
                duration_ns: started.elapsed().as_nanos() as u64,
                request_bytes,
                response_bytes,
            });
        })),
    };
    Response::from_parts(parts, Body::new(body))
}

/// A response body that reports its size once it is finished or dropped
/// (so streamed responses are measured whole).
struct ReportingBody {
    inner: Body,
    bytes: u64,
    report: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl ReportingBody {
    fn report(&mut self) {
        if let Some(report) = self.report.take() {
            report(self.bytes);
        }
    }
}

impl http_body::Body for ReportingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.report(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ReportingBody {
    fn drop(&mut self) {
        self.report();
    }
}

/// Forwards a request to the plugin that registered its path.
async fn forward_to_plugin(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some((plugin, route)) = state.plugins.route_for(&path) else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("no route for '{path}'"));
    };
    let template = RouteTemplate(Arc::from(route.prefix.as_str()));
    let method = request.method().clone();
    if !route.methods.is_empty() && !route.methods.iter().any(|m| m.as_str() == method.as_str()) {
        let allowed: Vec<&str> = route.methods.iter().map(|m| m.as_str()).collect();
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method {method} not allowed on '{path}' (allowed: {})", allowed.join(", ")),
        );
        if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(axum::http::header::ALLOW, value);
        }
        response.extensions_mut().insert(template);
        return response;
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_FORWARDED_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body larger than {MAX_FORWARDED_BODY} bytes"),
            );
        }
    };
    let forwarded = HttpRequest {
        method: RString::from(parts.method.as_str()),
        path: RString::from(parts.uri.path()),
        query: RString::from(parts.uri.query().unwrap_or("")),
        headers: parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some(Header::new(n.as_str(), v.to_str().ok()?)))
            .collect(),
        body: RVec::from(body.to_vec()),
    };
    let (tx, rx) = oneshot::channel();
    let sink = ReplySink_TO::from_value(HostReplySink { reply: Some(tx), stream: None }, TD_Opaque);
    // Returns at once: the plugin answers through the sink from its threads.
    plugin.object.handle_request(forwarded, sink);
    let mut response = match rx.await {
        Ok(PluginReply::Full(response)) => into_axum_response(response),
        Ok(PluginReply::Stream { status, headers, body }) => {
            let events = headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let mut response = if events {
                Response::new(Body::from_stream(until_stopping(body, state.stopping.clone())))
            } else {
                Response::new(Body::from_stream(futures_stream(body)))
            };
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
        Err(_) => {
            tracing::error!("plugin '{}' dropped a request to '{path}' without answering", plugin.info.name);
            error(StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed", "the plugin failed to answer")
        }
    };
    response.extensions_mut().insert(template);
    response
}

fn futures_stream(
    mut body: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| body.poll_recv(cx).map(|chunk| chunk.map(Ok)))
}

/// A plugin's event stream that ends when the host starts shutting down
/// (the plugin learns it at its next event: the sink refuses it).
fn until_stopping(
    body: mpsc::Receiver<Bytes>,
    stopping: watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold((body, stopping), |(mut body, mut stopping)| async move {
        if *stopping.borrow() {
            return None;
        }
        let chunk = tokio::select! {
            chunk = body.recv() => chunk,
            _ = stopping.wait_for(|stop| *stop) => None,
        };
        chunk.map(|c| (Ok(c), (body, stopping)))
    })
}

fn into_axum_response(response: HttpResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = convert_headers(response.headers);
    let mut out = Response::new(Body::from(response.body.into_vec()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// Converts plugin headers, dropping invalid ones.
fn convert_headers(headers: RVec<Header>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for header in headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(header.name.as_bytes()), HeaderValue::from_str(header.value.as_str()))
        {
            map.append(name, value);
        }
    }
    map
}

enum PluginReply {
    Full(HttpResponse),
    Stream { status: StatusCode, headers: HeaderMap, body: mpsc::Receiver<Bytes> },
}

/// The host end of a plugin's [`ReplySink`]. Called from plugin threads; it
/// must never panic (a panic here would unwind through the plugin's frames).
struct HostReplySink {
    reply: Option<oneshot::Sender<PluginReply>>,
    stream: Option<mpsc::Sender<Bytes>>,
}

impl ReplySink for HostReplySink {
    fn respond(&mut self, response: HttpResponse) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(PluginReply::Full(response));
        }
    }

    fn start_stream(&mut self, status: u16, headers: RVec<Header>) -> bool {
        let Some(reply) = self.reply.take() else { return false };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = convert_headers(headers);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_CHUNKS);
        self.stream = Some(tx);
        reply.send(PluginReply::Stream { status, headers, body: rx }).is_ok()
    }

    fn send_chunk(&mut self, chunk: RVec<u8>) -> bool {
        let Some(stream) = &self.stream else { return false };
        let chunk = Bytes::from(chunk.into_vec());
        if tokio::runtime::Handle::try_current().is_ok() {
            // Called on a host worker: blocking here would stall it (and
            // tokio forbids it), so only a free buffer slot is accepted.
            tracing::warn!("a plugin sent a response chunk from a host worker thread");
            return stream.try_send(chunk).is_ok();
        }
        stream.blocking_send(chunk).is_ok()
    }

    fn finish(&mut self) {
        self.stream = None;
    }
}
