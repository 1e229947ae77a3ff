//! Handlers of the analytics routes: parse and check parameters, make sure
//! storage is up, compute the dataset, answer JSON.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{RawQuery, State},
    response::{IntoResponse, Response},
};

use super::{
    datasets::{self, Ctx, Dataset},
    error::ApiError,
    params::{AGGREGATIONS, Params},
    sql::Sql,
};
use crate::plugin::{Shared, now_us};

pub const RANGE_PARAMS: [&str; 5] = ["timerange", "from", "to", "step", "project"];

/// The dataset names `export` accepts besides raw events.
pub const DATASETS: [&str; 6] =
    ["search-performance", "cache-performance", "index-performance", "usage", "top-queries", "code-health"];

fn with_range(extra: &[&'static str]) -> Vec<&'static str> {
    RANGE_PARAMS.iter().chain(extra).copied().collect()
}

/// How long a request waits for the database to open at start-up before
/// it is answered 503 `starting`.
const READY_WAIT: Duration = Duration::from_secs(3);

/// Waits (bounded) until the schema is there to read. Reads are tried
/// once it is, even while the writer is spooling (a read may well
/// succeed), and fail as 503s. Before that: a store still opening, with no
/// failure yet, is waited for up to [`READY_WAIT`], then answered
/// `starting`; one that failed to open is `storage_unavailable` with the
/// reason. Both carry `Retry-After`.
pub async fn storage_ready(shared: &Shared) -> Result<(), ApiError> {
    let until = Instant::now() + READY_WAIT;
    loop {
        let (ready, error) = {
            let health = shared.pipeline.storage_health.lock();
            (health.ready, health.last_error.clone())
        };
        if ready {
            return Ok(());
        }
        if let Some(error) = error {
            return Err(ApiError::unavailable(format!("analytics database unreachable: {error}")));
        }
        if Instant::now() >= until {
            return Err(ApiError::starting());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn ctx<'a>(shared: &'a Shared, params: &Params) -> Result<Ctx<'a>, ApiError> {
    let range = params.range(now_us())?;
    let project = params.project()?;
    storage_ready(shared).await?;
    Ok(Ctx { store: &*shared.storage, sql: Sql::new(shared.storage.backend()), range, project })
}

/// Computes a dataset by name from already-parsed parameters (shared with
/// `export`).
pub async fn dataset(shared: &Shared, name: &str, params: &Params) -> Result<Dataset, ApiError> {
    let ctx = ctx(shared, params).await?;
    let result = match name {
        "search-performance" => {
            let aggregation = params.choice("aggregation", &AGGREGATIONS, "avg")?;
            datasets::search_performance(&ctx, aggregation).await
        }
        "cache-performance" => datasets::cache_performance(&ctx).await,
        "index-performance" => datasets::index_performance(&ctx).await,
        "usage" => datasets::usage(&ctx, params.integer("limit", 1, 1000, 20)?).await,
        "top-queries" => {
            datasets::top_queries(
                &ctx,
                params.integer("limit", 1, 1000, 20)?,
                params.boolean("zero_results")?,
            )
            .await
        }
        "code-health" => {
            let factor = params.number("hot_spot_factor", 1.0, 1000.0, shared.config.hot_spot_factor)?;
            datasets::code_health(
                &ctx,
                factor,
                params.integer("page", 1, 1_000_000, 1)?,
                params.integer("page_size", 1, 1000, 100)?,
            )
            .await
        }
        _ => return Err(ApiError::not_found(format!("no dataset '{name}'"))),
    };
    result.inspect_err(|e| {
        if e.status.is_server_error() {
            shared.logger.error(&format!("dataset '{name}' failed: {}", e.message));
        }
    })
}

/// Parameters each dataset route accepts.
pub fn allowed(name: &str) -> Vec<&'static str> {
    match name {
        "search-performance" => with_range(&["aggregation"]),
        "usage" => with_range(&["limit"]),
        "top-queries" => with_range(&["limit", "zero_results"]),
        "code-health" => with_range(&["hot_spot_factor", "page", "page_size"]),
        _ => with_range(&[]),
    }
}

async fn answer(shared: Arc<Shared>, name: &'static str, query: Option<String>) -> Response {
    let result = async {
        let params = Params::parse(query.as_deref(), &allowed(name))?;
        dataset(&shared, name, &params).await
    }
    .await;
    match result {
        Ok(dataset) => Json(dataset.document).into_response(),
        Err(error) => error.into_response(),
    }
}

pub async fn search_performance(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    answer(s, "search-performance", q).await
}
pub async fn cache_performance(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    answer(s, "cache-performance", q).await
}
pub async fn index_performance(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    answer(s, "index-performance", q).await
}
pub async fn usage(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    answer(s, "usage", q).await
}
pub async fn top_queries(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    answer(s, "top-queries", q).await
}
pub async fn code_health(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    answer(s, "code-health", q).await
}
