//! The datasets behind the analytics routes, computed from the database so
//! that every instance sharing it sees the same answers. Each reads rollups
//! where the step allows (raw events otherwise) with one portable query
//! text per backend ([`super::sql`]); percentiles always come from the
//! latency histogram, so raw and rollup sources agree exactly.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::{
    error::ApiError,
    params::Range,
    sql::{Source, Sql},
};
use crate::{
    storage::{Storage, Value, latency},
    time::format_rfc3339,
};

/// What every dataset query needs.
pub struct Ctx<'a> {
    pub store: &'a dyn Storage,
    pub sql: Sql,
    pub range: Range,
    pub project: Option<String>,
}

/// A dataset: its JSON document, and the rows export writes for it.
pub struct Dataset {
    pub document: Json,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Json>>,
}

const DAY: i64 = 86_400_000_000;

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// A sum of milliseconds read from the database, to the microsecond: sums
/// of floats in another order differ in their last bits, and rounding here
/// makes every backend's answer identical.
fn ms_sum(value: &Value) -> f64 {
    round(value.as_f64().unwrap_or(0.0), 3)
}

fn ratio(part: i64, whole: i64) -> Json {
    if whole == 0 { Json::Null } else { json!(round(part as f64 / whole as f64, 6)) }
}

impl Ctx<'_> {
    /// `col >= from AND col < to [AND project = p]` and its binds, with
    /// parameters numbered from 1.
    fn filter(&self, col: &str) -> (String, Vec<Value>) {
        let mut text = format!("{col} >= {} AND {col} < {}", self.sql.time(1), self.sql.time(2));
        let mut binds = vec![Value::Int(self.range.from_us), Value::Int(self.range.to_us)];
        if let Some(project) = &self.project {
            text.push_str(&format!(" AND project = {}", self.sql.p(3)));
            binds.push(Value::Text(project.clone()));
        }
        (text, binds)
    }

    async fn rows(&self, sql: &str, binds: &[Value]) -> Result<Vec<Vec<Value>>, ApiError> {
        self.store.query(sql, binds).await.map_err(|e| ApiError::from_storage(&e))
    }

    fn range_json(&self, source: Source) -> Json {
        let mut range = self.range.json();
        range["source"] = json!(source.name());
        range
    }
}

/// Latency figures of a bucket or a whole range.
#[derive(Default, Clone)]
struct Latency {
    count: i64,
    sum_ms: f64,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
    /// Searches per latency bucket, dense (index = bucket): merging is
    /// adding arrays.
    histogram: Vec<u64>,
}

