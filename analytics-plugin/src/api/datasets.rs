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
    split::{self, Split},
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

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

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

    /// ` AND col = p` for the project filter (binding it), or nothing.
    fn project_cond(&self, col: &str, binds: &mut Vec<Value>) -> String {
        match &self.project {
            Some(project) => {
                binds.push(Value::Text(project.clone()));
                format!(" AND {col} = {}", self.sql.p(binds.len()))
            }
            None => String::new(),
        }
    }

    /// The ranges overlapping the range that the usage rollups do not hold
    /// yet: written since the last rollup run (`rollup_dirty`), or left
    /// pending by it because their hour had not ended (`usage_dirty`). One
    /// statement, so a run moving ranges from one table to the other in
    /// between cannot hide them.
    async fn dirty(&self) -> Result<Vec<(i64, i64)>, ApiError> {
        let select = |table: &str| {
            format!(
                "SELECT {}, {} FROM {table} WHERE to_time >= {} AND from_time < {}",
                self.sql.us("from_time"),
                self.sql.us("to_time"),
                self.sql.time(1),
                self.sql.time(2)
            )
        };
        let rows = self
            .rows(
                &format!("{} UNION ALL {}", select("rollup_dirty"), select("usage_dirty")),
                &[Value::Int(self.range.from_us), Value::Int(self.range.to_us)],
            )
            .await?;
        Ok(rows.iter().map(|r| (r[0].as_i64(), r[1].as_i64())).collect())
    }

    fn split_with(&self, dirty: &[(i64, i64)], hours: bool, days: bool) -> Split {
        Split::new(self.range.from_us, self.range.to_us, dirty, hours, days)
    }

    /// The range split between the usage rollups and raw events.
    async fn split(&self, hours: bool, days: bool) -> Result<Split, ApiError> {
        Ok(self.split_with(&self.dirty().await?, hours, days))
    }

    /// The range, with as source the coarsest rollup a split reads.
    fn split_json(&self, split: &Split) -> Json {
        self.range_json(if !split.days.is_empty() {
            Source::Day
        } else if !split.hours.is_empty() {
            Source::Hour
        } else {
            Source::Raw
        })
    }

    fn range_json(&self, source: Source) -> Json {
        let mut range = self.range.json();
        range["source"] = json!(source.name());
        range
    }

    /// Where a dataset of the minute, hour and day rollups reads `source`'s
    /// range: the rollup's buckets that no `rollup_dirty` mark touches, and
    /// raw events in the buckets one does (written since the last
    /// maintenance run, which brings those buckets up to date and deletes
    /// their marks in one transaction). So an answer holds every event
    /// committed before the request, whenever maintenance last ran, and
    /// none twice. Marks are read first: a run finishing in between only
    /// makes a raw part's buckets clean, and raw events are the truth. On
    /// TimescaleDB the rollups are real-time continuous aggregates, which
    /// miss events written late into buckets already materialized: those
    /// buckets stay marked (`cagg_refresh_pending`) until maintenance has
    /// refreshed them.
    async fn parts(&self, source: Source) -> Result<Vec<Part>, ApiError> {
        let (filter, binds) = self.filter(source.time_col());
        let Some(resolution) = source.resolution_us() else {
            return Ok(vec![Part { source, filter, binds }]);
        };
        let select = |table: &str| {
            format!(
                "SELECT {}, {} FROM {table} WHERE to_time >= {} AND from_time < {}",
                self.sql.us("from_time"),
                self.sql.us("to_time"),
                self.sql.time(1),
                self.sql.time(2)
            )
        };
        // On TimescaleDB, marks maintenance has moved on but not yet
        // refreshed in the continuous aggregates too; one statement, so a
        // run moving them in between cannot hide them.
        let marks = if self.sql.backend == crate::storage::Backend::Timescaledb {
            format!("{} UNION ALL {}", select("rollup_dirty"), select("cagg_refresh_pending"))
        } else {
            select("rollup_dirty")
        };
        let rows = self.rows(&marks, &[Value::Int(self.range.from_us), Value::Int(self.range.to_us)]).await?;
        let marked = marked_buckets(
            rows.iter().map(|r| (r[0].as_i64(), r[1].as_i64())),
            resolution,
            (self.range.from_us, self.range.to_us),
        );
        if marked.is_empty() {
            return Ok(vec![Part { source, filter, binds }]);
        }
        let mut rollup_binds = binds;
        let clean = split::within(source.time_col(), &marked, &mut rollup_binds, |n| self.sql.time(n));
        // Whole marked buckets, as the rollup would hold them.
        let mut raw_binds = Vec::new();
        let dirty = split::within("time", &marked, &mut raw_binds, |n| self.sql.time(n));
        let project = self.project_cond("project", &mut raw_binds);
        Ok(vec![
            Part { source, filter: format!("{filter} AND NOT {clean}"), binds: rollup_binds },
            Part { source: Source::Raw, filter: format!("{dirty}{project}"), binds: raw_binds },
        ])
    }
}

