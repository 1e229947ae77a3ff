//! `export`: any dataset of the API, or raw events, as CSV, JSON or NDJSON.
//! Raw events are read by one streamed query through a bounded channel and
//! sent in chunks, so an export of millions of rows runs in constant
//! memory; the host forwards the chunks with backpressure.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value as Json, json};

use super::{
    datasets::Ctx,
    error::ApiError,
    params::Params,
    routes::{self, DATASETS},
};
use crate::{
    plugin::Shared,
    storage::{Backend, Value},
};

pub const RAW_DATASETS: [&str; 4] = ["raw-searches", "raw-index", "raw-opens", "raw-snapshots"];
pub const FORMATS: [&str; 3] = ["csv", "json", "ndjson"];

/// A raw table: its name and the columns exported, as SQL per backend.
struct RawTable {
    table: &'static str,
    columns: &'static [&'static str],
}

const RAW: [RawTable; 4] = [
    RawTable {
        table: "search_events",
        columns: &[
            "project",
            "user_id",
            "query",
            "kind",
            "cache",
            "status",
            "error_code",
            "latency_ms",
            "result_count",
            "top_results",
            "search_id",
        ],
    },
    RawTable {
        table: "index_events",
        columns: &[
            "project",
            "path",
            "file_type",
            "bytes",
            "duration_ms",
            "outcome",
            "error_code",
            "queue_depth",
        ],
    },
    RawTable { table: "open_events", columns: &["project", "user_id", "path", "rank", "search_id"] },
    RawTable {
        table: "project_snapshots",
        columns: &[
            "project",
            "total_files",
            "indexed_files",
            "vector_store_bytes",
            "embedding_cache_bytes",
            "duplication_ratio",
        ],
    },
];

/// Whether exporting `dataset` needs the admin role (raw events hold user
/// ids and query texts).
pub fn needs_admin(dataset: &str) -> bool {
    RAW_DATASETS.contains(&dataset)
}

fn content_type(format: &str) -> &'static str {
    match format {
        "csv" => "text/csv; charset=utf-8",
        "ndjson" => "application/x-ndjson",
        _ => "application/json",
    }
}

/// One CSV field.
fn csv_field(out: &mut String, value: &Json) {
    match value {
        Json::Null => {}
        Json::String(s) => csv_text(out, s),
        other => csv_text(out, &other.to_string()),
    }
}

/// Text as one CSV field: quoted when needed; text that a spreadsheet would
/// run as a formula is prefixed with `'`.
fn csv_text(out: &mut String, text: &str) {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = text.contains([',', '"', '\n', '\r']);
    if quoted {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    if quoted {
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

fn csv_row(out: &mut String, values: &[Json]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, value);
    }
    out.push_str("\r\n");
}

fn object(columns: &[&str], values: &[Json]) -> Json {
    Json::Object(columns.iter().zip(values).map(|(c, v)| ((*c).to_owned(), v.clone())).collect())
}

/// Renders rows; `first` says whether they are the first of the document.
fn render(format: &str, columns: &[&str], rows: &[Vec<Json>], first: bool) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        match format {
            "csv" => csv_row(&mut out, row),
            "ndjson" => {
                out.push_str(&object(columns, row).to_string());
                out.push('\n');
            }
            _ => {
                if !(first && i == 0) {
                    out.push(',');
                }
                out.push_str(&object(columns, row).to_string());
            }
        }
    }
    out
}

fn attachment(dataset: &str, format: &str, from_us: i64, to_us: i64) -> String {
    let compact = |t: i64| crate::time::format_rfc3339(t - t % 1_000_000).replace(['-', ':'], "");
    format!(
        "attachment; filename=\"context-analytics-{dataset}-{}-{}.{format}\"",
        compact(from_us),
        compact(to_us)
    )
}