impl Latency {
    fn merge(&mut self, other: &Latency) {
        self.count += other.count;
        self.sum_ms += other.sum_ms;
        self.min_ms = match (self.min_ms, other.min_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_ms = match (self.max_ms, other.max_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if self.histogram.len() < other.histogram.len() {
            self.histogram.resize(other.histogram.len(), 0);
        }
        for (mine, theirs) in self.histogram.iter_mut().zip(&other.histogram) {
            *mine += theirs;
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        let pairs: Vec<(i16, u64)> =
            self.histogram.iter().enumerate().filter(|(_, c)| **c > 0).map(|(b, c)| (b as i16, *c)).collect();
        latency::quantile_ms(&pairs, q).map(|v| round(v, 3))
    }

    fn value(&self, aggregation: &str) -> Json {
        if self.count == 0 {
            return if aggregation == "count" || aggregation == "sum" { json!(0) } else { Json::Null };
        }
        let v = match aggregation {
            "avg" => Some(round(self.sum_ms / self.count as f64, 3)),
            "min" => self.min_ms.map(|v| round(v, 3)),
            "max" => self.max_ms.map(|v| round(v, 3)),
            "p50" => self.quantile(0.50),
            "p95" => self.quantile(0.95),
            "p99" => self.quantile(0.99),
            "count" => return json!(self.count),
            "sum" => Some(round(self.sum_ms, 3)),
            _ => None,
        };
        json!(v)
    }

    fn all(&self) -> Json {
        json!({
            "avg": self.value("avg"), "min": self.value("min"), "max": self.value("max"),
            "p50": self.value("p50"), "p95": self.value("p95"), "p99": self.value("p99"),
            "count": self.count, "sum": self.value("sum"),
        })
    }
}

#[derive(Default, Clone)]
struct SearchBucket {
    requests: i64,
    errors: i64,
    zero_results: i64,
    results_sum: i64,
    latency: Latency,
}

/// `search-performance`: requests, errors, zero-result searches, average
/// results and latency per bucket, and the same over the whole range (an
/// overall percentile is one of all searches, from the merged histogram).
pub async fn search_performance(ctx: &Ctx<'_>, aggregation: &str) -> Result<Dataset, ApiError> {
    let sql = ctx.sql;
    let source = sql.source_for(ctx.range.step_us);
    let col = source.time_col();
    let (filter, binds) = ctx.filter(col);
    let bucket = sql.bucket(col, ctx.range.step_us);
    let measures = if source == Source::Raw {
        "count(*), sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), \
         sum(CASE WHEN status = 'ok' AND result_count = 0 THEN 1 ELSE 0 END), sum(result_count), \
         sum(latency_ms), min(latency_ms), max(latency_ms)"
    } else {
        "sum(searches), sum(CASE WHEN status <> 'ok' THEN searches ELSE 0 END), sum(zero_results), \
         sum(results_sum), sum(latency_ms_sum), min(latency_ms_min), max(latency_ms_max)"
    };
    let cast = |m: &str| {
        m.split(", ")
            .enumerate()
            .map(|(i, e)| {
                if i < 4 { format!("CAST({e} AS BIGINT)") } else { format!("CAST({e} AS DOUBLE PRECISION)") }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let stats = ctx
        .rows(
            &format!(
                "SELECT {bucket}, {} FROM {} WHERE {filter} GROUP BY 1",
                cast(measures),
                source.table("search_rollup", "search_events")
            ),
            &binds,
        )
        .await?;
    let histogram = latency_histograms(ctx, source, &bucket, &filter, &binds).await?;
    let mut buckets: BTreeMap<i64, SearchBucket> = BTreeMap::new();
    for row in stats {
        let b = buckets.entry(row[0].as_i64()).or_default();
        b.requests = row[1].as_i64();
        b.errors = row[2].as_i64();
        b.zero_results = row[3].as_i64();
        b.results_sum = row[4].as_i64();
        b.latency.count = b.requests;
        b.latency.sum_ms = ms_sum(&row[5]);
        b.latency.min_ms = row[6].as_f64();
        b.latency.max_ms = row[7].as_f64();
    }
    for (start, latency_bucket, count) in histogram {
        let b = buckets.entry(start).or_default();
        let index = latency_bucket.max(0) as usize;
        if b.latency.histogram.len() <= index {
            b.latency.histogram.resize(index + 1, 0);
        }
        b.latency.histogram[index] += count;
    }
    let mut total = SearchBucket::default();
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for start in ctx.range.buckets() {
        let b = buckets.get(&start).cloned().unwrap_or_default();
        total.requests += b.requests;
        total.errors += b.errors;
        total.zero_results += b.zero_results;
        total.results_sum += b.results_sum;
        total.latency.merge(&b.latency);
        let avg_results = if b.requests == 0 {
            Json::Null
        } else {
            json!(round(b.results_sum as f64 / b.requests as f64, 4))
        };
        let time = format_rfc3339(start);
        let latency = b.latency.value(aggregation);
        rows.push(vec![
            json!(time),
            json!(b.requests),
            json!(b.errors),
            json!(b.zero_results),
            avg_results.clone(),
            latency.clone(),
        ]);
        out.push(json!({
            "time": time, "requests": b.requests, "errors": b.errors, "zero_results": b.zero_results,
            "avg_results": avg_results, "latency_ms": latency,
        }));
    }
    let document = json!({
        "range": ctx.range_json(source),
        "project": ctx.project,
        "aggregation": aggregation,
        "buckets": out,
        "summary": {
            "requests": total.requests,
            "errors": total.errors,
            "error_rate": ratio(total.errors, total.requests),
            "zero_results": total.zero_results,
            "zero_result_rate": ratio(total.zero_results, total.requests),
            "avg_results": if total.requests == 0 { Json::Null } else { json!(round(total.results_sum as f64 / total.requests as f64, 4)) },
            "latency_ms": total.latency.all(),
        },
    });
    Ok(Dataset {
        document,
        columns: vec!["time", "requests", "errors", "zero_results", "avg_results", "latency_ms"],
        rows,
    })
}

/// (bucket start, latency bucket, searches) of a range. On SQLite and plain
/// PostgreSQL rollup sources read `search_histogram_*`, one row of
/// "bucket:count,..." per bucket (and project, or all projects): a few
/// thousand rows for 30 days instead of one per latency bucket. Raw events
/// and TimescaleDB's aggregates are read in long form. Same counts either
/// way, so every backend answers alike.
async fn latency_histograms(
    ctx: &Ctx<'_>,
    source: Source,
    bucket: &str,
    filter: &str,
    binds: &[Value],
) -> Result<Vec<(i64, i16, u64)>, ApiError> {
    if source == Source::Raw || ctx.sql.backend == crate::storage::Backend::Timescaledb {
        let count = if source == Source::Raw { "count(*)" } else { "sum(searches)" };
        let rows = ctx
            .rows(
                &format!(
                    "SELECT {bucket}, latency_bucket, CAST({count} AS BIGINT) FROM {} WHERE {filter} GROUP BY 1, 2",
                    source.table("search_latency", "search_events")
                ),
                binds,
            )
            .await?;
        return Ok(rows
            .iter()
            .map(|r| (r[0].as_i64(), r[1].as_i64() as i16, r[2].as_i64() as u64))
            .collect());
    }
    // The filter's project condition (if any) selects per-project rows;
    // without one, the all-projects rows.
    let scope = if ctx.project.is_some() { "all_projects = 0" } else { "all_projects = 1" };
    let rows = ctx
        .rows(
            &format!(
                "SELECT {bucket}, histogram FROM {} WHERE {filter} AND {scope}",
                source.table("search_histogram", "")
            ),
            binds,
        )
        .await?;
    let mut out = Vec::new();
    for row in &rows {
        let start = row[0].as_i64();
        for entry in row[1].as_str().unwrap_or("").split(',') {
            let parsed = entry
                .split_once(':')
                .and_then(|(b, c)| Some((b.parse::<i16>().ok()?, c.parse::<u64>().ok()?)));
            match parsed {
                Some((latency_bucket, count)) => out.push((start, latency_bucket, count)),
                None if entry.is_empty() => {}
                None => return Err(ApiError::internal()),
            }
        }
    }
    Ok(out)
}

/// Hits and lookups per cache layer from searches by answering layer: a
/// search answered at L2 looked up L1 (miss) and L2 (hit).
fn layers(by_cache: &BTreeMap<String, i64>) -> Json {
    let n = |k: &str| by_cache.get(k).copied().unwrap_or(0);
    let (l1, l2, l3, miss) = (n("l1"), n("l2"), n("l3"), n("miss"));
    let total = l1 + l2 + l3 + miss;
    let layer =
        |hits: i64, lookups: i64| json!({"hits": hits, "lookups": lookups, "hit_rate": ratio(hits, lookups)});
    json!({
        "l1": layer(l1, total),
        "l2": layer(l2, l2 + l3 + miss),
        "l3": layer(l3, l3 + miss),
        "any": layer(l1 + l2 + l3, total),
    })
}

/// `cache-performance`: hit rate per layer over time and overall, per project.
pub async fn cache_performance(ctx: &Ctx<'_>) -> Result<Dataset, ApiError> {
    let sql = ctx.sql;
    let source = sql.source_for(ctx.range.step_us);
    let col = source.time_col();
    let (filter, binds) = ctx.filter(col);
    let count = if source == Source::Raw { "count(*)" } else { "sum(searches)" };
    let rows = ctx
        .rows(
            &format!(
                "SELECT {}, project, cache, CAST({count} AS BIGINT) FROM {} WHERE {filter} GROUP BY 1, 2, 3",
                sql.bucket(col, ctx.range.step_us),
                source.table("search_rollup", "search_events")
            ),
            &binds,
        )
        .await?;
    let mut per_bucket: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    let mut per_project: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut overall: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        let (bucket, project, cache, n) =
            (row[0].as_i64(), row[1].as_str().unwrap_or(""), row[2].as_str().unwrap_or(""), row[3].as_i64());
        *per_bucket.entry(bucket).or_default().entry(cache.to_owned()).or_default() += n;
        *per_project.entry(project.to_owned()).or_default().entry(cache.to_owned()).or_default() += n;
        *overall.entry(cache.to_owned()).or_default() += n;
    }
    let empty = BTreeMap::new();
    let mut buckets = Vec::new();
    let mut export = Vec::new();
    for start in ctx.range.buckets() {
        let l = layers(per_bucket.get(&start).unwrap_or(&empty));
        let time = format_rfc3339(start);
        export.push(vec![
            json!(time),
            l["l1"]["hit_rate"].clone(),
            l["l2"]["hit_rate"].clone(),
            l["l3"]["hit_rate"].clone(),
            l["any"]["hit_rate"].clone(),
            l["l1"]["lookups"].clone(),
        ]);
        buckets.push(json!({"time": time, "layers": l}));
    }
    let projects: Vec<Json> =
        per_project.iter().map(|(p, c)| json!({"project": p, "layers": layers(c)})).collect();
    Ok(Dataset {
        document: json!({
            "range": ctx.range_json(source),
            "project": ctx.project,
            "buckets": buckets,
            "overall": layers(&overall),
            "projects": projects,
        }),
        columns: vec!["time", "l1_hit_rate", "l2_hit_rate", "l3_hit_rate", "any_hit_rate", "searches"],
        rows: export,
    })
}

/// `index-performance`: files, errors, error rate, throughput and duration
/// per bucket, by file type and per project.
pub async fn index_performance(ctx: &Ctx<'_>) -> Result<Dataset, ApiError> {
    let sql = ctx.sql;
    let source = sql.source_for(ctx.range.step_us);
    let col = source.time_col();
    let (filter, binds) = ctx.filter(col);
    let measures = if source == Source::Raw {
        "CAST(count(*) AS BIGINT), CAST(sum(bytes) AS BIGINT), CAST(sum(duration_ms) AS DOUBLE PRECISION), CAST(max(duration_ms) AS DOUBLE PRECISION)"
    } else {
        "CAST(sum(files) AS BIGINT), CAST(sum(bytes_sum) AS BIGINT), CAST(sum(duration_ms_sum) AS DOUBLE PRECISION), CAST(max(duration_ms_max) AS DOUBLE PRECISION)"
    };
    let rows = ctx
        .rows(
            &format!(
                "SELECT {}, project, file_type, outcome, {measures} FROM {} WHERE {filter} GROUP BY 1, 2, 3, 4",
                sql.bucket(col, ctx.range.step_us),
                source.table("index_rollup", "index_events")
            ),
            &binds,
        )
        .await?;
    #[derive(Default, Clone)]
    struct Files {
        files: i64,
        errors: i64,
        skipped: i64,
        bytes: i64,
        duration_sum: f64,
        duration_max: Option<f64>,
    }
    impl Files {
        fn add(&mut self, outcome: &str, files: i64, bytes: i64, sum: f64, max: Option<f64>) {
            self.files += files;
            match outcome {
                "failed" => self.errors += files,
                "skipped" => self.skipped += files,
                _ => {}
            }
            self.bytes += bytes;
            self.duration_sum += sum;
            self.duration_max = match (self.duration_max, max) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        fn json(&self, seconds: f64) -> Json {
            json!({
                "files": self.files, "errors": self.errors, "skipped": self.skipped,
                "error_rate": ratio(self.errors, self.files),
                "files_per_second": round(self.files as f64 / seconds, 6),
                "bytes": self.bytes,
                "duration_ms": {
                    "avg": if self.files == 0 { Json::Null } else { json!(round(self.duration_sum / self.files as f64, 3)) },
                    "max": self.duration_max.map(|v| round(v, 3)),
                },
            })
        }
    }
    let mut per_bucket: BTreeMap<i64, Files> = BTreeMap::new();
    let mut per_type: BTreeMap<String, Files> = BTreeMap::new();
    let mut per_project: BTreeMap<String, Files> = BTreeMap::new();
    let mut total = Files::default();
    for row in &rows {
        let (outcome, files, bytes, sum, max) = (
            row[3].as_str().unwrap_or(""),
            row[4].as_i64(),
            row[5].as_i64(),
            ms_sum(&row[6]),
            row[7].as_f64(),
        );
        for target in [
            per_bucket.entry(row[0].as_i64()).or_default(),
            per_type.entry(row[2].as_str().unwrap_or("").to_owned()).or_default(),
            per_project.entry(row[1].as_str().unwrap_or("").to_owned()).or_default(),
            &mut total,
        ] {
            target.add(outcome, files, bytes, sum, max);
        }
    }
    let step_seconds = ctx.range.step_us as f64 / 1e6;
    let range_seconds = (ctx.range.to_us - ctx.range.from_us) as f64 / 1e6;
    let mut buckets = Vec::new();
    let mut export = Vec::new();
    for start in ctx.range.buckets() {
        let f = per_bucket.get(&start).cloned().unwrap_or_default();
        let j = f.json(step_seconds);
        let time = format_rfc3339(start);
        export.push(vec![
            json!(time),
            json!(f.files),
            json!(f.errors),
            j["error_rate"].clone(),
            j["files_per_second"].clone(),
            j["duration_ms"]["avg"].clone(),
        ]);
        let mut entry = j;
        entry["time"] = json!(time);
        buckets.push(entry);
    }
    let by = |m: &BTreeMap<String, Files>, key: &str| -> Vec<Json> {
        m.iter()
            .map(|(k, f)| {
                let mut j = f.json(range_seconds);
                j[key] = json!(k);
                j
            })
            .collect()
    };
    Ok(Dataset {
        document: json!({
            "range": ctx.range_json(source),
            "project": ctx.project,
            "buckets": buckets,
            "summary": total.json(range_seconds),
            "by_file_type": by(&per_type, "file_type"),
            "projects": by(&per_project, "project"),
        }),
        columns: vec!["time", "files", "errors", "error_rate", "files_per_second", "avg_duration_ms"],
        rows: export,
    })
}

/// `top-queries`: the most frequent queries with latency, results,
/// zero-result rate and click-through (opens from their searches over
/// searches); `zero_results` keeps only searches that found nothing.
pub async fn top_queries(ctx: &Ctx<'_>, limit: i64, zero_only: bool) -> Result<Dataset, ApiError> {
    let sql = ctx.sql;
    let (filter, mut binds) = ctx.filter("s.time");
    let (open_filter, _) = ctx.filter("o.time");
    let zero = if zero_only { " AND s.status = 'ok' AND s.result_count = 0" } else { "" };
    let limit_param = sql.p(binds.len() + 1);
    binds.push(Value::Int(limit));
    let open_filter = open_filter.replace("project =", "o.project =");
    let rows = ctx
        .rows(
            &format!(
                "SELECT s.query, CAST(count(*) AS BIGINT), CAST(avg(s.latency_ms) AS DOUBLE PRECISION), \
                 CAST(avg(s.result_count) AS DOUBLE PRECISION), \
                 CAST(sum(CASE WHEN s.status = 'ok' AND s.result_count = 0 THEN 1 ELSE 0 END) AS BIGINT), \
                 CAST(sum(COALESCE(o.opens, 0)) AS BIGINT) \
                 FROM search_events s LEFT JOIN (SELECT search_id, count(*) AS opens FROM open_events o \
                 WHERE {open_filter} GROUP BY search_id) o ON o.search_id = s.search_id \
                 WHERE {}{zero} AND s.query IS NOT NULL \
                 GROUP BY s.query ORDER BY 2 DESC, 1 LIMIT {limit_param}",
                filter.replace("project =", "s.project =")
            ),
            &binds,
        )
        .await?;
    let mut queries = Vec::new();
    let mut export = Vec::new();
    for row in rows {
        let (count, zeros, opens) = (row[1].as_i64(), row[4].as_i64(), row[5].as_i64());
        let values = vec![
            row[0].as_str().map_or(Json::Null, |q| json!(q)),
            json!(count),
            json!(row[2].as_f64().map(|v| round(v, 3))),
            json!(row[3].as_f64().map(|v| round(v, 4))),
            ratio(zeros, count),
            ratio(opens, count),
        ];
        queries.push(json!({
            "query": values[0], "count": count, "avg_latency_ms": values[2], "avg_results": values[3],
            "zero_result_rate": values[4], "click_through_rate": values[5],
        }));
        export.push(values);
    }
    Ok(Dataset {
        document: json!({
            "range": ctx.range_json(Source::Raw),
            "project": ctx.project,
            "zero_results": zero_only,
            "limit": limit,
            "queries": queries,
        }),
        columns: vec![
            "query",
            "count",
            "avg_latency_ms",
            "avg_results",
            "zero_result_rate",
            "click_through_rate",
        ],
        rows: export,
    })
}

/// `usage`: active users over the range and per bucket, the
/// queries-per-user distribution, top users (as stored: hashed when privacy
/// says so), top files returned and opened, and an hour-of-week heatmap.
pub async fn usage(ctx: &Ctx<'_>, limit: i64) -> Result<Dataset, ApiError> {
    let sql = ctx.sql;
    let (filter, binds) = ctx.filter("time");
    let bucket = sql.bucket("time", ctx.range.step_us);
    let active = ctx
        .rows(
            &format!(
                "SELECT {bucket}, CAST(count(DISTINCT user_id) AS BIGINT) FROM \
                 (SELECT time, user_id, project FROM search_events UNION ALL SELECT time, user_id, project FROM open_events) u \
                 WHERE {filter} GROUP BY 1"
            ),
            &binds,
        )
        .await?;
    let total_active = ctx
        .rows(
            &format!(
                "SELECT CAST(count(DISTINCT user_id) AS BIGINT) FROM \
                 (SELECT time, user_id, project FROM search_events UNION ALL SELECT time, user_id, project FROM open_events) u \
                 WHERE {filter}"
            ),
            &binds,
        )
        .await?;
    let per_user = ctx
        .rows(
            &format!("SELECT user_id, CAST(count(*) AS BIGINT) FROM search_events WHERE {filter} GROUP BY 1 ORDER BY 2 DESC, 1"),
            &binds,
        )
        .await?;
    let mut limited = binds.clone();
    let lp = sql.p(limited.len() + 1);
    limited.push(Value::Int(limit));
    let (sfilter, _) = ctx.filter("s.time");
    let returned = ctx
        .rows(
            &format!(
                "SELECT {} AS path, CAST(count(*) AS BIGINT) FROM search_events s, {} WHERE {} \
                 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {lp}",
                sql.result_path_col(),
                sql.result_paths(),
                sfilter.replace("project =", "s.project =")
            ),
            &limited,
        )
        .await?;
    let opened = ctx
        .rows(
            &format!("SELECT path, CAST(count(*) AS BIGINT) FROM open_events WHERE {filter} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {lp}"),
            &limited,
        )
        .await?;
    let source = if ctx.range.step_us % 3_600_000_000 == 0 && ctx.range.from_us % 3_600_000_000 == 0 {
        Source::Hour
    } else {
        Source::Raw
    };
    let (dow, hour) = sql.dow_hour(source.time_col());
    let (hfilter, hbinds) = ctx.filter(source.time_col());
    let count = if source == Source::Raw { "count(*)" } else { "sum(searches)" };
    let heat = ctx
        .rows(
            &format!(
                "SELECT {dow}, {hour}, CAST({count} AS BIGINT) FROM {} WHERE {hfilter} GROUP BY 1, 2",
                source.table("search_rollup", "search_events")
            ),
            &hbinds,
        )
        .await?;

    let active: BTreeMap<i64, i64> = active.iter().map(|r| (r[0].as_i64(), r[1].as_i64())).collect();
    let mut buckets = Vec::new();
    let mut export = Vec::new();
    for start in ctx.range.buckets() {
        let n = active.get(&start).copied().unwrap_or(0);
        let time = format_rfc3339(start);
        export.push(vec![json!(time), json!(n)]);
        buckets.push(json!({"time": time, "active_users": n}));
    }
    // Queries per user: how many users made 1, 2-5, 6-10, ... searches.
    let bounds = [1, 5, 10, 25, 50, 100, 250, 500, 1000];
    let mut distribution: Vec<i64> = vec![0; bounds.len() + 1];
    for row in &per_user {
        let n = row[1].as_i64();
        let i = bounds.iter().position(|b| n <= *b).unwrap_or(bounds.len());
        distribution[i] += 1;
    }
    let distribution: Vec<Json> = distribution
        .iter()
        .enumerate()
        .map(|(i, users)| {
            let low = if i == 0 { 1 } else { bounds[i - 1] + 1 };
            let high = bounds.get(i).map_or(Json::Null, |b| json!(b));
            json!({"min_queries": low, "max_queries": high, "users": users})
        })
        .collect();
    let top_users: Vec<Json> = per_user
        .iter()
        .take(limit as usize)
        .map(|r| json!({"user": r[0].as_str(), "queries": r[1].as_i64()}))
        .collect();
    let files = |rows: &[Vec<Value>], key: &str| -> Vec<Json> {
        rows.iter().map(|r| json!({"path": r[0].as_str(), key: r[1].as_i64()})).collect()
    };
    let mut heatmap = vec![vec![0i64; 24]; 7];
    for row in heat {
        let (d, h) = (row[0].as_i64().rem_euclid(7) as usize, row[1].as_i64().rem_euclid(24) as usize);
        heatmap[d][h] += row[2].as_i64();
    }
    Ok(Dataset {
        document: json!({
            "range": ctx.range_json(Source::Raw),
            "project": ctx.project,
            "active_users": total_active.first().map_or(0, |r| r[0].as_i64()),
            "buckets": buckets,
            "queries_per_user": distribution,
            "top_users": top_users,
            "top_returned_files": files(&returned, "returned"),
            "top_opened_files": files(&opened, "opens"),
            "heatmap": {"rows": "day of week, 0 = Sunday (UTC)", "columns": "hour of day (UTC)", "searches": heatmap},
        }),
        columns: vec!["time", "active_users"],
        rows: export,
    })
}

/// `code-health`, per project: index coverage (last snapshot), dead code
/// (files indexed in the range and never returned nor opened in it, listed
/// with pagination), hot spots (files accessed more than `factor` times the
/// project's average), duplication, and the daily trend of coverage, dead
/// code and hot spots.
pub async fn code_health(ctx: &Ctx<'_>, factor: f64, page: i64, page_size: i64) -> Result<Dataset, ApiError> {
    let sql = ctx.sql;
    let (filter, binds) = ctx.filter("time");
    let (sfilter, _) = ctx.filter("s.time");
    let sfilter = sfilter.replace("project =", "s.project =");
    // Latest snapshot per project in the range.
    let snapshots = ctx
        .rows(
            &format!(
                "SELECT p.project, p.total_files, p.indexed_files, p.duplication_ratio FROM project_snapshots p \
                 JOIN (SELECT project, max(time) AS t FROM project_snapshots WHERE {filter} GROUP BY project) l \
                 ON l.project = p.project AND l.t = p.time ORDER BY p.project"
            ),
            &binds,
        )
        .await?;
    // Accesses per indexed file (returned in results or opened), with when
    // the file was first indexed and first reached in the range.
    let reached = format!(
        "SELECT s.project AS project, {} AS path, {} AS t FROM search_events s, {} WHERE {sfilter} \
         UNION ALL SELECT project, path, {} AS t FROM open_events WHERE {filter}",
        sql.result_path_col(),
        sql.us("s.time"),
        sql.result_paths(),
        sql.us("time"),
    );
    let accesses = ctx
        .rows(
            &format!(
                "SELECT i.project, i.path, CAST(COALESCE(a.n, 0) AS BIGINT), CAST(i.first AS BIGINT), CAST(a.first AS BIGINT) FROM \
                 (SELECT project, path, min({}) AS first FROM index_events WHERE {filter} AND outcome = 'indexed' GROUP BY project, path) i \
                 LEFT JOIN (SELECT project, path, count(*) AS n, min(t) AS first FROM ({reached}) x GROUP BY project, path) a \
                 ON a.project = i.project AND a.path = i.path ORDER BY 1, 2",
                sql.us("time")
            ),
            &binds,
        )
        .await?;
    // Accesses per file and day, for the hot-spot trend.
    let daily = ctx
        .rows(
            &format!("SELECT project, path, ((t / {DAY}) * {DAY}), CAST(count(*) AS BIGINT) FROM ({reached}) x GROUP BY 1, 2, 3"),
            &binds,
        )
        .await?;
    let (tfilter, tbinds) = ctx.filter("bucket");
    let trend = ctx
        .rows(
            &format!(
                "SELECT {}, project, CAST(max(total_files) AS BIGINT), CAST(max(indexed_files) AS BIGINT) \
                 FROM snapshot_rollup_1d WHERE {tfilter} GROUP BY 1, 2 ORDER BY 2, 1",
                sql.us("bucket")
            ),
            &tbinds,
        )
        .await?;

    let mut projects: BTreeMap<String, Json> = BTreeMap::new();
    for row in &snapshots {
        let (total, indexed) = (row[1].as_i64(), row[2].as_i64());
        projects.insert(
            row[0].as_str().unwrap_or("").to_owned(),
            json!({
                "total_files": total,
                "indexed_files": indexed,
                "index_coverage": ratio(indexed, total),
                "duplication_ratio": row[3].as_f64().map(|v| round(v, 6)),
            }),
        );
    }
    let mut files: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    // (first indexed, first reached) per project's files, for the trend.
    let mut firsts: BTreeMap<String, Vec<(i64, Option<i64>)>> = BTreeMap::new();
    for row in accesses {
        let project = row[0].as_str().unwrap_or("").to_owned();
        files
            .entry(project.clone())
            .or_default()
            .push((row[1].as_str().unwrap_or("").to_owned(), row[2].as_i64()));
        let first_reached = (row[4] != Value::Null).then(|| row[4].as_i64());
        firsts.entry(project).or_default().push((row[3].as_i64(), first_reached));
    }
    let mut per_day: BTreeMap<(String, i64), Vec<i64>> = BTreeMap::new();
    for row in daily {
        per_day
            .entry((row[0].as_str().unwrap_or("").to_owned(), row[2].as_i64()))
            .or_default()
            .push(row[3].as_i64());
    }
    let mut export = Vec::new();
    for (project, list) in &files {
        let indexed = list.len() as i64;
        let total: i64 = list.iter().map(|(_, n)| n).sum();
        let dead: Vec<&String> = list.iter().filter(|(_, n)| *n == 0).map(|(p, _)| p).collect();
        let threshold = if indexed == 0 { f64::INFINITY } else { factor * total as f64 / indexed as f64 };
        let mut hot: Vec<(&String, i64)> =
            list.iter().filter(|(_, n)| total > 0 && *n as f64 > threshold).map(|(p, n)| (p, *n)).collect();
        hot.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let start = ((page - 1) * page_size) as usize;
        let dead_page: Vec<&String> = dead.iter().skip(start).take(page_size as usize).copied().collect();
        let entry = projects.entry(project.clone()).or_insert_with(|| json!({}));
        entry["files_seen"] = json!(indexed);
        entry["dead_code"] = json!({
            "files": dead.len(),
            "ratio": ratio(dead.len() as i64, indexed),
            "page": page, "page_size": page_size,
            "paths": dead_page,
        });
        entry["hot_spots"] = json!({
            "factor": factor,
            "average_accesses": if indexed == 0 { Json::Null } else { json!(round(total as f64 / indexed as f64, 4)) },
            "files": hot.iter().map(|(p, n)| json!({"path": p, "accesses": n})).collect::<Vec<_>>(),
        });
        for path in dead {
            export.push(vec![json!(project), json!(path), json!("dead")]);
        }
        for (path, n) in &hot {
            export.push(vec![json!(project), json!(path), json!(format!("hot:{n}"))]);
        }
    }
    let coverage: BTreeMap<(String, i64), Json> = trend
        .iter()
        .map(|row| {
            (
                (row[1].as_str().unwrap_or("").to_owned(), row[0].as_i64()),
                ratio(row[3].as_i64(), row[2].as_i64()),
            )
        })
        .collect();
    // One point per day of the range from the first day with data (days
    // before it would all be empty; a range reaching back centuries would
    // otherwise be millions of points): coverage from the day's snapshots;
    // dead files = indexed by the day's end and not reached since the range
    // began; hot spots = files reached that day more than `factor` times the
    // day's average per indexed file.
    let earliest = firsts
        .values()
        .flat_map(|l| l.iter().map(|(first, _)| *first))
        .chain(coverage.keys().map(|(_, day)| *day))
        .chain(per_day.keys().map(|(_, day)| *day))
        .min()
        .unwrap_or(ctx.range.to_us);
    let first_day = ctx.range.from_us.max(earliest).div_euclid(DAY) * DAY;
    let days: Vec<i64> = (0..).map(|i| first_day + i * DAY).take_while(|d| *d < ctx.range.to_us).collect();
    let mut trends: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    let names: std::collections::BTreeSet<String> =
        firsts.keys().cloned().chain(coverage.keys().map(|(p, _)| p.clone())).collect();
    for project in names {
        let list = firsts.get(&project).map(Vec::as_slice).unwrap_or(&[]);
        let points = days
            .iter()
            .map(|&day| {
                let end = day + DAY;
                let indexed = list.iter().filter(|(first, _)| *first < end).count() as i64;
                let dead = list
                    .iter()
                    .filter(|(first, reached)| *first < end && reached.is_none_or(|r| r >= end))
                    .count() as i64;
                let counts = per_day.get(&(project.clone(), day)).map(Vec::as_slice).unwrap_or(&[]);
                let total: i64 = counts.iter().sum();
                let hot = if indexed == 0 || total == 0 {
                    0
                } else {
                    let threshold = factor * total as f64 / indexed as f64;
                    counts.iter().filter(|n| **n as f64 > threshold).count()
                };
                json!({
                    "time": format_rfc3339(day),
                    "index_coverage": coverage.get(&(project.clone(), day)).cloned().unwrap_or(Json::Null),
                    "dead_files": dead,
                    "dead_code_ratio": ratio(dead, indexed),
                    "hot_spots": hot,
                })
            })
            .collect();
        trends.insert(project, points);
    }
    let list: Vec<Json> = projects
        .into_iter()
        .map(|(project, mut entry)| {
            entry["project"] = json!(project);
            entry["trend"] = json!(trends.remove(&project).unwrap_or_default());
            entry
        })
        .collect();
    Ok(Dataset {
        document: json!({
            "range": ctx.range_json(Source::Raw),
            "project": ctx.project,
            "projects": list,
        }),
        columns: vec!["project", "path", "finding"],
        rows: export,
    })
}
