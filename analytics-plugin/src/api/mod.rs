//! The plugin's HTTP routes, as an axum router that the host reaches
//! through the boundary ([`bridge`]). Tests call [`router`] directly.

pub mod auth;
pub mod bridge;
pub mod datasets;
pub mod error;
pub mod export;
pub mod live;
pub mod openapi;
pub mod page;
pub mod params;
pub mod routes;
pub mod split;
pub mod sql;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use plugin_api::RouteSpec;

use crate::plugin::Shared;

pub const METRICS_PATH: &str = "/metrics";
pub const API_PREFIX: &str = "/api/v1/analytics";
pub const HEALTH_PATH: &str = "/api/v1/analytics/health";

/// What the plugin registers with the host: one spec per route, so the
/// host's route label is the route itself, plus the API prefix so unknown
/// analytics paths get this API's JSON 404.
pub fn route_specs() -> Vec<RouteSpec> {
    let mut specs = vec![RouteSpec::new(METRICS_PATH, &["GET"]), RouteSpec::new(HEALTH_PATH, &["GET"])];
    for name in routes::DATASETS.iter().chain(&["export", "openapi.json"]) {
        specs.push(RouteSpec::new(&format!("{API_PREFIX}/{name}"), &["GET"]));
    }
    specs.extend(crate::alerting::api::route_specs());
    specs.push(RouteSpec::new(live::LIVE_PATH, &["GET"]));
    specs.push(RouteSpec::new(page::PAGE_PREFIX, &["GET"]));
    specs.push(RouteSpec::new(API_PREFIX, &[]));
    specs
}

pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(METRICS_PATH, get(metrics))
        .route(HEALTH_PATH, get(health))
        .route("/api/v1/analytics/search-performance", get(routes::search_performance))
        .route("/api/v1/analytics/cache-performance", get(routes::cache_performance))
        .route("/api/v1/analytics/index-performance", get(routes::index_performance))
        .route("/api/v1/analytics/usage", get(routes::usage))
        .route("/api/v1/analytics/top-queries", get(routes::top_queries))
        .route("/api/v1/analytics/code-health", get(routes::code_health))
        .route("/api/v1/analytics/export", get(export::export))
        .route("/api/v1/analytics/openapi.json", get(|| async { Json(openapi::document()) }))
        .merge(crate::alerting::api::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared.clone());
    live::attach(api, shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    shared.refresh_gauges();
    let body = shared.collector.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.health()).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut e = error::ApiError::not_found(format!("'{}' does not take {method}", params::clip(uri.path())));
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e.code = "method_not_allowed";
    e.into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error::ApiError::not_found(format!("no analytics route '{}'", params::clip(uri.path()))).into_response()
}
