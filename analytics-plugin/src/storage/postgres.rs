//! PostgreSQL, plain or with TimescaleDB (detected or configured).
//!
//! Several hosts may write to one database: every row carries its
//! instance id, migrations and maintenance run under advisory locks, and
//! progress rows are per instance and boot.

use std::{
    fmt::Write as _,
    str::FromStr,
    sync::atomic::{AtomicU8, Ordering},
    time::Duration,
};

use sqlx::{
    AssertSqlSafe, Executor, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{
    Backend, InsertMethod, MaintenanceReport, RetentionConfig, Storage, StorageConfig, StorageError,
    TimescaleMode, migrate,
    rollup::{self, Dialect, ROLLUPS},
    rows::RowBatch,
};

/// Key of the advisory lock one maintenance run holds.
const MAINTENANCE_LOCK: i64 = 0x636f_6e74_6578_7402;

const DIALECT: Dialect = Dialect {
    bucket: |col, width| format!("date_bin(INTERVAL '{width} microseconds', {col}, TIMESTAMPTZ 'epoch')"),
    params: (
        "(TIMESTAMPTZ 'epoch' + $1::bigint * INTERVAL '1 microsecond')",
        "(TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 microsecond')",
    ),
    join: "string_agg",
    result_paths: ("unnest(s.top_results) AS r(path)", "r.path"),
    null_time: "CAST(NULL AS timestamptz)",
};

pub struct PgStorage {
    pool: PgPool,
    options: PgConnectOptions,
    timescale: TimescaleMode,
    insert_method: InsertMethod,
    retention: RetentionConfig,
    /// 0 unknown, 1 postgres, 2 timescaledb; set by `prepare`.
    backend: AtomicU8,
    /// Whether COPY is used (decided by `prepare`).
    use_copy: AtomicU8,
    /// The connection holding the alerting leader lock, while leading.
    leader: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
}

impl PgStorage {
    pub fn new(url: &str, config: &StorageConfig, retention: RetentionConfig) -> Result<Self, String> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| format!("invalid storage.url '{}': {e}", super::redact(url)))?
            .application_name("context-analytics");
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // DISCARD ALL: the PGlite test server shares one session
                    // between connections; on a real server it is a no-op.
                    conn.execute("DISCARD ALL").await?;
                    // ...whose reset search_path is `pg_catalog` alone, which
                    // hides the extension's functions: restore the default.
                    let path: String = sqlx::query_scalar("SHOW search_path").fetch_one(&mut *conn).await?;
                    if path == "pg_catalog" {
                        conn.execute("SET search_path TO \"$user\", public").await?;
                    }
                    conn.execute("SET TIME ZONE 'UTC'").await?;
                    conn.execute("SET client_min_messages = warning").await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            options,
            timescale: config.timescaledb,
            insert_method: config.insert_method,
            retention,
            backend: AtomicU8::new(0),
            leader: tokio::sync::Mutex::new(None),
            use_copy: AtomicU8::new(0),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn choose_backend(&self, conn: &mut sqlx::PgConnection) -> Result<Backend, StorageError> {
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT backend FROM schema_migrations ORDER BY version LIMIT 1")
                .fetch_optional(&mut *conn)
                .await?;
        let available: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
        )
        .fetch_one(&mut *conn)
        .await?;
        let backend = match (recorded.as_deref(), self.timescale) {
            (Some("timescaledb"), TimescaleMode::Off) => {
                return Err(StorageError::Migration(
                    "the database holds the TimescaleDB schema but storage.timescaledb = \"off\"".into(),
                ));
            }
            (Some("postgres"), TimescaleMode::On) => {
                return Err(StorageError::Migration(
                    "the database holds the plain PostgreSQL schema but storage.timescaledb = \"on\"".into(),
                ));
            }
            (Some("timescaledb"), _) => Backend::Timescaledb,
            (Some(_), _) => Backend::Postgres,
            (None, TimescaleMode::Off) => Backend::Postgres,
            (None, TimescaleMode::On) if !available => {
                return Err(StorageError::Migration(
                    "storage.timescaledb = \"on\" but the server has no timescaledb extension".into(),
                ));
            }
            (None, TimescaleMode::On) => Backend::Timescaledb,
            (None, TimescaleMode::Auto) if available => Backend::Timescaledb,
            (None, TimescaleMode::Auto) => Backend::Postgres,
        };
        Ok(backend)
    }

    async fn migrate(&self, conn: &mut sqlx::PgConnection, backend: Backend) -> Result<(), StorageError> {
        let list = match backend {
            Backend::Timescaledb => migrate::TIMESCALE,
            _ => migrate::POSTGRES,
        };
        for migration in list {
            let applied: Option<String> =
                sqlx::query_scalar("SELECT checksum FROM schema_migrations WHERE version = $1")
                    .bind(migration.version)
                    .fetch_optional(&mut *conn)
                    .await?;
            match applied {
                Some(sum) if sum == migration.checksum() => continue,
                Some(sum) => {
                    return Err(StorageError::Migration(format!(
                        "migration {} ({}) changed since it was applied (checksum {sum}, file {})",
                        migration.version,
                        migration.name,
                        migration.checksum()
                    )));
                }
                None => {}
            }
            // One statement at a time, outside a transaction block:
            // continuous aggregates cannot be created inside one. Every
            // statement is idempotent (IF NOT EXISTS), so an interrupted
            // migration is simply run again.
            for statement in migration.statements() {
                conn.execute(AssertSqlSafe(statement)).await.map_err(|e| {
                    StorageError::Migration(format!(
                        "migration {} ({}): {e}",
                        migration.version, migration.name
                    ))
                })?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, backend, name, checksum, applied_at) \
                 VALUES ($1, $2, $3, $4, now())",
            )
            .bind(migration.version)
            .bind(backend.as_str())
            .bind(migration.name)
            .bind(migration.checksum())
            .execute(&mut *conn)
            .await?;
        }
        if backend == Backend::Timescaledb {
            self.apply_policies(conn).await?;
        }
        Ok(())
    }

    /// Retention, compression and refresh policies from the config; replaced
    /// on every start so a changed interval takes effect.
    async fn apply_policies(&self, conn: &mut sqlx::PgConnection) -> Result<(), StorageError> {
        let r = &self.retention;
        let mut statements = Vec::new();
        for table in super::RAW_TABLES {
            statements.push(format!("SELECT remove_retention_policy('{table}', if_exists => true)"));
            statements.push(format!(
                "SELECT add_retention_policy('{table}', drop_after => INTERVAL '{} days')",
                r.raw_days
            ));
            statements.push(format!("SELECT remove_compression_policy('{table}', if_exists => true)"));
            statements.push(format!(
                "SELECT add_compression_policy('{table}', compress_after => INTERVAL '{} days')",
                r.compress_after_days
            ));
        }
        for rollup in ROLLUPS {
            for (suffix, days, start, end, every) in [
                ("1h", r.hourly_days, "3 days", "1 hour", "30 minutes"),
                ("1d", r.daily_days, "7 days", "1 day", "1 hour"),
            ] {
                let view = format!("{}_{suffix}", rollup.name);
                statements
                    .push(format!("SELECT remove_continuous_aggregate_policy('{view}', if_exists => true)"));
                statements.push(format!(
                    "SELECT add_continuous_aggregate_policy('{view}', start_offset => INTERVAL '{start}', \
                     end_offset => INTERVAL '{end}', schedule_interval => INTERVAL '{every}')"
                ));
                statements.push(format!("SELECT remove_retention_policy('{view}', if_exists => true)"));
                statements.push(format!(
                    "SELECT add_retention_policy('{view}', drop_after => INTERVAL '{days} days')"
                ));
            }
        }
        for statement in statements {
            conn.execute(AssertSqlSafe(statement.clone()))
                .await
                .map_err(|e| StorageError::Migration(format!("timescaledb policy `{statement}`: {e}")))?;
        }
        Ok(())
    }

    /// Refreshes the continuous aggregates over the buckets that
    /// `cagg_refresh_pending` marks (hourly views first: the daily ones
    /// read them), then deletes those marks by id. Returns the refreshes
    /// made. A mark another instance's run takes meanwhile is refreshed
    /// twice, which is harmless; a failed refresh leaves every mark for the
    /// next run.
    async fn refresh_caggs(&self) -> Result<usize, StorageError> {
        const HOUR: i64 = 3_600_000_000;
        const DAY: i64 = 24 * HOUR;
        let marks: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT id, (extract(epoch FROM from_time) * 1000000)::bigint, \
             (extract(epoch FROM to_time) * 1000000)::bigint FROM cagg_refresh_pending",
        )
        .fetch_all(&self.pool)
        .await?;
        if marks.is_empty() {
            return Ok(0);
        }
        let spans = |width: i64| {
            rollup::merge_ranges(marks.iter().map(|&(_, f, t)| rollup::bucket_span(f, t, width)).collect())
        };
        let mut refreshes = 0;
        for (suffix, width) in [("1h", HOUR), ("1d", DAY)] {
            for (from, to) in spans(width) {
                for rollup in ROLLUPS {
                    // Both ends are bucket boundaries: the window holds
                    // whole buckets only, every one a mark touches.
                    sqlx::query(AssertSqlSafe(format!(
                        "CALL refresh_continuous_aggregate('{}_{suffix}', \
                         TIMESTAMPTZ 'epoch' + $1::bigint * INTERVAL '1 microsecond', \
                         TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 microsecond')",
                        rollup.name
                    )))
                    .bind(from)
                    .bind(to)
                    .execute(&self.pool)
                    .await?;
                    refreshes += 1;
                }
            }
        }
        let ids: Vec<i64> = marks.iter().map(|m| m.0).collect();
        sqlx::query("DELETE FROM cagg_refresh_pending WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(refreshes)
    }

    fn is_timescale(&self) -> bool {
        self.backend.load(Ordering::Relaxed) == 2
    }
}

