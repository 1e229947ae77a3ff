//! The plugin's HTTP routes, as an axum router that the host reaches
//! through the boundary ([`bridge`]). Tests call [`router`] directly.

pub mod bridge;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use plugin_api::RouteSpec;
use serde_json::json;

use crate::plugin::Shared;

pub const METRICS_PATH: &str = "/metrics";
pub const API_PREFIX: &str = "/api/v1/analytics";
pub const HEALTH_PATH: &str = "/api/v1/analytics/health";

/// What the plugin registers with the host: one spec per route, so the
/// host's route label is the route itself, plus the API prefix so unknown
/// analytics paths get this API's JSON 404.
pub fn route_specs() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(METRICS_PATH, &["GET"]),
        RouteSpec::new(HEALTH_PATH, &["GET"]),
        RouteSpec::new(API_PREFIX, &[]),
    ]
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(METRICS_PATH, get(metrics))
        .route(HEALTH_PATH, get(health))
        .fallback(not_found)
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    shared.refresh_gauges();
    let body = shared.collector.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.health()).into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let body = json!({"error": {
        "code": "not_found",
        "message": format!("no analytics route '{}'", uri.path()),
        "parameter": null,
    }});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
