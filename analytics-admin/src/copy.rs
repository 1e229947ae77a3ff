//! `copy`: one analytics database into another, through the plugin's own
//! storage module (so the target gets the plugin's migrations, hypertables
//! and policies), table by table, rows streamed in order and inserted in
//! bound multi-row statements.
//!
//! Times travel as Unix microseconds and result-path arrays as JSON text
//! (SQLite's forms); the PostgreSQL side's column types say which columns
//! need converting. Copied: raw events and `ingest_progress` always (so a
//! spool replayed later into the new database doubles nothing), and every
//! other table both sides keep as a table (rollups, histograms, pending
//! rollup ranges: `rollup_dirty`, and `usage_dirty`, the current-hour
//! ranges the usage rollups still wait for). On a TimescaleDB target the
//! hourly and daily rollups are continuous aggregates: they are refreshed
//! from the copied raw events, and
//! rollup rows older than the oldest raw event cannot be carried over (the
//! command says how many). From a TimescaleDB source the target's rollups
//! are rebuilt from the raw events by one maintenance pass.
//!
//! The target must be empty, or with `--append` must hold no event of the
//! source's (instance, boot) pairs (`ingest_progress` says which it holds):
//! servers switched to the target first keep writing while their old
//! history is merged in. Rollup rows of buckets both sides wrote conflict;
//! the target's are kept and every bucket raw retention still covers is
//! then recomputed from the merged raw events.

use std::{path::Path, sync::Arc, time::Instant};

use anyhow::{Context, anyhow, bail};
use context_analytics::storage::{
    self, Backend, RAW_TABLES, RetentionConfig, Storage, StorageConfig, TimescaleMode, Value, rollup::ROLLUPS,
};

/// How a column travels between backends.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// timestamptz on PostgreSQL, Unix µs on SQLite.
    Time,
    /// text[] on PostgreSQL, a JSON array on SQLite.
    Array,
    /// Anything else; on PostgreSQL, its type (for the bind's cast).
    Plain(String),
}

struct Column {
    name: String,
    kind: Kind,
}

/// Bound values per INSERT (SQLite accepts 32,766, PostgreSQL 65,535).
const MAX_BINDS: usize = 30_000;

fn pg(backend: Backend) -> bool {
    backend != Backend::Sqlite
}

async fn open(
    url: &str,
    data_dir: &Path,
    timescale: TimescaleMode,
    must_exist: bool,
) -> anyhow::Result<Arc<dyn Storage>> {
    if let Some(path) = url.strip_prefix("sqlite://").filter(|_| must_exist) {
        let path = data_dir.join(path);
        if !path.exists() {
            bail!("no SQLite database at '{}' (relative paths are taken from --data-dir)", path.display());
        }
    }
    // One connection each: the TimescaleDB test server takes one at a time,
    // and the copy is sequential anyway.
    let config = StorageConfig {
        url: url.to_owned(),
        timescaledb: timescale,
        max_connections: 1,
        write_timeout_ms: 600_000,
        ..StorageConfig::default()
    };
    let store = storage::open(&config, &RetentionConfig::default(), data_dir).map_err(|e| anyhow!(e))?;
    store.prepare().await.with_context(|| format!("cannot prepare '{}'", storage::redact(url)))?;
    Ok(store)
}

/// Base tables (not views) of the analytics schema.
async fn tables(store: &dyn Storage) -> anyhow::Result<Vec<String>> {
    let sql = if pg(store.backend()) {
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_type = 'BASE TABLE' ORDER BY table_name"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    };
    Ok(store.query_strings(sql).await?.into_iter().filter(|t| t != "schema_migrations").collect())
}

/// Column names in order, with PostgreSQL's type where the backend has one.
async fn columns(store: &dyn Storage, table: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let binds = [Value::Text(table.to_owned())];
    let rows = if pg(store.backend()) {
        store
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = (quote_ident(current_schema()) || '.' || quote_ident($1))::regclass \
                 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &binds,
            )
            .await?
    } else {
        store.query("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid", &binds).await?
    };
    Ok(rows
        .into_iter()
        .map(|row| {
            let name = row[0].as_str().unwrap_or_default().to_owned();
            let ty = row[1].as_str().map(str::to_owned);
            (name, ty)
        })
        .collect())
}

fn kind_of(pg_type: &str) -> Kind {
    match pg_type {
        "timestamp with time zone" => Kind::Time,
        t if t.ends_with("[]") => Kind::Array,
        t => Kind::Plain(t.to_owned()),
    }
}