#[async_trait::async_trait]
impl Storage for PgStorage {
    fn backend(&self) -> Backend {
        if self.is_timescale() { Backend::Timescaledb } else { Backend::Postgres }
    }

    async fn ping(&self) -> Result<(), StorageError> {
        use sqlx::Connection as _;
        match self.pool.acquire().await {
            Ok(_) => Ok(()),
            Err(pool_error) => {
                // The pool only says it timed out: ask directly why. (Only
                // here: a second connection next to the pool's would be
                // refused by a server that takes one, like the test server.)
                let connect = sqlx::PgConnection::connect_with(&self.options);
                match tokio::time::timeout(Duration::from_secs(5), connect).await {
                    Ok(Err(error)) => Err(error.into()),
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                        Err(pool_error.into())
                    }
                    Err(_) => Err(StorageError::Unreachable("no answer within 5 s".into())),
                }
            }
        }
    }

    async fn prepare(&self) -> Result<(), StorageError> {
        let mut conn = self.pool.acquire().await?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint PRIMARY KEY, backend text NOT NULL, \
             name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL)",
        )
        .await?;
        sqlx::query("SELECT pg_advisory_lock($1)").bind(migrate::MIGRATION_LOCK).execute(&mut *conn).await?;
        let result = async {
            let backend = self.choose_backend(&mut conn).await?;
            self.migrate(&mut conn, backend).await?;
            Ok::<_, StorageError>(backend)
        }
        .await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(migrate::MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
        let backend = result?;
        self.backend.store(if backend == Backend::Timescaledb { 2 } else { 1 }, Ordering::Relaxed);
        let copy = match self.insert_method {
            InsertMethod::Copy => true,
            InsertMethod::Unnest => false,
            // UNNEST measured faster than COPY here (BENCHMARKS.md), and COPY
            // FROM STDIN breaks the PGlite test server.
            InsertMethod::Auto => false,
        };
        self.use_copy.store(u8::from(copy), Ordering::Relaxed);
        Ok(())
    }

    async fn last_seq(&self, instance_id: &str, boot_id: i64) -> Result<i64, StorageError> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT last_seq FROM ingest_progress WHERE instance_id = $1 AND boot_id = $2",
        )
        .bind(instance_id)
        .bind(boot_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(last.unwrap_or(0))
    }

    async fn write(&self, instance_id: &str, batch: &RowBatch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if self.use_copy.load(Ordering::Relaxed) == 1 {
            write_copy(&mut tx, instance_id, batch).await?;
        } else {
            write_unnest(&mut tx, instance_id, batch).await?;
        }
        sqlx::query(
            "INSERT INTO ingest_progress (instance_id, boot_id, last_seq, updated_at) VALUES ($1, $2, $3, now()) \
             ON CONFLICT (instance_id, boot_id) DO UPDATE \
             SET last_seq = GREATEST(ingest_progress.last_seq, EXCLUDED.last_seq), updated_at = now()",
        )
        .bind(instance_id)
        .bind(batch.boot_id)
        .bind(batch.last_seq)
        .execute(&mut *tx)
        .await?;
        // On TimescaleDB too: the usage rollups are the plugin's own there.
        sqlx::query(
            "INSERT INTO rollup_dirty (from_time, to_time) VALUES \
             (TIMESTAMPTZ 'epoch' + $1::bigint * INTERVAL '1 microsecond', \
              TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 microsecond')",
        )
        .bind(batch.min_time_us)
        .bind(batch.max_time_us)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn maintain(&self, now_us: i64) -> Result<MaintenanceReport, StorageError> {
        // On TimescaleDB the other rollups are continuous aggregates, and
        // retention and compression are its jobs: only the usage rollups
        // are the plugin's.
        let usage_only = self.is_timescale();
        let mut report = MaintenanceReport::default();
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(MAINTENANCE_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(report);
        }
        report.ran = true;
        let dirty: Vec<(i64, i64)> = sqlx::query_as(
            "DELETE FROM rollup_dirty RETURNING \
             (extract(epoch FROM from_time) * 1000000)::bigint, (extract(epoch FROM to_time) * 1000000)::bigint",
        )
        .fetch_all(&mut *tx)
        .await?;
        let usage_dirty: Vec<(i64, i64)> = sqlx::query_as(
            "DELETE FROM usage_dirty RETURNING \
             (extract(epoch FROM from_time) * 1000000)::bigint, (extract(epoch FROM to_time) * 1000000)::bigint",
        )
        .fetch_all(&mut *tx)
        .await?;
        let dirty_spans = rollup::merge_ranges(dirty.clone());
        let plan = rollup::plan(
            dirty,
            usage_dirty,
            now_us,
            &self.retention,
            &DIALECT,
            &super::RAW_TABLES,
            usage_only,
        );
        report.rollup_ranges = plan.ranges;
        report.usage_ranges = plan.usage_ranges;
        for step in plan.steps {
            let binds = step.binds.into_iter().map(super::Value::Int).collect();
            let affected = super::bound(step.sql, binds).execute(&mut *tx).await?.rows_affected();
            if step.retention {
                report.rows_deleted += affected;
            }
        }
        if usage_only && !dirty_spans.is_empty() {
            // The continuous aggregates still have to take these in: the
            // API reads them from raw events until refresh_caggs has.
            let (from, to): (Vec<i64>, Vec<i64>) = dirty_spans.into_iter().unzip();
            sqlx::query(
                "INSERT INTO cagg_refresh_pending (from_time, to_time) \
                 SELECT TIMESTAMPTZ 'epoch' + f * INTERVAL '1 microsecond', TIMESTAMPTZ 'epoch' + t * INTERVAL '1 microsecond' \
                 FROM unnest($1::bigint[], $2::bigint[]) AS m(f, t)",
            )
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if usage_only {
            report.aggregate_refreshes = self.refresh_caggs().await?;
        }
        Ok(report)
    }

    async fn query(&self, sql: &str, binds: &[super::Value]) -> Result<Vec<Vec<super::Value>>, StorageError> {
        let rows = super::bound(sql.to_owned(), binds.to_vec()).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(super::decode_row).collect())
    }

    fn stream(&self, sql: String, binds: Vec<super::Value>) -> super::RowStream {
        let (tx, rx) = tokio::sync::mpsc::channel(super::STREAM_BUFFER_CHUNKS);
        let pool = self.pool.clone();
        tokio::spawn(async move { super::forward(super::bound(sql, binds).fetch(&pool), tx).await });
        rx
    }

    async fn close(&self) {
        self.resign().await;
        self.pool.close().await;
    }

    async fn lead(&self, key: i64) -> Result<bool, StorageError> {
        use sqlx::Connection as _;
        let mut leader = self.leader.lock().await;
        if let Some(conn) = leader.as_mut() {
            // Still leading while the lock's connection lives.
            match tokio::time::timeout(Duration::from_secs(5), sqlx::query("SELECT 1").execute(&mut *conn))
                .await
            {
                Ok(Ok(_)) => return Ok(true),
                _ => *leader = None,
            }
        }
        let mut conn = sqlx::PgConnection::connect_with(&self.options).await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await?;
        if got {
            *leader = Some(conn);
        } else {
            let _ = conn.close().await;
        }
        Ok(got)
    }

    async fn resign(&self) {
        use sqlx::Connection as _;
        if let Some(conn) = self.leader.lock().await.take() {
            // Closing the session releases its advisory locks.
            let _ = conn.close().await;
        }
    }
}

