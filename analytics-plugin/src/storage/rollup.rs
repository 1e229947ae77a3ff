//! The rollups the plugin maintains itself on SQLite and plain PostgreSQL
//! (TimescaleDB keeps the same ones as continuous aggregates): one
//! description per rollup, from which each dialect's SQL is generated.
//!
//! A maintenance run recomputes only the buckets touched by writes since
//! the last run (`rollup_dirty`): minutes from raw events, hours from
//! minutes, days from hours. Recomputing is a delete and an insert of whole
//! buckets, so running twice, or after late events, gives the same result.

/// One rollup family (`<name>_1m`, `_1h`, `_1d`).
pub struct Rollup {
    pub name: &'static str,
    pub source: &'static str,
    pub keys: &'static [&'static str],
    /// (column, aggregate over raw events)
    pub from_raw: &'static [(&'static str, &'static str)],
    /// (column, aggregate over a finer rollup)
    pub merge: &'static [(&'static str, &'static str)],
}

pub const ROLLUPS: &[Rollup] = &[
    Rollup {
        name: "search_rollup",
        source: "search_events",
        keys: &["instance_id", "project", "kind", "status", "cache"],
        from_raw: &[
            ("searches", "count(*)"),
            ("zero_results", "sum(CASE WHEN status = 'ok' AND result_count = 0 THEN 1 ELSE 0 END)"),
            ("results_sum", "sum(result_count)"),
            ("latency_ms_sum", "sum(latency_ms)"),
            ("latency_ms_min", "min(latency_ms)"),
            ("latency_ms_max", "max(latency_ms)"),
        ],
        merge: &[
            ("searches", "sum(searches)"),
            ("zero_results", "sum(zero_results)"),
            ("results_sum", "sum(results_sum)"),
            ("latency_ms_sum", "sum(latency_ms_sum)"),
            ("latency_ms_min", "min(latency_ms_min)"),
            ("latency_ms_max", "max(latency_ms_max)"),
        ],
    },
    Rollup {
        name: "search_latency",
        source: "search_events",
        keys: &["instance_id", "project", "latency_bucket"],
        from_raw: &[("searches", "count(*)")],
        merge: &[("searches", "sum(searches)")],
    },
    Rollup {
        name: "index_rollup",
        source: "index_events",
        keys: &["instance_id", "project", "file_type", "outcome"],
        from_raw: &[
            ("files", "count(*)"),
            ("bytes_sum", "sum(bytes)"),
            ("duration_ms_sum", "sum(duration_ms)"),
            ("duration_ms_max", "max(duration_ms)"),
        ],
        merge: &[
            ("files", "sum(files)"),
            ("bytes_sum", "sum(bytes_sum)"),
            ("duration_ms_sum", "sum(duration_ms_sum)"),
            ("duration_ms_max", "max(duration_ms_max)"),
        ],
    },
    Rollup {
        name: "open_rollup",
        source: "open_events",
        keys: &["instance_id", "project"],
        from_raw: &[("opens", "count(*)"), ("rank_sum", "sum(rank)")],
        merge: &[("opens", "sum(opens)"), ("rank_sum", "sum(rank_sum)")],
    },
    Rollup {
        name: "snapshot_rollup",
        source: "project_snapshots",
        keys: &["instance_id", "project"],
        from_raw: &[
            ("total_files", "max(total_files)"),
            ("indexed_files", "max(indexed_files)"),
            ("vector_store_bytes", "max(vector_store_bytes)"),
            ("embedding_cache_bytes", "max(embedding_cache_bytes)"),
        ],
        merge: &[
            ("total_files", "max(total_files)"),
            ("indexed_files", "max(indexed_files)"),
            ("vector_store_bytes", "max(vector_store_bytes)"),
            ("embedding_cache_bytes", "max(embedding_cache_bytes)"),
        ],
    },
];

/// The three resolutions, finest first: (suffix, width in µs).
pub const LEVELS: [(&str, i64); 3] = [("1m", 60_000_000), ("1h", 3_600_000_000), ("1d", 86_400_000_000)];

/// How a dialect spells a bucket and its parameters.
pub struct Dialect {
    /// The bucket of column `col` at a width in µs.
    pub bucket: fn(col: &str, width_us: i64) -> String,
    /// Placeholders for the range start and end, in order.
    pub params: (&'static str, &'static str),
    /// The aggregate joining text values with commas.
    pub join: &'static str,
}

