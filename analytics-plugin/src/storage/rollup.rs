//! The rollups the plugin maintains itself on SQLite and plain PostgreSQL
//! (TimescaleDB keeps the same ones as continuous aggregates): one
//! description per rollup, from which each dialect's SQL is generated.
//!
//! A maintenance run recomputes only the buckets touched by writes since
//! the last run (`rollup_dirty`): minutes from raw events, hours from
//! minutes, days from hours. Recomputing is a delete and an insert of whole
//! buckets, so running twice, or after late events, gives the same result.
//!
//! The usage rollups (per user, query and file: hours from raw events, days
//! from hours, with the click pairs and the key tables they are found
//! through) are recomputed the same way on every backend, TimescaleDB too,
//! but only for hours that have ended: ranges in the current hour wait in
//! `usage_dirty` (read from raw events meanwhile), so a run never re-reads
//! the current hour so far. They are cut with raw events at the same whole
//! day.

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
    /// A FROM item with one row per path of `search_events s`'s
    /// `top_results`, and its path column.
    pub result_paths: (&'static str, &'static str),
    /// A NULL of the time type.
    pub null_time: &'static str,
}

/// The tables of the usage rollups (`sql/*/0005_usage_rollups.sql`): kept
/// per hour and day on every backend and retained like raw events.
pub const USAGE_ROLLUPS: [&str; 3] = ["user_rollup", "query_rollup", "file_rollup"];

/// Statements recomputing the usage rollups' hours in [start, end) (whole
/// hours) from raw events, and the click pairs touching them: deletes, then
/// inserts; all take the range as their two parameters.
pub fn usage_hour_steps(dialect: &Dialect) -> Vec<String> {
    const HOUR: i64 = 3_600_000_000;
    let (start, end) = dialect.params;
    let b = |col: &str| (dialect.bucket)(col, HOUR);
    let within = |col: &str| format!("{col} >= {start} AND {col} < {end}");
    let zero = "s.status = 'ok' AND s.result_count = 0";
    let (paths, path_col) = dialect.result_paths;
    let null = dialect.null_time;
    let mut steps: Vec<String> = USAGE_ROLLUPS
        .iter()
        .map(|name| format!("DELETE FROM {name}_1h WHERE {}", within("bucket")))
        .collect();
    steps.push(format!(
        "INSERT INTO user_rollup_1h (bucket, project, user_id, searches, opens) \
         SELECT b, project, user_id, sum(s), sum(o) FROM (\
         SELECT {} AS b, project, user_id, count(*) AS s, 0 AS o FROM search_events WHERE {} GROUP BY 1, 2, 3 \
         UNION ALL SELECT {}, project, user_id, 0, count(*) FROM open_events WHERE {} GROUP BY 1, 2, 3\
         ) u GROUP BY 1, 2, 3",
        b("time"),
        within("time"),
        b("time"),
        within("time"),
    ));
    // Opens count for their search's query when they fall in the same hour
    // and project; every other pair is a click_pairs row.
    steps.push(format!(
        "INSERT INTO query_rollup_1h (bucket, project, query, searches, latency_ms_sum, results_sum, \
         zero_results, zero_latency_ms_sum, opens, zero_opens) \
         SELECT {sb}, s.project, s.query, count(*), sum(s.latency_ms), sum(s.result_count), \
         sum(CASE WHEN {zero} THEN 1 ELSE 0 END), sum(CASE WHEN {zero} THEN s.latency_ms ELSE 0 END), \
         sum(COALESCE(o.n, 0)), sum(CASE WHEN {zero} THEN COALESCE(o.n, 0) ELSE 0 END) \
         FROM search_events s LEFT JOIN (SELECT search_id, project, {ob} AS b, count(*) AS n FROM open_events o \
         WHERE {ow} GROUP BY 1, 2, 3) o ON o.search_id = s.search_id AND o.project = s.project AND o.b = {sb} \
         WHERE {sw} AND s.query IS NOT NULL GROUP BY 1, 2, 3",
        sb = b("s.time"),
        ob = b("o.time"),
        ow = within("o.time"),
        sw = within("s.time"),
    ));
    steps.push(format!(
        "INSERT INTO file_rollup_1h (bucket, project, path, returned, opened, indexed, first_indexed, first_reached) \
         SELECT b, project, path, sum(r), sum(op), sum(ix), min(fi), min(fr) FROM (\
         SELECT {sb} AS b, s.project AS project, {path_col} AS path, count(*) AS r, 0 AS op, 0 AS ix, \
         {null} AS fi, min(s.time) AS fr FROM search_events s, {paths} WHERE {sw} GROUP BY 1, 2, 3 \
         UNION ALL SELECT {tb}, project, path, 0, count(*), 0, {null}, min(time) FROM open_events \
         WHERE {tw} GROUP BY 1, 2, 3 \
         UNION ALL SELECT {tb}, project, path, 0, 0, count(*), min(time), {null} FROM index_events \
         WHERE {tw} AND outcome = 'indexed' GROUP BY 1, 2, 3\
         ) f GROUP BY 1, 2, 3",
        sb = b("s.time"),
        sw = within("s.time"),
        tb = b("time"),
        tw = within("time"),
    ));
    let apart = format!("({} <> {} OR s.project <> o.project)", b("s.time"), b("o.time"));
    let pair = "INSERT INTO click_pairs (search_time, open_time, search_project, open_project, query, zero_result) \
         SELECT s.time, o.time, s.project, o.project, s.query, s.zero_result";
    steps.push(format!(
        "DELETE FROM click_pairs WHERE ({}) OR ({})",
        within("search_time"),
        within("open_time")
    ));
    // Each from its side's time range, then by search_id (CROSS JOIN fixes
    // that order on SQLite), over the keys every rolled-up hour left (this
    // run's hours refreshed first, by `usage_key_steps`).
    steps.push(format!(
        "{pair} FROM open_keys o CROSS JOIN search_keys s WHERE s.search_id = o.search_id AND {} AND {apart}",
        within("o.time")
    ));
    steps.push(format!(
        "{pair} FROM search_keys s CROSS JOIN open_keys o \
         WHERE o.search_id = s.search_id AND {} AND NOT ({}) AND {apart}",
        within("s.time"),
        within("o.time")
    ));
    steps
}