async fn count(store: &dyn Storage, table: &str) -> anyhow::Result<i64> {
    let rows = store.query_strings(&format!("SELECT count(*) FROM {table}")).await?;
    rows.first().and_then(|n| n.parse().ok()).ok_or_else(|| anyhow!("count of {table} unreadable"))
}

pub async fn run(from: &str, to: &str, data_dir: &Path, timescale: &str, append: bool) -> anyhow::Result<()> {
    let timescale = match timescale {
        "auto" => TimescaleMode::Auto,
        "on" => TimescaleMode::On,
        "off" => TimescaleMode::Off,
        other => bail!("--timescaledb '{other}' (expected auto, on or off)"),
    };
    if from == to {
        bail!("--from and --to are the same database");
    }
    let source = open(from, data_dir, TimescaleMode::Auto, true).await.context("source")?;
    let target = open(to, data_dir, timescale, false).await.context("target")?;
    let started = Instant::now();
    eprintln!(
        "copying {} ({}) into {} ({})",
        storage::redact(from),
        source.backend().as_str(),
        storage::redact(to),
        target.backend().as_str()
    );
    let source_tables = tables(source.as_ref()).await?;
    let target_tables = tables(target.as_ref()).await?;
    // SQLite's result-path dictionary stays behind: its ids mean nothing in
    // another database, so result lists travel as their paths (see
    // `copy_table`) and the target stores them its own way.
    let shared: Vec<&String> =
        source_tables.iter().filter(|t| target_tables.contains(t) && t.as_str() != "result_paths").collect();
    for table in RAW_TABLES.iter().chain(&["ingest_progress"]) {
        if !shared.iter().any(|t| t == table) {
            bail!("table {table} is missing on one side: is this an analytics database?");
        }
    }
    let mut before = std::collections::BTreeMap::new();
    // Event tables first, so that a refusal names one (rather than a
    // rollup table that sorts before them).
    let is_raw = |t: &&String| RAW_TABLES.contains(&t.as_str());
    let checked: Vec<&String> =
        shared.iter().copied().filter(is_raw).chain(shared.iter().copied().filter(|t| !is_raw(t))).collect();
    for table in checked {
        let rows = count(target.as_ref(), table).await?;
        if rows > 0 && !append {
            bail!(
                "the target already holds {rows} rows in {table}: copy into an empty database \
                 (a second copy would store every event twice), or use --append to merge into a \
                 database servers already write"
            );
        }
        before.insert(table.as_str(), rows);
    }
    if append {
        check_disjoint(source.as_ref(), target.as_ref()).await?;
    }
    // The ingest marks first, so that a copy interrupted anywhere later is
    // recognised (and refused) when run again; then raw events; then the
    // rest.
    let first = |t: &String| t == "ingest_progress";
    let raw = |t: &String| RAW_TABLES.contains(&t.as_str());
    let mut order: Vec<&String> = shared.iter().copied().filter(|t| first(t)).collect();
    order.extend(shared.iter().copied().filter(|t| raw(t)));
    order.extend(shared.iter().copied().filter(|t| !first(t) && !raw(t)));
    let mut report = Vec::new();
    for table in order {
        // Events and ingest marks never conflict (checked above); rollup
        // rows of the buckets both databases wrote do, and are recomputed
        // from the raw events afterwards.
        let merge = append && !RAW_TABLES.contains(&table.as_str()) && table != "ingest_progress";
        let copied = copy_table(source.as_ref(), target.as_ref(), table, merge).await?;
        let expected = count(source.as_ref(), table).await?;
        let stored = count(target.as_ref(), table).await? - before[table.as_str()];
        let complete = if merge { stored <= expected } else { stored == expected };
        if !complete || copied != expected {
            bail!("{table}: source has {expected} rows, {copied} copied, target gained {stored}");
        }
        eprintln!("  {table}: {stored} rows");
        report.push((table.clone(), stored));
    }
    finish_rollups(source.as_ref(), target.as_ref(), &source_tables, &target_tables, append).await?;
    let events: i64 = report.iter().filter(|(t, _)| RAW_TABLES.contains(&t.as_str())).map(|(_, n)| *n).sum();
    println!(
        "copied {events} events and {} other rows in {} tables in {:.1} s",
        report.iter().filter(|(t, _)| !RAW_TABLES.contains(&t.as_str())).map(|(_, n)| *n).sum::<i64>(),
        report.len(),
        started.elapsed().as_secs_f64()
    );
    source.close().await;
    target.close().await;
    Ok(())
}