/// Statements rebuilding `search_histogram_<suffix>` for buckets in the
/// range from `search_latency_<suffix>`: a delete, then per-project rows,
/// then all-projects rows.
pub fn histogram_steps(suffix: &str, dialect: &Dialect) -> [String; 3] {
    let (start, end) = dialect.params;
    let table = format!("search_histogram_{suffix}");
    let source = format!("search_latency_{suffix}");
    let entry = "CAST(latency_bucket AS TEXT) || ':' || CAST(n AS TEXT)";
    let join = dialect.join;
    [
        format!("DELETE FROM {table} WHERE bucket >= {start} AND bucket < {end}"),
        format!(
            "INSERT INTO {table} (bucket, all_projects, project, searches, histogram) \
             SELECT bucket, 0, project, sum(n), {join}({entry}, ',') FROM \
             (SELECT bucket, project, latency_bucket, sum(searches) AS n FROM {source} \
              WHERE bucket >= {start} AND bucket < {end} GROUP BY 1, 2, 3) h GROUP BY bucket, project"
        ),
        format!(
            "INSERT INTO {table} (bucket, all_projects, project, searches, histogram) \
             SELECT bucket, 1, '', sum(n), {join}({entry}, ',') FROM \
             (SELECT bucket, latency_bucket, sum(searches) AS n FROM {source} \
              WHERE bucket >= {start} AND bucket < {end} GROUP BY 1, 2) h GROUP BY bucket"
        ),
    ]
}

impl Rollup {
    /// Statements recomputing level `level` (index into [`LEVELS`]) for
    /// buckets in [start, end): a delete, then an insert from the source
    /// (raw events for minutes, the finer level otherwise). Both take the
    /// range as their two parameters.
    pub fn recompute(&self, level: usize, dialect: &Dialect) -> (String, String) {
        let (suffix, width) = LEVELS[level];
        let table = format!("{}_{suffix}", self.name);
        let (start, end) = dialect.params;
        let delete = format!("DELETE FROM {table} WHERE bucket >= {start} AND bucket < {end}");
        let (source, time_col, measures) = if level == 0 {
            (self.source.to_owned(), "time", self.from_raw)
        } else {
            (format!("{}_{}", self.name, LEVELS[level - 1].0), "bucket", self.merge)
        };
        let keys = self.keys.join(", ");
        let columns: Vec<&str> = measures.iter().map(|(c, _)| *c).collect();
        let aggregates: Vec<&str> = measures.iter().map(|(_, a)| *a).collect();
        let groups: Vec<String> = (1..=self.keys.len() + 1).map(|i| i.to_string()).collect();
        let insert = format!(
            "INSERT INTO {table} (bucket, {keys}, {}) SELECT {}, {keys}, {} FROM {source} \
             WHERE {time_col} >= {start} AND {time_col} < {end} GROUP BY {}",
            columns.join(", "),
            (dialect.bucket)(time_col, width),
            aggregates.join(", "),
            groups.join(", "),
        );
        (delete, insert)
    }
}

/// One statement of a maintenance run and its bound values (µs).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub sql: String,
    pub binds: Vec<i64>,
    /// Whether its affected rows count as removed by retention.
    pub retention: bool,
}