/// Statements copying the keys of searches (with a query) and opens in
/// [start, end) (whole hours) into `search_keys` and `open_keys`: run for
/// every range of a maintenance run before any click pair is computed.
pub fn usage_key_steps(dialect: &Dialect) -> Vec<String> {
    let (start, end) = dialect.params;
    let within = format!("time >= {start} AND time < {end}");
    vec![
        format!("DELETE FROM search_keys WHERE {within}"),
        format!("DELETE FROM open_keys WHERE {within}"),
        format!(
            "INSERT INTO search_keys (search_id, time, project, query, zero_result) \
             SELECT search_id, time, project, query, CASE WHEN status = 'ok' AND result_count = 0 THEN 1 ELSE 0 END \
             FROM search_events WHERE {within} AND query IS NOT NULL"
        ),
        format!(
            "INSERT INTO open_keys (search_id, time, project) SELECT search_id, time, project FROM open_events WHERE {within}"
        ),
    ]
}

/// Statements recomputing the usage rollups' days in [start, end) (whole
/// days) from their hours.
pub fn usage_day_steps(dialect: &Dialect) -> Vec<String> {
    const DAY: i64 = 86_400_000_000;
    let (start, end) = dialect.params;
    let within = format!("bucket >= {start} AND bucket < {end}");
    let day = (dialect.bucket)("bucket", DAY);
    let mut steps: Vec<String> =
        USAGE_ROLLUPS.iter().map(|name| format!("DELETE FROM {name}_1d WHERE {within}")).collect();
    steps.push(format!(
        "INSERT INTO user_rollup_1d (bucket, project, user_id, searches, opens) \
         SELECT {day}, project, user_id, sum(searches), sum(opens) FROM user_rollup_1h WHERE {within} GROUP BY 1, 2, 3"
    ));
    steps.push(format!(
        "INSERT INTO query_rollup_1d (bucket, project, query, searches, latency_ms_sum, results_sum, \
         zero_results, zero_latency_ms_sum, opens, zero_opens) \
         SELECT {day}, project, query, sum(searches), sum(latency_ms_sum), sum(results_sum), sum(zero_results), \
         sum(zero_latency_ms_sum), sum(opens), sum(zero_opens) FROM query_rollup_1h WHERE {within} GROUP BY 1, 2, 3"
    ));
    steps.push(format!(
        "INSERT INTO file_rollup_1d (bucket, project, path, returned, opened, indexed, first_indexed, first_reached) \
         SELECT {day}, project, path, sum(returned), sum(opened), sum(indexed), min(first_indexed), min(first_reached) \
         FROM file_rollup_1h WHERE {within} GROUP BY 1, 2, 3"
    ));
    steps
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
    /// It recomputes the usage rollups of complete hours (or their keys and
    /// click pairs) for ranges the run's markers still mark dirty: it may
    /// run before the run's last transaction, in pieces (SQLite), since
    /// readers take those hours from raw events until the markers go.
    pub usage: bool,
}