/// One part of a range ([`Ctx::parts`]): a source and the condition (with
/// its binds) that selects its rows.
struct Part {
    source: Source,
    filter: String,
    binds: Vec<Value>,
}

/// The `resolution`-wide buckets that the marks ([from, to], inclusive)
/// touch and that start within `range` (as the rollup's rows selected by
/// it do), merged: [from, to) intervals of whole buckets.
fn marked_buckets(
    marks: impl Iterator<Item = (i64, i64)>,
    resolution: i64,
    range: (i64, i64),
) -> Vec<(i64, i64)> {
    let first = range.0.div_euclid(resolution) * resolution
        + if range.0.rem_euclid(resolution) == 0 { 0 } else { resolution };
    let end = (range.1 - 1).div_euclid(resolution) * resolution + resolution;
    let spans = marks
        .map(|(from, to)| crate::storage::rollup::bucket_span(from, to, resolution))
        .map(|(from, to)| (from.max(first), to.min(end)))
        .filter(|(from, to)| from < to)
        .collect();
    crate::storage::rollup::merge_ranges(spans)
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
    let source = ctx.sql.source_for(ctx.range.step_us);
    let mut buckets: BTreeMap<i64, SearchBucket> = BTreeMap::new();
    for part in ctx.parts(source).await? {
        search_part(ctx, &part, &mut buckets).await?;
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

/// Adds one part's searches to `buckets`.
async fn search_part(
    ctx: &Ctx<'_>,
    part: &Part,
    buckets: &mut BTreeMap<i64, SearchBucket>,
) -> Result<(), ApiError> {
    let source = part.source;
    let bucket = ctx.sql.bucket(source.time_col(), ctx.range.step_us);
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
                "SELECT {bucket}, {} FROM {} WHERE {} GROUP BY 1",
                cast(measures),
                source.table("search_rollup", "search_events"),
                part.filter
            ),
            &part.binds,
        )
        .await?;
    let histogram = latency_histograms(ctx, source, &bucket, &part.filter, &part.binds).await?;
    for row in stats {
        let b = buckets.entry(row[0].as_i64()).or_default();
        b.requests += row[1].as_i64();
        b.errors += row[2].as_i64();
        b.zero_results += row[3].as_i64();
        b.results_sum += row[4].as_i64();
        // The histogram is added below, from its own query.
        b.latency.merge(&Latency {
            count: row[1].as_i64(),
            sum_ms: ms_sum(&row[5]),
            min_ms: row[6].as_f64(),
            max_ms: row[7].as_f64(),
            histogram: Vec::new(),
        });
    }
    for (start, latency_bucket, count) in histogram {
        let b = buckets.entry(start).or_default();
        let index = latency_bucket.max(0) as usize;
        if b.latency.histogram.len() <= index {
            b.latency.histogram.resize(index + 1, 0);
        }
        b.latency.histogram[index] += count;
    }
    Ok(())
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
    let mut rows = Vec::new();
    for part in ctx.parts(source).await? {
        let count = if part.source == Source::Raw { "count(*)" } else { "sum(searches)" };
        rows.extend(
            ctx.rows(
                &format!(
                    "SELECT {}, project, cache, CAST({count} AS BIGINT) FROM {} WHERE {} GROUP BY 1, 2, 3",
                    sql.bucket(part.source.time_col(), ctx.range.step_us),
                    part.source.table("search_rollup", "search_events"),
                    part.filter
                ),
                &part.binds,
            )
            .await?,
        );
    }
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
    let mut rows = Vec::new();
    for part in ctx.parts(source).await? {
        let measures = if part.source == Source::Raw {
            "CAST(count(*) AS BIGINT), CAST(sum(bytes) AS BIGINT), CAST(sum(duration_ms) AS DOUBLE PRECISION), CAST(max(duration_ms) AS DOUBLE PRECISION)"
        } else {
            "CAST(sum(files) AS BIGINT), CAST(sum(bytes_sum) AS BIGINT), CAST(sum(duration_ms_sum) AS DOUBLE PRECISION), CAST(max(duration_ms_max) AS DOUBLE PRECISION)"
        };
        rows.extend(
            ctx.rows(
                &format!(
                    "SELECT {}, project, file_type, outcome, {measures} FROM {} WHERE {} GROUP BY 1, 2, 3, 4",
                    sql.bucket(part.source.time_col(), ctx.range.step_us),
                    part.source.table("index_rollup", "index_events"),
                    part.filter
                ),
                &part.binds,
            )
            .await?,
        );
    }
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
///
/// Whole clean hours and days come from `query_rollup_*`, the rest of the
/// range from raw events ([`super::split`]). An open counts when it and its
/// search both lie in the range: pairs within one rolled-up hour and
/// project are in the rollup, other pairs of rolled-up times are
/// `click_pairs` rows, and pairs with a side in a raw part are joined from
/// raw events.
pub async fn top_queries(ctx: &Ctx<'_>, limit: i64, zero_only: bool) -> Result<Dataset, ApiError> {
    let sql = ctx.sql;
    let split = ctx.split(true, true).await?;
    let time = |n: usize| sql.time(n);
    let zero = if zero_only { " AND s.status = 'ok' AND s.result_count = 0" } else { "" };
    // (count, latency sum, results sum, zero-result searches, opens) per query.
    type Sums = (i64, f64, i64, i64, i64);
    let mut per_query: BTreeMap<String, Sums> = BTreeMap::new();
    let mut add = |rows: Vec<Vec<Value>>, clicks_only: bool| {
        for row in rows {
            let Some(query) = row[0].as_str() else { continue };
            let e = per_query.entry(query.to_owned()).or_default();
            if clicks_only {
                e.4 += row[1].as_i64();
            } else {
                e.0 += row[1].as_i64();
                e.1 += row[2].as_f64().unwrap_or(0.0);
                e.2 += row[3].as_i64();
                e.3 += row[4].as_i64();
                e.4 += row[5].as_i64();
            }
        }
    };
    if !split.raw.is_empty() {
        let mut binds = Vec::new();
        let raw = split::within("s.time", &split.raw, &mut binds, time);
        let project = ctx.project_cond("s.project", &mut binds);
        add(
            ctx.rows(
                &format!(
                    "SELECT s.query, CAST(count(*) AS BIGINT), CAST(sum(s.latency_ms) AS DOUBLE PRECISION), \
                     CAST(sum(s.result_count) AS BIGINT), \
                     CAST(sum(CASE WHEN s.status = 'ok' AND s.result_count = 0 THEN 1 ELSE 0 END) AS BIGINT), \
                     CAST(0 AS BIGINT) FROM search_events s WHERE {raw}{project}{zero} AND s.query IS NOT NULL GROUP BY 1"
                ),
                &binds,
            )
            .await?,
            false,
        );
        // Pairs with a side in a raw part: both there (raw events), the
        // search there and the open rolled up (open_keys), the open there
        // and the search rolled up (search_keys). Each from the raw side,
        // then by search_id (CROSS JOIN fixes that order on SQLite).
        let covered = split.covered();
        let mut binds = Vec::new();
        let s_raw = split::within("s.time", &split.raw, &mut binds, time);
        let o_raw = split::within("time", &split.raw, &mut binds, time);
        let sp = ctx.project_cond("s.project", &mut binds);
        let op = ctx.project_cond("project", &mut binds);
        add(
            ctx.rows(
                &format!(
                    "SELECT s.query, CAST(sum(o.n) AS BIGINT) FROM search_events s JOIN \
                     (SELECT search_id, count(*) AS n FROM open_events WHERE {o_raw}{op} GROUP BY 1) o \
                     ON o.search_id = s.search_id WHERE {s_raw}{sp}{zero} AND s.query IS NOT NULL GROUP BY 1"
                ),
                &binds,
            )
            .await?,
            true,
        );
        if !covered.is_empty() {
            let mut binds = Vec::new();
            let s_raw = split::within("s.time", &split.raw, &mut binds, time);
            let o_cov = split::within("o.time", &covered, &mut binds, time);
            let sp = ctx.project_cond("s.project", &mut binds);
            let op = ctx.project_cond("o.project", &mut binds);
            add(
                ctx.rows(
                    &format!(
                        "SELECT s.query, CAST(count(*) AS BIGINT) FROM search_events s CROSS JOIN open_keys o \
                         WHERE o.search_id = s.search_id AND {s_raw} AND {o_cov}{sp}{op}{zero} \
                         AND s.query IS NOT NULL GROUP BY 1"
                    ),
                    &binds,
                )
                .await?,
                true,
            );
            let mut binds = Vec::new();
            let o_raw = split::within("o.time", &split.raw, &mut binds, time);
            let s_cov = split::within("s.time", &covered, &mut binds, time);
            let sp = ctx.project_cond("s.project", &mut binds);
            let op = ctx.project_cond("o.project", &mut binds);
            let zero = if zero_only { " AND s.zero_result = 1" } else { "" };
            add(
                ctx.rows(
                    &format!(
                        "SELECT s.query, CAST(count(*) AS BIGINT) FROM open_events o CROSS JOIN search_keys s \
                         WHERE s.search_id = o.search_id AND {o_raw} AND {s_cov}{sp}{op}{zero} GROUP BY 1"
                    ),
                    &binds,
                )
                .await?,
                true,
            );
        }
    }
    let measures = if zero_only {
        "CAST(sum(zero_results) AS BIGINT), CAST(sum(zero_latency_ms_sum) AS DOUBLE PRECISION), CAST(0 AS BIGINT), \
         CAST(sum(zero_results) AS BIGINT), CAST(sum(zero_opens) AS BIGINT)"
    } else {
        "CAST(sum(searches) AS BIGINT), CAST(sum(latency_ms_sum) AS DOUBLE PRECISION), CAST(sum(results_sum) AS BIGINT), \
         CAST(sum(zero_results) AS BIGINT), CAST(sum(opens) AS BIGINT)"
    };
    for (table, parts) in [("query_rollup_1h", &split.hours), ("query_rollup_1d", &split.days)] {
        if parts.is_empty() {
            continue;
        }
        let mut binds = Vec::new();
        let cond = split::within("bucket", parts, &mut binds, time);
        let project = ctx.project_cond("project", &mut binds);
        let rows = ctx
            .rows(&format!("SELECT query, {measures} FROM {table} WHERE {cond}{project} GROUP BY 1"), &binds)
            .await?;
        add(rows, false);
    }
    let covered = split.covered();
    if !covered.is_empty() {
        let mut binds = Vec::new();
        let s_in = split::within("search_time", &covered, &mut binds, time);
        let o_in = split::within("open_time", &covered, &mut binds, time);
        let sp = ctx.project_cond("search_project", &mut binds);
        let op = ctx.project_cond("open_project", &mut binds);
        let zero = if zero_only { " AND zero_result = 1" } else { "" };
        add(
            ctx.rows(
                &format!(
                    "SELECT query, CAST(count(*) AS BIGINT) FROM click_pairs WHERE {s_in} AND {o_in}{sp}{op}{zero} GROUP BY 1"
                ),
                &binds,
            )
            .await?,
            true,
        );
    }
    let mut ranked: Vec<(String, Sums)> = per_query.into_iter().filter(|(_, e)| e.0 > 0).collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit.max(0) as usize);
    let mut queries = Vec::new();
    let mut export = Vec::new();
    for (query, (count, latency_sum, results_sum, zeros, opens)) in ranked {
        let values = vec![
            json!(query),
            json!(count),
            json!(round(latency_sum / count as f64, 3)),
            json!(round(results_sum as f64 / count as f64, 4)),
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
            "range": ctx.split_json(&split),
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
///
/// Whole clean hours and days come from `user_rollup_*` and `file_rollup_*`
/// (the heatmap from `search_rollup_1h`), the rest from raw events
/// ([`super::split`]); distinct users are counted over the union of the
/// parts' (bucket, user) pairs, never summed.
pub async fn usage(ctx: &Ctx<'_>, limit: i64) -> Result<Dataset, ApiError> {
    let sql = ctx.sql;
    let step = ctx.range.step_us;
    let dirty = ctx.dirty().await?;
    let all = ctx.split_with(&dirty, true, true);
    let series = ctx.split_with(&dirty, step % HOUR == 0, step % DAY == 0);
    let time = |n: usize| sql.time(n);
    // Active users per bucket: distinct (bucket, user) pairs of each part.
    let mut active: BTreeMap<i64, std::collections::HashSet<String>> = BTreeMap::new();
    for (source, parts) in
        [(Source::Raw, &series.raw), (Source::Hour, &series.hours), (Source::Day, &series.days)]
    {
        if parts.is_empty() {
            continue;
        }
        let mut binds = Vec::new();
        let cond = split::within(source.time_col(), parts, &mut binds, time);
        let project = ctx.project_cond("project", &mut binds);
        let b = sql.bucket(source.time_col(), step);
        let text = if source == Source::Raw {
            format!(
                "SELECT DISTINCT {b}, user_id FROM search_events WHERE {cond}{project} \
                 UNION SELECT DISTINCT {b}, user_id FROM open_events WHERE {cond}{project}"
            )
        } else {
            format!(
                "SELECT DISTINCT {b}, user_id FROM {} WHERE {cond}{project}",
                source.table("user_rollup", "")
            )
        };
        for row in ctx.rows(&text, &binds).await? {
            active.entry(row[0].as_i64()).or_default().insert(row[1].as_str().unwrap_or("").to_owned());
        }
    }
    // Searches per user over the range (users with opens only count as
    // active with 0 searches).
    let mut per_user: BTreeMap<String, i64> = BTreeMap::new();
    // (returned, opened) per path.
    let mut files: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (source, parts) in [(Source::Raw, &all.raw), (Source::Hour, &all.hours), (Source::Day, &all.days)] {
        if parts.is_empty() {
            continue;
        }
        let col = source.time_col();
        let mut binds = Vec::new();
        let cond = split::within(col, parts, &mut binds, time);
        let project = ctx.project_cond("project", &mut binds);
        let (user_sql, file_sql) = if source == Source::Raw {
            let scond = split::within("s.time", parts, &mut Vec::new(), time);
            (
                format!(
                    "SELECT user_id, CAST(sum(n) AS BIGINT) FROM (SELECT user_id, count(*) AS n FROM search_events \
                     WHERE {cond}{project} GROUP BY 1 UNION ALL SELECT user_id, 0 FROM open_events WHERE {cond}{project} \
                     GROUP BY 1) u GROUP BY 1"
                ),
                format!(
                    "SELECT path, CAST(sum(r) AS BIGINT), CAST(sum(o) AS BIGINT) FROM (\
                     SELECT {} AS path, count(*) AS r, 0 AS o FROM search_events s, {} WHERE {scond}{} GROUP BY 1 \
                     UNION ALL SELECT path, 0, count(*) FROM open_events WHERE {cond}{project} GROUP BY 1) f GROUP BY 1",
                    sql.result_path_col(),
                    sql.result_paths(),
                    project.replace("project =", "s.project ="),
                ),
            )
        } else {
            (
                format!(
                    "SELECT user_id, CAST(sum(searches) AS BIGINT) FROM {} WHERE {cond}{project} GROUP BY 1",
                    source.table("user_rollup", "")
                ),
                format!(
                    "SELECT path, CAST(sum(returned) AS BIGINT), CAST(sum(opened) AS BIGINT) FROM {} \
                     WHERE {cond}{project} AND (returned > 0 OR opened > 0) GROUP BY 1",
                    source.table("file_rollup", "")
                ),
            )
        };
        for row in ctx.rows(&user_sql, &binds).await? {
            *per_user.entry(row[0].as_str().unwrap_or("").to_owned()).or_default() += row[1].as_i64();
        }
        for row in ctx.rows(&file_sql, &binds).await? {
            let e = files.entry(row[0].as_str().unwrap_or("").to_owned()).or_default();
            e.0 += row[1].as_i64();
            e.1 += row[2].as_i64();
        }
    }
    let total_active = per_user.len() as i64;
    let mut per_user: Vec<(String, i64)> = per_user.into_iter().filter(|(_, n)| *n > 0).collect();
    per_user.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let top_files = |pick: fn(&(i64, i64)) -> i64, key: &str| -> Vec<Json> {
        let mut list: Vec<(&String, i64)> =
            files.iter().map(|(p, c)| (p, pick(c))).filter(|(_, n)| *n > 0).collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        list.iter().take(limit.max(0) as usize).map(|(p, n)| json!({"path": p, key: n})).collect()
    };
    // The heatmap needs hours: whole clean hours (days included) from
    // search_rollup_1h, the rest from raw events.
    let heat_split = ctx.split_with(&dirty, true, false);
    let mut heatmap = vec![vec![0i64; 24]; 7];
    for (source, parts) in [(Source::Raw, &heat_split.raw), (Source::Hour, &heat_split.hours)] {
        if parts.is_empty() {
            continue;
        }
        let col = source.time_col();
        let (dow, hour) = sql.dow_hour(col);
        let mut binds = Vec::new();
        let cond = split::within(col, parts, &mut binds, time);
        let project = ctx.project_cond("project", &mut binds);
        let count = if source == Source::Raw { "count(*)" } else { "sum(searches)" };
        // TimescaleDB's search_rollup_1h is a continuous aggregate, which
        // late events reach only at its next refresh: there, the plugin's
        // own user_rollup_1h (rolled up with rollup_dirty and usage_dirty
        // like the rest).
        let rollup =
            if sql.backend == crate::storage::Backend::Timescaledb { "user_rollup" } else { "search_rollup" };
        let heat = ctx
            .rows(
                &format!(
                    "SELECT {dow}, {hour}, CAST({count} AS BIGINT) FROM {} WHERE {cond}{project} GROUP BY 1, 2",
                    source.table(rollup, "search_events")
                ),
                &binds,
            )
            .await?;
        for row in heat {
            let (d, h) = (row[0].as_i64().rem_euclid(7) as usize, row[1].as_i64().rem_euclid(24) as usize);
            heatmap[d][h] += row[2].as_i64();
        }
    }

    let mut buckets = Vec::new();
    let mut export = Vec::new();
    for start in ctx.range.buckets() {
        let n = active.get(&start).map_or(0, |s| s.len() as i64);
        let time = format_rfc3339(start);
        export.push(vec![json!(time), json!(n)]);
        buckets.push(json!({"time": time, "active_users": n}));
    }
    // Queries per user: how many users made 1, 2-5, 6-10, ... searches.
    let bounds = [1, 5, 10, 25, 50, 100, 250, 500, 1000];
    let mut distribution: Vec<i64> = vec![0; bounds.len() + 1];
    for (_, n) in &per_user {
        let i = bounds.iter().position(|b| *n <= *b).unwrap_or(bounds.len());
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
        .take(limit.max(0) as usize)
        .map(|(user, n)| json!({"user": user, "queries": n}))
        .collect();
    Ok(Dataset {
        document: json!({
            "range": ctx.split_json(&all),
            "project": ctx.project,
            "active_users": total_active,
            "buckets": buckets,
            "queries_per_user": distribution,
            "top_users": top_users,
            "top_returned_files": top_files(|c| c.0, "returned"),
            "top_opened_files": top_files(|c| c.1, "opens"),
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
    // Per file and day: accesses (returned in results or opened), whether
    // and when it was first indexed and first reached. Whole clean days and
    // hours from file_rollup_*, the rest from raw events.
    let split = ctx.split(true, true).await?;
    let time = |n: usize| sql.time(n);
    // (project, path) → (indexed events, first indexed, accesses, first reached)
    type FileSums = (i64, Option<i64>, i64, Option<i64>);
    let mut per_file: BTreeMap<(String, String), FileSums> = BTreeMap::new();
    let mut per_day: BTreeMap<(String, i64), BTreeMap<String, i64>> = BTreeMap::new();
    let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    for (source, parts) in
        [(Source::Raw, &split.raw), (Source::Hour, &split.hours), (Source::Day, &split.days)]
    {
        if parts.is_empty() {
            continue;
        }
        let col = source.time_col();
        let mut binds = Vec::new();
        let cond = split::within(col, parts, &mut binds, time);
        let project = ctx.project_cond("project", &mut binds);
        let text = if source == Source::Raw {
            let scond = split::within("s.time", parts, &mut Vec::new(), time);
            format!(
                "SELECT project, path, d, CAST(sum(ix) AS BIGINT), CAST(min(fi) AS BIGINT), CAST(sum(a) AS BIGINT), \
                 CAST(min(fr) AS BIGINT) FROM (\
                 SELECT s.project AS project, {path} AS path, {sday} AS d, 0 AS ix, {null} AS fi, count(*) AS a, \
                 min({sus}) AS fr FROM search_events s, {paths} WHERE {scond}{sproject} GROUP BY 1, 2, 3 \
                 UNION ALL SELECT project, path, {day}, 0, {null}, count(*), min({us}) FROM open_events \
                 WHERE {cond}{project} GROUP BY 1, 2, 3 \
                 UNION ALL SELECT project, path, {day}, count(*), min({us}), 0, {null} FROM index_events \
                 WHERE {cond}{project} AND outcome = 'indexed' GROUP BY 1, 2, 3) f GROUP BY 1, 2, 3",
                path = sql.result_path_col(),
                sday = sql.bucket("s.time", DAY),
                sus = sql.us("s.time"),
                null = "CAST(NULL AS BIGINT)",
                paths = sql.result_paths(),
                sproject = project.replace("project =", "s.project ="),
                day = sql.bucket("time", DAY),
                us = sql.us("time"),
            )
        } else {
            format!(
                "SELECT project, path, {}, CAST(sum(indexed) AS BIGINT), {}, CAST(sum(returned + opened) AS BIGINT), {} \
                 FROM {} WHERE {cond}{project} GROUP BY 1, 2, 3",
                sql.bucket("bucket", DAY),
                sql.us("min(first_indexed)"),
                sql.us("min(first_reached)"),
                source.table("file_rollup", ""),
            )
        };
        for row in ctx.rows(&text, &binds).await? {
            let (project, path) =
                (row[0].as_str().unwrap_or("").to_owned(), row[1].as_str().unwrap_or("").to_owned());
            let first_indexed = (row[4] != Value::Null).then(|| row[4].as_i64());
            let first_reached = (row[6] != Value::Null).then(|| row[6].as_i64());
            let accesses = row[5].as_i64();
            if accesses > 0 {
                *per_day
                    .entry((project.clone(), row[2].as_i64()))
                    .or_default()
                    .entry(path.clone())
                    .or_default() += accesses;
            }
            let e = per_file.entry((project, path)).or_default();
            e.0 += row[3].as_i64();
            e.1 = min(e.1, first_indexed);
            e.2 += accesses;
            e.3 = min(e.3, first_reached);
        }
    }
    // Daily largest sizes: the daily rollup, and raw snapshots of the days
    // it does not hold yet; the largest of both per (day, project).
    let mut largest: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    let days = Ctx { range: Range { step_us: DAY, ..ctx.range }, project: ctx.project.clone(), ..*ctx };
    for part in days.parts(Source::Day).await? {
        let rows = ctx
            .rows(
                &format!(
                    "SELECT {}, project, CAST(max(total_files) AS BIGINT), CAST(max(indexed_files) AS BIGINT) \
                     FROM {} WHERE {} GROUP BY 1, 2",
                    sql.bucket(part.source.time_col(), DAY),
                    part.source.table("snapshot_rollup", "project_snapshots"),
                    part.filter
                ),
                &part.binds,
            )
            .await?;
        for row in rows {
            let e = largest.entry((row[1].as_str().unwrap_or("").to_owned(), row[0].as_i64())).or_default();
            *e = (e.0.max(row[2].as_i64()), e.1.max(row[3].as_i64()));
        }
    }
    // (day, project, total, indexed), ordered by project then day.
    let trend: Vec<Vec<Value>> = largest
        .into_iter()
        .map(|((project, day), (total, indexed))| {
            vec![Value::Int(day), Value::Text(project), Value::Int(total), Value::Int(indexed)]
        })
        .collect();

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
    for ((project, path), (indexed, first_indexed, accesses, first_reached)) in per_file {
        let Some(first_indexed) = first_indexed.filter(|_| indexed > 0) else { continue };
        files.entry(project.clone()).or_default().push((path, accesses));
        firsts.entry(project).or_default().push((first_indexed, first_reached));
    }
    let per_day: BTreeMap<(String, i64), Vec<i64>> =
        per_day.into_iter().map(|(k, counts)| (k, counts.into_values().collect())).collect();
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
            "range": ctx.split_json(&split),
            "project": ctx.project,
            "projects": list,
        }),
        columns: vec!["project", "path", "finding"],
        rows: export,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_buckets_are_whole_buckets_starting_in_the_range() {
        const M: i64 = 60_000_000;
        let marks = [(10 * M + 5, 10 * M + 9), (11 * M, 12 * M + 1), (30 * M, 31 * M), (2 * M, 3 * M)];
        // Minutes [10, 13) and [30, 32) start in [5, 31); [2, 4) does not.
        assert_eq!(
            marked_buckets(marks.into_iter(), M, (5 * M, 31 * M)),
            [(10 * M, 13 * M), (30 * M, 31 * M)]
        );
        // A range that does not start on a bucket: the first whole one.
        assert_eq!(marked_buckets([(2 * M, 2 * M)].into_iter(), M, (2 * M + 1, 9 * M)), []);
        assert_eq!(
            marked_buckets([(8 * M + 3, 8 * M + 3)].into_iter(), M, (2 * M + 1, 8 * M + 1)),
            [(8 * M, 9 * M)]
        );
    }
}