// ---- COPY: text format, one buffer per table ----

fn copy_text(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn copy_opt(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => copy_text(out, v),
        None => out.push_str("\\N"),
    }
}

/// `{"a","b"}`, escaped for COPY.
fn copy_array<'a>(out: &mut String, items: impl Iterator<Item = &'a str>) {
    let mut literal = String::from("{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            literal.push(',');
        }
        literal.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                literal.push('\\');
            }
            literal.push(c);
        }
        literal.push('"');
    }
    literal.push('}');
    copy_text(out, &literal);
}

/// A Unix-µs time as a PostgreSQL timestamptz literal (UTC).
pub fn timestamp_literal(out: &mut String, time_us: i64) {
    let secs = time_us.div_euclid(1_000_000);
    let micros = time_us.rem_euclid(1_000_000);
    let (year, month, day) = crate::time::civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{micros:06}+00",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
}

async fn copy_rows(tx: &mut sqlx::PgConnection, statement: &str, buffer: String) -> Result<(), sqlx::Error> {
    if buffer.is_empty() {
        return Ok(());
    }
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(buffer.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

async fn write_copy(
    tx: &mut sqlx::PgConnection,
    instance: &str,
    batch: &RowBatch,
) -> Result<(), sqlx::Error> {
    let mut head = String::new();
    copy_text(&mut head, instance);
    let mut buf = String::with_capacity(batch.searches.len() * 256);
    for (id, r) in &batch.searches {
        timestamp_literal(&mut buf, r.time_us);
        let _ = write!(buf, "\t{head}\t{}\t{}\t", id.boot_id, id.seq);
        copy_text(&mut buf, &r.project);
        buf.push('\t');
        copy_text(&mut buf, &r.user_id);
        buf.push('\t');
        copy_opt(&mut buf, r.query.as_deref());
        let _ = write!(buf, "\t{}\t{}\t{}\t", r.kind, r.cache, r.status);
        copy_opt(&mut buf, r.error_code.as_deref());
        let _ = write!(buf, "\t{}\t{}\t{}\t", r.latency_ms, r.latency_bucket, r.result_count);
        copy_array(&mut buf, r.top_results.iter());
        buf.push('\t');
        copy_text(&mut buf, &r.search_id);
        buf.push('\n');
    }
    copy_rows(
        tx,
        "COPY search_events (time, instance_id, boot_id, seq, project, user_id, query, kind, cache, status, \
         error_code, latency_ms, latency_bucket, result_count, top_results, search_id) FROM STDIN",
        buf,
    )
    .await?;
    let mut buf = String::new();
    for (id, r) in &batch.indexes {
        timestamp_literal(&mut buf, r.time_us);
        let _ = write!(buf, "\t{head}\t{}\t{}\t", id.boot_id, id.seq);
        copy_text(&mut buf, &r.project);
        buf.push('\t');
        copy_text(&mut buf, &r.path);
        buf.push('\t');
        copy_text(&mut buf, &r.file_type);
        let _ = write!(buf, "\t{}\t{}\t{}\t", r.bytes, r.duration_ms, r.outcome);
        copy_opt(&mut buf, r.error_code.as_deref());
        let _ = writeln!(buf, "\t{}", r.queue_depth);
    }
    copy_rows(
        tx,
        "COPY index_events (time, instance_id, boot_id, seq, project, path, file_type, bytes, duration_ms, \
         outcome, error_code, queue_depth) FROM STDIN",
        buf,
    )
    .await?;
    let mut buf = String::new();
    for (id, r) in &batch.opens {
        timestamp_literal(&mut buf, r.time_us);
        let _ = write!(buf, "\t{head}\t{}\t{}\t", id.boot_id, id.seq);
        copy_text(&mut buf, &r.project);
        buf.push('\t');
        copy_text(&mut buf, &r.user_id);
        buf.push('\t');
        copy_text(&mut buf, &r.path);
        let _ = write!(buf, "\t{}\t", r.rank);
        copy_text(&mut buf, &r.search_id);
        buf.push('\n');
    }
    copy_rows(
        tx,
        "COPY open_events (time, instance_id, boot_id, seq, project, user_id, path, rank, search_id) FROM STDIN",
        buf,
    )
    .await?;
    let mut buf = String::new();
    for (id, r) in &batch.snapshots {
        timestamp_literal(&mut buf, r.time_us);
        let _ = write!(buf, "\t{head}\t{}\t{}\t", id.boot_id, id.seq);
        copy_text(&mut buf, &r.project);
        let _ = write!(
            buf,
            "\t{}\t{}\t{}\t{}\t",
            r.total_files, r.indexed_files, r.vector_store_bytes, r.embedding_cache_bytes
        );
        match r.duplication_ratio {
            Some(ratio) => {
                let _ = writeln!(buf, "{ratio}");
            }
            None => buf.push_str("\\N\n"),
        }
    }
    copy_rows(
        tx,
        "COPY project_snapshots (time, instance_id, boot_id, seq, project, total_files, indexed_files, \
         vector_store_bytes, embedding_cache_bytes, duplication_ratio) FROM STDIN",
        buf,
    )
    .await?;
    Ok(())
}

// ---- UNNEST: one statement per table with array binds ----

const TIME_OF: &str = "TIMESTAMPTZ 'epoch' + t * INTERVAL '1 microsecond'";

async fn write_unnest(
    tx: &mut sqlx::PgConnection,
    instance: &str,
    batch: &RowBatch,
) -> Result<(), sqlx::Error> {
    if !batch.searches.is_empty() {
        let rows = &batch.searches;
        let top: Vec<String> = rows
            .iter()
            .map(|(_, r)| serde_json::to_string(&r.top_results).unwrap_or_else(|_| "[]".to_owned()))
            .collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO search_events (time, instance_id, boot_id, seq, project, user_id, query, kind, cache, \
             status, error_code, latency_ms, latency_bucket, result_count, top_results, search_id) \
             SELECT {TIME_OF}, $1, $2, s, p, u, q, k, c, st, e, l, lb, rc, \
             ARRAY(SELECT json_array_elements_text(tr::json)), sid \
             FROM UNNEST($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
             $10::text[], $11::text[], $12::float8[], $13::int2[], $14::int4[], $15::text[], $16::text[]) \
             AS x(t, s, p, u, q, k, c, st, e, l, lb, rc, tr, sid)"
        )))
        .bind(instance)
        .bind(batch.boot_id)
        .bind(rows.iter().map(|(_, r)| r.time_us).collect::<Vec<_>>())
        .bind(rows.iter().map(|(id, _)| id.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.project.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.user_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.query.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.kind).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.cache).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.status).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.error_code.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.latency_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.latency_bucket).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.result_count).collect::<Vec<_>>())
        .bind(top)
        .bind(rows.iter().map(|(_, r)| r.search_id.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !batch.indexes.is_empty() {
        let rows = &batch.indexes;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO index_events (time, instance_id, boot_id, seq, project, path, file_type, bytes, \
             duration_ms, outcome, error_code, queue_depth) \
             SELECT {TIME_OF}, $1, $2, s, p, pa, ft, b, d, o, e, q \
             FROM UNNEST($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::int8[], \
             $9::float8[], $10::text[], $11::text[], $12::int8[]) AS x(t, s, p, pa, ft, b, d, o, e, q)"
        )))
        .bind(instance)
        .bind(batch.boot_id)
        .bind(rows.iter().map(|(_, r)| r.time_us).collect::<Vec<_>>())
        .bind(rows.iter().map(|(id, _)| id.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.project.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.path.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.file_type.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.bytes).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.duration_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.outcome).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.error_code.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.queue_depth).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !batch.opens.is_empty() {
        let rows = &batch.opens;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO open_events (time, instance_id, boot_id, seq, project, user_id, path, rank, search_id) \
             SELECT {TIME_OF}, $1, $2, s, p, u, pa, r, sid \
             FROM UNNEST($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::int4[], $9::text[]) \
             AS x(t, s, p, u, pa, r, sid)"
        )))
        .bind(instance)
        .bind(batch.boot_id)
        .bind(rows.iter().map(|(_, r)| r.time_us).collect::<Vec<_>>())
        .bind(rows.iter().map(|(id, _)| id.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.project.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.user_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.path.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.rank).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.search_id.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !batch.snapshots.is_empty() {
        let rows = &batch.snapshots;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO project_snapshots (time, instance_id, boot_id, seq, project, total_files, indexed_files, \
             vector_store_bytes, embedding_cache_bytes, duplication_ratio) \
             SELECT {TIME_OF}, $1, $2, s, p, tf, inf, vs, ec, dr \
             FROM UNNEST($3::bigint[], $4::bigint[], $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], \
             $10::float8[]) AS x(t, s, p, tf, inf, vs, ec, dr)"
        )))
        .bind(instance)
        .bind(batch.boot_id)
        .bind(rows.iter().map(|(_, r)| r.time_us).collect::<Vec<_>>())
        .bind(rows.iter().map(|(id, _)| id.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.project.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.total_files).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.indexed_files).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.vector_store_bytes).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.embedding_cache_bytes).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, r)| r.duplication_ratio).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_in_utc() {
        let mut out = String::new();
        timestamp_literal(&mut out, 0);
        out.push(' ');
        timestamp_literal(&mut out, 1_795_852_800_123_456); // 2026-11-28 08:00:00.123456
        out.push(' ');
        timestamp_literal(&mut out, 951_782_400_000_000); // 2000-02-29
        assert_eq!(
            out,
            "1970-01-01 00:00:00.000000+00 2026-11-28 08:00:00.123456+00 2000-02-29 00:00:00.000000+00"
        );
    }

    #[test]
    fn copy_escapes_text_and_arrays() {
        let mut out = String::new();
        copy_text(&mut out, "a\tb\\c\nd");
        out.push('|');
        copy_array(&mut out, ["x \"y\"", "back\\slash"].into_iter());
        assert_eq!(out, "a\\tb\\\\c\\nd|{\"x \\\\\"y\\\\\"\",\"back\\\\\\\\slash\"}");
    }
}