/// What one maintenance run does: see [`plan`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Ranges of `rollup_dirty` recomputed in the other rollups.
    pub ranges: usize,
    /// Ranges of whole, complete hours recomputed in the usage rollups.
    pub usage_ranges: usize,
    /// The statements, in order: in one transaction, but for the `usage`
    /// ones SQLite runs before it (see [`Step::usage`]).
    pub steps: Vec<Step>,
}

/// Everything one maintenance run executes, in order (in one transaction,
/// bar the usage steps SQLite writes in pieces before it):
/// recompute the rollup buckets the dirty ranges touch (clamped to what raw
/// retention still holds), then delete what every resolution's retention
/// expired.
///
/// `dirty` is what `rollup_dirty` held (writes since the last run): the
/// other rollups' minutes, hours and days are recomputed for it and it is
/// done with. The usage rollups are recomputed over `dirty` and
/// `usage_dirty` (what earlier runs left pending) together, but only in
/// complete hours (ending at or before `now_us`'s hour): the rest, in the
/// current hour (or later), is written back to `usage_dirty` by the plan's
/// last steps, so a run costs what was written since the last one, not the
/// whole current hour so far. Readers take both tables as dirty and read
/// those hours from raw events.
///
/// Raw events and the usage rollups are cut at the same whole day (the
/// start of the day `raw_days` ago), so the rollups never hold an hour or
/// day only partly backed by raw events. With `usage_only` (TimescaleDB,
/// whose own jobs keep the other rollups and drop raw chunks) only the
/// usage rollups are recomputed and retained.
pub fn plan(
    dirty: Vec<(i64, i64)>,
    usage_dirty: Vec<(i64, i64)>,
    now_us: i64,
    retention: &super::RetentionConfig,
    dialect: &Dialect,
    raw_tables: &[&str],
    usage_only: bool,
) -> Plan {
    const DAY: i64 = 86_400_000_000;
    const HOUR: i64 = 3_600_000_000;
    let horizon = |days: u32| now_us - i64::from(days) * DAY;
    let raw_horizon = horizon(retention.raw_days).div_euclid(DAY) * DAY;
    // Each write marks its own few milliseconds dirty; snapped to whole
    // minutes first, the hundreds of writes of one minute merge into one
    // range, so each minute is recomputed once per run, not once per write.
    let minute = LEVELS[0].1;
    let snap = |ranges: Vec<(i64, i64)>| -> Vec<(i64, i64)> {
        let snapped = ranges.into_iter().map(|(from, to)| bucket_span(from, to, minute)).collect();
        merge_ranges(snapped)
            .into_iter()
            .map(|(from, to)| (from, to - 1))
            .filter(|(_, to)| *to >= raw_horizon)
            .map(|(from, to)| (from.max(raw_horizon), to))
            .collect()
    };
    let ranges = snap(dirty.clone());
    // The usage rollups: complete hours only (before `cut`); what lies at
    // or after it stays pending.
    let cut = now_us.div_euclid(HOUR) * HOUR;
    let mut hours = Vec::new();
    let mut pending = Vec::new();
    for (from, to) in snap(dirty.into_iter().chain(usage_dirty).collect()) {
        if from < cut {
            hours.push(bucket_span(from, to.min(cut - 1), HOUR));
        }
        if to >= cut {
            pending.push((from.max(cut), to));
        }
    }
    // [start, end) spans: touching ones merge too.
    let hours = merge_ranges(hours);
    let days = merge_ranges(hours.iter().map(|&(start, end)| bucket_span(start, end - 1, DAY)).collect());
    let mut steps = Vec::new();
    let push = |steps: &mut Vec<Step>, sqls: Vec<String>, (start, end): (i64, i64), usage: bool| {
        for sql in sqls {
            steps.push(Step { sql, binds: vec![start, end], retention: false, usage });
        }
    };
    for &span in &hours {
        push(&mut steps, usage_key_steps(dialect), span, true);
    }
    for &span in &hours {
        push(&mut steps, usage_hour_steps(dialect), span, true);
    }
    for &span in &days {
        push(&mut steps, usage_day_steps(dialect), span, true);
    }
    let (p1, p2) = dialect.params;
    for &span in &pending {
        push(
            &mut steps,
            vec![format!("INSERT INTO usage_dirty (from_time, to_time) VALUES ({p1}, {p2})")],
            span,
            false,
        );
    }
    for &(from, to) in &ranges {
        if usage_only {
            break;
        }
        for (level, (suffix, width)) in LEVELS.iter().enumerate() {
            let span = bucket_span(from, to, *width);
            for rollup in ROLLUPS {
                let (delete, insert) = rollup.recompute(level, dialect);
                push(&mut steps, vec![delete, insert], span, false);
            }
            push(&mut steps, histogram_steps(suffix, dialect).to_vec(), span, false);
        }
    }
    let before = dialect.params.0;
    for name in USAGE_ROLLUPS {
        for suffix in ["1h", "1d"] {
            steps.push(Step {
                sql: format!("DELETE FROM {name}_{suffix} WHERE bucket < {before}"),
                binds: vec![raw_horizon],
                retention: true,
                usage: false,
            });
        }
    }
    steps.push(Step {
        sql: format!("DELETE FROM click_pairs WHERE search_time < {before} OR open_time < {before}"),
        binds: vec![raw_horizon],
        retention: true,
        usage: false,
    });
    for table in ["search_keys", "open_keys"] {
        steps.push(Step {
            sql: format!("DELETE FROM {table} WHERE time < {before}"),
            binds: vec![raw_horizon],
            retention: true,
            usage: false,
        });
    }
    let plan = |steps| Plan { ranges: ranges.len(), usage_ranges: hours.len(), steps };
    if usage_only {
        return plan(steps);
    }
    for table in raw_tables {
        steps.push(Step {
            sql: format!("DELETE FROM {table} WHERE time < {before}"),
            binds: vec![raw_horizon],
            retention: true,
            usage: false,
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
                usage: false,
            });
        }
    }
    plan(steps)
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
        let dialect = Dialect {
            bucket: |c, _| c.to_owned(),
            params: ("?1", "?2"),
            join: "group_concat",
            result_paths: ("json_each(s.top_results) AS r", "r.value"),
            null_time: "NULL",
        };
        let run =
            plan(dirty, Vec::new(), now, &crate::storage::RetentionConfig::default(), &dialect, &[], false);
        assert_eq!(run.ranges, 1);
        let minute_steps: Vec<&Step> = run
            .steps
            .iter()
            .filter(|s| s.sql.starts_with("DELETE FROM search_rollup_1m WHERE bucket >="))
            .collect();
        assert_eq!(minute_steps.len(), 1);
        assert_eq!(minute_steps[0].binds, vec![t0, t0 + MINUTE]);
        // A write in a later minute apart from them stays a range of its own.
        let ranges = plan(
            vec![(t0, t0 + 1), (t0 + 5 * MINUTE, t0 + 5 * MINUTE + 1)],
            Vec::new(),
            now,
            &Default::default(),
            &dialect,
            &[],
            false,
        )
        .ranges;
        assert_eq!(ranges, 2);
    }

    #[test]
    fn usage_rollups_wait_for_complete_hours() {
        const MINUTE: i64 = 60_000_000;
        const HOUR: i64 = 60 * MINUTE;
        let dialect = Dialect {
            bucket: |c, _| c.to_owned(),
            params: ("?1", "?2"),
            join: "group_concat",
            result_paths: ("json_each(s.top_results) AS r", "r.value"),
            null_time: "NULL",
        };
        let hour = 1_000 * 86_400_000_000 + 10 * HOUR;
        let now = hour + 30 * MINUTE;
        let binds_of = |steps: &[Step], prefix: &str| -> Vec<Vec<i64>> {
            steps.iter().filter(|s| s.sql.starts_with(prefix)).map(|s| s.binds.clone()).collect()
        };
        // A write in the current hour and a late one two hours back.
        let write = (hour + 5 * MINUTE + 1, hour + 5 * MINUTE + 2);
        let late = (hour - 2 * HOUR + 1, hour - 2 * HOUR + 2);
        let run = plan(vec![write, late], Vec::new(), now, &Default::default(), &dialect, &[], false);
        assert_eq!((run.ranges, run.usage_ranges), (2, 1));
        // The other rollups do both; the usage rollups only the late hour.
        assert_eq!(binds_of(&run.steps, "DELETE FROM search_rollup_1m WHERE bucket >=").len(), 2);
        assert_eq!(
            binds_of(&run.steps, "DELETE FROM user_rollup_1h WHERE bucket >="),
            vec![vec![hour - 2 * HOUR, hour - HOUR]]
        );
        assert_eq!(
            binds_of(&run.steps, "DELETE FROM search_keys WHERE time >="),
            vec![vec![hour - 2 * HOUR, hour - HOUR]]
        );
        // The write's minute is put back for later.
        assert_eq!(
            binds_of(&run.steps, "INSERT INTO usage_dirty"),
            vec![vec![hour + 5 * MINUTE, hour + 6 * MINUTE - 1]]
        );
        // Next run, nothing new: nothing recomputed, still pending.
        let pending = vec![(hour + 5 * MINUTE, hour + 6 * MINUTE - 1)];
        let run = plan(Vec::new(), pending.clone(), now + MINUTE, &Default::default(), &dialect, &[], false);
        assert_eq!((run.ranges, run.usage_ranges), (0, 0));
        assert!(binds_of(&run.steps, "DELETE FROM search_rollup_1m WHERE bucket >=").is_empty());
        assert!(binds_of(&run.steps, "DELETE FROM user_rollup_1h WHERE bucket >=").is_empty());
        assert_eq!(binds_of(&run.steps, "INSERT INTO usage_dirty").len(), 1);
        // Once the hour has ended: the usage rollups only, hour and day.
        let run = plan(Vec::new(), pending, hour + HOUR, &Default::default(), &dialect, &[], false);
        assert_eq!((run.ranges, run.usage_ranges), (0, 1));
        assert!(binds_of(&run.steps, "DELETE FROM search_rollup_1m WHERE bucket >=").is_empty());
        assert_eq!(
            binds_of(&run.steps, "DELETE FROM user_rollup_1h WHERE bucket >="),
            vec![vec![hour, hour + HOUR]]
        );
        let day = hour.div_euclid(86_400_000_000) * 86_400_000_000;
        assert_eq!(
            binds_of(&run.steps, "DELETE FROM user_rollup_1d WHERE bucket >="),
            vec![vec![day, day + 86_400_000_000]]
        );
        assert!(binds_of(&run.steps, "INSERT INTO usage_dirty").is_empty());
        // A range across the hour's end: its first part now, the rest later.
        let across = (hour + 59 * MINUTE, hour + HOUR + MINUTE);
        let run = plan(
            Vec::new(),
            vec![across],
            hour + HOUR + 2 * MINUTE,
            &Default::default(),
            &dialect,
            &[],
            true,
        );
        assert_eq!(
            binds_of(&run.steps, "DELETE FROM user_rollup_1h WHERE bucket >="),
            vec![vec![hour, hour + HOUR]]
        );
        assert_eq!(
            binds_of(&run.steps, "INSERT INTO usage_dirty"),
            vec![vec![hour + HOUR, hour + HOUR + 2 * MINUTE - 1]]
        );
    }

    #[test]
    fn ranges_merge_and_spans_cover_whole_buckets() {
        assert_eq!(merge_ranges(vec![(5, 9), (1, 3), (3, 4), (20, 30)]), vec![(1, 4), (5, 9), (20, 30)]);
        assert_eq!(bucket_span(61, 119, 60), (60, 120));
        assert_eq!(bucket_span(60, 120, 60), (60, 180));
    }

    #[test]
    fn hourly_search_rollup_merges_minutes() {
        let dialect = Dialect {
            bucket: |c, w| format!("({c} / {w}) * {w}"),
            params: ("?", "?"),
            join: "group_concat",
            result_paths: ("json_each(s.top_results) AS r", "r.value"),
            null_time: "NULL",
        };
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