async fn copy_table(
    source: &dyn Storage,
    target: &dyn Storage,
    table: &str,
    merge: bool,
) -> anyhow::Result<i64> {
    let source_columns = columns(source, table).await?;
    let target_columns = columns(target, table).await?;
    let mut cols = Vec::new();
    for (name, target_type) in &target_columns {
        // Alert history rows are numbered by the database that stores
        // them: the target numbers the copied ones after its own (in time
        // order), so a merge keeps both histories whole.
        if table == "alert_history" && name == "id" {
            continue;
        }
        let Some((_, source_type)) = source_columns.iter().find(|(n, _)| n == name) else {
            bail!("{table}.{name} exists on the target only: upgrade the source's plugin first");
        };
        let pg_type = if pg(target.backend()) { target_type } else { source_type };
        let kind = match (pg(source.backend()) || pg(target.backend()), pg_type) {
            (true, Some(t)) => kind_of(t),
            _ => Kind::Plain(String::new()),
        };
        cols.push(Column { name: name.clone(), kind });
    }
    let select: Vec<String> = cols
        .iter()
        .map(|c| match (&c.kind, pg(source.backend())) {
            (Kind::Time, true) => format!("CAST(extract(epoch FROM {0}) * 1000000 AS BIGINT) AS {0}", c.name),
            (Kind::Array, true) => format!("array_to_json({0})::text AS {0}", c.name),
            _ if table == "search_events" && c.name == "top_results" && !pg(source.backend()) => {
                format!("{} AS top_results", storage::sqlite::TOP_RESULTS_JSON)
            }
            _ => c.name.clone(),
        })
        .collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY {}", select.join(", "), cols[0].name);
    let mut rows = source.stream(sql, Vec::new());
    let per_statement = (MAX_BINDS / cols.len()).clamp(1, 2000);
    let mut batch: Vec<Value> = Vec::with_capacity(per_statement * cols.len());
    let mut copied = 0i64;
    while let Some(chunk) = rows.recv().await {
        for row in chunk.with_context(|| format!("reading {table}"))? {
            batch.extend(row);
            if batch.len() >= per_statement * cols.len() {
                copied += insert(target, table, &cols, std::mem::take(&mut batch), merge).await?;
            }
        }
    }
    if !batch.is_empty() {
        copied += insert(target, table, &cols, batch, merge).await?;
    }
    Ok(copied)
}

async fn insert(
    target: &dyn Storage,
    table: &str,
    cols: &[Column],
    values: Vec<Value>,
    ignore_conflicts: bool,
) -> anyhow::Result<i64> {
    let width = cols.len();
    let rows = values.len() / width;
    let pg = pg(target.backend());
    let mut sql = format!(
        "INSERT {}INTO {table} ({}) VALUES ",
        if ignore_conflicts && !pg { "OR IGNORE " } else { "" },
        cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for (i, col) in cols.iter().enumerate() {
            let n = r * width + i + 1;
            if i > 0 {
                sql.push_str(", ");
            }
            match (&col.kind, pg) {
                (Kind::Time, true) => {
                    sql.push_str(&format!("(TIMESTAMPTZ 'epoch' + ${n}::bigint * INTERVAL '1 microsecond')"))
                }
                (Kind::Array, true) => {
                    sql.push_str(&format!("ARRAY(SELECT json_array_elements_text(${n}::json))"))
                }
                (Kind::Plain(t), true) => sql.push_str(&format!("${n}::{t}")),
                // Anonymous `?` (values are in order): SQLite looks numbered
                // parameters up by a linear scan, quadratic over a statement
                // of thousands.
                (_, false) => sql.push('?'),
            }
        }
        sql.push(')');
    }
    if ignore_conflicts && pg {
        sql.push_str(" ON CONFLICT DO NOTHING");
    }
    target.query(&sql, &values).await.with_context(|| format!("writing {table}"))?;
    Ok(rows as i64)
}