pub async fn export(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    match build(shared, query).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn build(shared: Arc<Shared>, query: Option<String>) -> Result<Response, ApiError> {
    let mut allowed: Vec<&str> = vec!["dataset", "format"];
    for name in DATASETS {
        for key in routes::allowed(name) {
            if !allowed.contains(&key) {
                allowed.push(key);
            }
        }
    }
    let params = Params::parse(query.as_deref(), &allowed)?;
    let mut names: Vec<&str> = DATASETS.to_vec();
    names.extend(RAW_DATASETS);
    let dataset = match params.get("dataset") {
        None => {
            return Err(ApiError::bad_parameter(
                "dataset",
                format!("'dataset' is required (expected {})", names.join(", ")),
            ));
        }
        Some(_) => params.choice("dataset", &names, "")?,
    };
    let format = params.choice("format", &FORMATS, "csv")?;
    let mut own: Vec<&str> = vec!["dataset", "format"];
    own.extend(if needs_admin(dataset) { routes::RANGE_PARAMS.to_vec() } else { routes::allowed(dataset) });
    if let Some(key) = allowed.iter().find(|k| params.get(k).is_some() && !own.contains(k)) {
        return Err(ApiError::bad_parameter(
            key,
            format!("parameter '{key}' does not apply to dataset '{dataset}' (expected {})", own.join(", ")),
        ));
    }
    if !needs_admin(dataset) {
        let data = routes::dataset(&shared, dataset, &params).await?;
        let range = routes::ctx(&shared, &params).await?.range;
        let body = match format {
            "json" => data.document.to_string(),
            "csv" => {
                let mut out = String::new();
                csv_row(&mut out, &data.columns.iter().map(|c| json!(c)).collect::<Vec<_>>());
                out + &render("csv", &data.columns, &data.rows, true)
            }
            _ => render("ndjson", &data.columns, &data.rows, true),
        };
        return Ok((
            [
                (header::CONTENT_TYPE, content_type(format).to_owned()),
                (header::CONTENT_DISPOSITION, attachment(dataset, format, range.from_us, range.to_us)),
            ],
            body,
        )
            .into_response());
    }
    let ctx = routes::ctx(&shared, &params).await?;
    let range = ctx.range;
    let table = &RAW[RAW_DATASETS.iter().position(|d| *d == dataset).expect("a raw dataset")];
    let mut columns: Vec<&'static str> = vec!["time", "instance_id", "boot_id", "seq"];
    columns.extend(table.columns);
    let (filter, binds) = filter_binds(&ctx);
    let sql = ctx.sql;
    let selected: Vec<String> = table
        .columns
        .iter()
        .map(|c| match (*c, sql.backend) {
            ("top_results", Backend::Postgres | Backend::Timescaledb) => {
                "array_to_json(top_results)::text".to_owned()
            }
            ("top_results", Backend::Sqlite) => crate::storage::sqlite::TOP_RESULTS_JSON.to_owned(),
            (c, _) => c.to_owned(),
        })
        .collect();
    // Time order straight from the (project, time) or time index: one
    // query, streamed, no sort of the whole range.
    let query = format!(
        "SELECT {}, instance_id, boot_id, seq, {} FROM {} WHERE {filter} ORDER BY time",
        sql.us("time"),
        selected.join(", "),
        table.table
    );
    let header_chunk = match format {
        "csv" => {
            let mut out = String::new();
            csv_row(&mut out, &columns.iter().map(|c| json!(c)).collect::<Vec<_>>());
            out
        }
        "json" => "[".to_owned(),
        _ => String::new(),
    };
    let rows = shared.storage.stream(query, binds);
    // (chunks, rows sent so far, finished): a body chunk per database chunk.
    let pages = futures_util::stream::unfold((rows, 0u64, false), move |(mut rows, sent, done)| {
        let columns = columns.clone();
        async move {
            if done {
                return None;
            }
            let (values, finished) = match rows.recv().await {
                Some(Ok(values)) => (values, false),
                // Headers are sent: end the body early; the client sees
                // a truncated download rather than a false success.
                Some(Err(e)) => {
                    return Some((Err(std::io::Error::other(e.to_string())), (rows, sent, true)));
                }
                None => (Vec::new(), true),
            };
            let mut chunk = render_raw(format, &columns, &values, sent == 0);
            if finished && format == "json" {
                chunk.push(']');
            }
            let sent = sent + values.len() as u64;
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(chunk)), (rows, sent, finished)))
        }
    });
    let head =
        futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(header_chunk)) });
    use futures_util::StreamExt as _;
    let body = Body::from_stream(head.chain(pages));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type(format).to_owned()),
            (header::CONTENT_DISPOSITION, attachment(dataset, format, range.from_us, range.to_us)),
        ],
        body,
    )
        .into_response())
}

fn filter_binds(ctx: &Ctx<'_>) -> (String, Vec<Value>) {
    let sql = ctx.sql;
    let mut text = format!("time >= {} AND time < {}", sql.time(1), sql.time(2));
    let mut binds = vec![Value::Int(ctx.range.from_us), Value::Int(ctx.range.to_us)];
    if let Some(project) = &ctx.project {
        text.push_str(&format!(" AND project = {}", sql.p(3)));
        binds.push(Value::Text(project.clone()));
    }
    (text, binds)
}

/// Renders raw rows straight from the database values (no JSON value per
/// cell): `time` as RFC 3339, `top_results` as the JSON array text stored.
fn render_raw(format: &str, columns: &[&str], rows: &[Vec<Value>], first: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(rows.len() * 160);
    for (r, row) in rows.iter().enumerate() {
        match format {
            "csv" => {
                for (i, value) in row.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match (columns[i], value) {
                        ("time", v) => out.push_str(&crate::time::format_rfc3339(v.as_i64())),
                        (_, Value::Null) => {}
                        (_, Value::Int(v)) => {
                            let _ = write!(out, "{v}");
                        }
                        (_, Value::Float(v)) => {
                            let _ = write!(out, "{v}");
                        }
                        (_, Value::Text(t)) => csv_text(&mut out, t),
                    }
                }
                out.push_str("\r\n");
            }
            _ => {
                if format == "json" && !(first && r == 0) {
                    out.push(',');
                }
                out.push('{');
                for (i, value) in row.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(columns[i]);
                    out.push_str("\":");
                    match (columns[i], value) {
                        ("time", v) => {
                            let _ = write!(out, "\"{}\"", crate::time::format_rfc3339(v.as_i64()));
                        }
                        // Stored as a JSON array by the plugin itself.
                        ("top_results", Value::Text(t)) => out.push_str(t),
                        (_, Value::Int(v)) => {
                            let _ = write!(out, "{v}");
                        }
                        (_, Value::Float(v)) if v.is_finite() => {
                            let _ = write!(out, "{v}");
                        }
                        (_, Value::Text(t)) => {
                            out.push_str(&serde_json::to_string(t.as_str()).unwrap_or_else(|_| "null".into()))
                        }
                        (_, Value::Null | Value::Float(_)) => out.push_str("null"),
                    }
                }
                out.push('}');
                if format == "ndjson" {
                    out.push('\n');
                }
            }
        }
    }
    out
}