/// Everything one maintenance run executes, in order, in one transaction:
/// recompute the rollup buckets the dirty ranges touch (clamped to what raw
/// retention still holds), then delete what every resolution's retention
/// expired. Returns the number of ranges and the steps.
pub fn plan(
    dirty: Vec<(i64, i64)>,
    now_us: i64,
    retention: &super::RetentionConfig,
    dialect: &Dialect,
    raw_tables: &[&str],
) -> (usize, Vec<Step>) {
    const DAY: i64 = 86_400_000_000;
    let horizon = |days: u32| now_us - i64::from(days) * DAY;
    let raw_horizon = horizon(retention.raw_days);
    // Each write marks its own few milliseconds dirty; snapped to whole
    // minutes first, the hundreds of writes of one minute merge into one
    // range, so each minute is recomputed once per run, not once per write.
    let minute = LEVELS[0].1;
    let snapped = dirty.into_iter().map(|(from, to)| bucket_span(from, to, minute)).collect();
    let ranges: Vec<(i64, i64)> = merge_ranges(snapped)
        .into_iter()
        .map(|(from, to)| (from, to - 1))
        .filter(|(_, to)| *to >= raw_horizon)
        .map(|(from, to)| (from.max(raw_horizon), to))
        .collect();
    let mut steps = Vec::new();
    for &(from, to) in &ranges {
        for (level, (_, width)) in LEVELS.iter().enumerate() {
            let (start, end) = bucket_span(from, to, *width);
            for rollup in ROLLUPS {
                let (delete, insert) = rollup.recompute(level, dialect);
                steps.push(Step { sql: delete, binds: vec![start, end], retention: false });
                steps.push(Step { sql: insert, binds: vec![start, end], retention: false });
            }
            for sql in histogram_steps(LEVELS[level].0, dialect) {
                steps.push(Step { sql, binds: vec![start, end], retention: false });
            }
        }
    }
    let before = dialect.params.0;
    for table in raw_tables {
        steps.push(Step {
            sql: format!("DELETE FROM {table} WHERE time < {before}"),
            binds: vec![raw_horizon],
            retention: true,
        });
    }
    let names = ROLLUPS.iter().map(|r| r.name).chain(["search_histogram"]);
    for name in names {
        for ((suffix, _), days) in
            LEVELS.iter().zip([retention.minute_days, retention.hourly_days, retention.daily_days])
        {
            steps.push(Step {
                sql: format!("DELETE FROM {name}_{suffix} WHERE bucket < {before}"),
                binds: vec![horizon(days)],
                retention: true,
            });
        }
    }
    (ranges.len(), steps)
}

/// Merges overlapping or touching [from, to] ranges.
pub fn merge_ranges(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (from, to) in ranges {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

/// The buckets of width `width` covering [from, to]: [floor(from), floor(to) + width).
pub fn bucket_span(from: i64, to: i64, width: i64) -> (i64, i64) {
    (from.div_euclid(width) * width, (to.div_euclid(width) + 1) * width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_within_the_same_minutes_make_one_range() {
        const MINUTE: i64 = 60_000_000;
        let now = 1_000 * 86_400_000_000;
        let t0 = now - 10 * MINUTE;
        // 300 writes of 200 ms each, back to back, over one minute.
        let dirty: Vec<(i64, i64)> =
            (0..300).map(|i| (t0 + i * 200_000, t0 + i * 200_000 + 199_999)).collect();
        let dialect = Dialect { bucket: |c, _| c.to_owned(), params: ("?1", "?2"), join: "group_concat" };
        let (ranges, steps) = plan(dirty, now, &crate::storage::RetentionConfig::default(), &dialect, &[]);
        assert_eq!(ranges, 1);
        let minute_steps: Vec<&Step> = steps
            .iter()
            .filter(|s| s.sql.starts_with("DELETE FROM search_rollup_1m WHERE bucket >="))
            .collect();
        assert_eq!(minute_steps.len(), 1);
        assert_eq!(minute_steps[0].binds, vec![t0, t0 + MINUTE]);
        // A write in a later minute apart from them stays a range of its own.
        let (ranges, _) = plan(
            vec![(t0, t0 + 1), (t0 + 5 * MINUTE, t0 + 5 * MINUTE + 1)],
            now,
            &Default::default(),
            &dialect,
            &[],
        );
        assert_eq!(ranges, 2);
    }

    #[test]
    fn ranges_merge_and_spans_cover_whole_buckets() {
        assert_eq!(merge_ranges(vec![(5, 9), (1, 3), (3, 4), (20, 30)]), vec![(1, 4), (5, 9), (20, 30)]);
        assert_eq!(bucket_span(61, 119, 60), (60, 120));
        assert_eq!(bucket_span(60, 120, 60), (60, 180));
    }

    #[test]
    fn hourly_search_rollup_merges_minutes() {
        let dialect =
            Dialect { bucket: |c, w| format!("({c} / {w}) * {w}"), params: ("?", "?"), join: "group_concat" };
        let (delete, insert) = ROLLUPS[0].recompute(1, &dialect);
        assert_eq!(delete, "DELETE FROM search_rollup_1h WHERE bucket >= ? AND bucket < ?");
        assert!(insert.starts_with(
            "INSERT INTO search_rollup_1h (bucket, instance_id, project, kind, status, cache, searches,"
        ));
        assert!(insert.contains("SELECT (bucket / 3600000000) * 3600000000, instance_id"));
        assert!(
            insert
                .contains("FROM search_rollup_1m WHERE bucket >= ? AND bucket < ? GROUP BY 1, 2, 3, 4, 5, 6")
        );
    }
}