/// Makes the target's rollups cover what was copied.
async fn finish_rollups(
    source: &dyn Storage,
    target: &dyn Storage,
    source_tables: &[String],
    target_tables: &[String],
    append: bool,
) -> anyhow::Result<()> {
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64;
    if target.backend() == Backend::Timescaledb {
        // Continuous aggregates: materialize the whole copied history (the
        // refresh policy only looks back a few days).
        for level in ["1h", "1d"] {
            for rollup in ROLLUPS {
                let view = format!("{}_{level}", rollup.name);
                target
                    .query_strings(&format!("CALL refresh_continuous_aggregate('{view}', NULL, NULL)"))
                    .await
                    .with_context(|| format!("refreshing {view}"))?;
            }
        }
        eprintln!("  continuous aggregates refreshed from the copied events");
        // The usage rollups are the plugin's own tables there too (merged
        // rows of buckets both sides wrote would hold one side only).
        mark_all_dirty(target).await?;
        target.maintain(now_us).await?;
        // Rollup history older than the raw events cannot become part of a
        // continuous aggregate: say how much is left behind.
        if source_tables.iter().any(|t| t == "search_rollup_1h") {
            let oldest = source
                .query_strings(&format!(
                    "SELECT {} FROM search_events ORDER BY time LIMIT 1",
                    if pg(source.backend()) {
                        "CAST(extract(epoch FROM time) * 1000000 AS BIGINT)"
                    } else {
                        "time"
                    }
                ))
                .await?;
            if let Some(oldest) = oldest.first().and_then(|t| t.parse::<i64>().ok()) {
                for table in ["search_rollup_1h", "search_rollup_1d"] {
                    let older = source
                        .query(
                            &format!(
                                "SELECT count(*) FROM {table} WHERE bucket < {}",
                                if pg(source.backend()) {
                                    "(TIMESTAMPTZ 'epoch' + $1::bigint * INTERVAL '1 microsecond')"
                                } else {
                                    "?1"
                                }
                            ),
                            &[Value::Int(oldest - oldest % 86_400_000_000)],
                        )
                        .await?;
                    let n = older.first().and_then(|r| r.first()).map_or(0, Value::as_i64);
                    if n > 0 {
                        eprintln!(
                            "  note: {n} rows of {table} predate the oldest raw event and are not carried over \
                             (continuous aggregates are computed from raw events)"
                        );
                    }
                }
            }
        }
    } else if target_tables.iter().any(|t| t == "rollup_dirty")
        && (append
            || !source_tables.iter().any(|t| t == "rollup_dirty")
            || !source_tables.iter().any(|t| t == "usage_dirty")
            || source.backend() == Backend::Timescaledb)
    {
        // From TimescaleDB the source had no rollup tables (continuous
        // aggregates are views; only its usage rollups are tables); from a
        // source without usage_dirty, no usage rollups (older than
        // 0005_usage_rollups.sql); merged into a database with events of
        // its own, the buckets both wrote hold only one side. Rebuild from
        // the raw events what raw retention holds.
        mark_all_dirty(target).await?;
        if target.maintain(now_us).await?.ran {
            eprintln!("  rollups rebuilt from the raw events");
        } else {
            eprintln!("  rollups: marked for the next maintenance run (a server holds the maintenance lock)");
        }
    } else if target.backend() != Backend::Timescaledb {
        // Pending ranges were copied with rollup_dirty and usage_dirty
        // (like any table both sides keep); bring them up to date (the
        // usage rollups' current hour stays pending, as on the source).
        target.maintain(now_us).await?;
    }
    Ok(())
}

/// Marks the time range of every raw event for the next rollup run.
async fn mark_all_dirty(target: &dyn Storage) -> anyhow::Result<()> {
    let raw = RAW_TABLES.map(|t| format!("SELECT time FROM {t}")).join(" UNION ALL ");
    let range = format!(
        "INSERT INTO rollup_dirty (from_time, to_time) SELECT min(time), max(time) FROM ({raw}) AS raw \
         HAVING count(*) > 0"
    );
    target.query(&range, &[]).await?;
    Ok(())
}

/// In append mode: refuses when any (instance, boot) of the source already
/// has events in the target, which would store them twice.
async fn check_disjoint(source: &dyn Storage, target: &dyn Storage) -> anyhow::Result<()> {
    let boots = "SELECT instance_id || ' boot ' || CAST(boot_id AS TEXT) FROM ingest_progress";
    let theirs = target.query_strings(boots).await?;
    if let Some(both) = source.query_strings(boots).await?.into_iter().find(|b| theirs.contains(b)) {
        bail!(
            "the target already holds events of instance {both}: this history was copied there before \
             (a second copy would store its events twice)"
        );
    }
    Ok(())
}
