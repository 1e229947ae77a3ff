//! SQLite: the embedded default, one file under the plugin's data dir, in
//! WAL mode so API reads never wait for the writer.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    AssertSqlSafe, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    Backend, MaintenanceReport, RetentionConfig, Storage, StorageConfig, StorageError, migrate,
    rollup::{self, Dialect},
    rows::RowBatch,
};

/// Bound variables per multi-row insert statement (SQLite allows 32766).
/// Each connection keeps the full-size statement of every table prepared,
/// and a prepared statement's program and parameter array grow with its
/// variables: at 30,000 they took 2-3 MB per table and connection, and the
/// argument buffers of each chunk were megabytes more per write. About
/// 2,000 (125 search rows) writes as fast and keeps both small.
const MAX_VARIABLES: usize = 2_000;

pub struct SqliteStorage {
    pool: SqlitePool,
    /// One connection for the event writer alone. SQLite drops a
    /// connection's page cache whenever another connection changed the
    /// file, so writes taking turns over the pool started cold every time
    /// and re-read their index pages (half the plugin's cost at 40,000
    /// events/s, BENCHMARKS.md); it also keeps the large insert statements
    /// prepared on one connection only.
    writer: SqlitePool,
    /// The database file, for the streaming reader's own connection.
    path: std::path::PathBuf,
    retention: RetentionConfig,
}

const DIALECT: Dialect = Dialect {
    bucket: |col, width| format!("({col} / {width}) * {width}"),
    params: ("?1", "?2"),
    join: "group_concat",
    result_paths: ("json_each(s.top_results) AS r", "r.value"),
    null_time: "CAST(NULL AS INTEGER)",
};

impl SqliteStorage {
    pub fn new(path: &Path, config: &StorageConfig, retention: RetentionConfig) -> Result<Self, String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create folder for storage.url '{}': {e}", parent.display()))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| format!("invalid storage.url for sqlite: {e}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options.clone());
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self { pool, writer, path: path.to_path_buf(), retention })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Column lists of the raw tables, in bind order.
const SEARCH_COLUMNS: &str = "time, instance_id, boot_id, seq, project, user_id, query, kind, cache, status, \
                              error_code, latency_ms, latency_bucket, result_count, top_results, search_id";
const INDEX_COLUMNS: &str = "time, instance_id, boot_id, seq, project, path, file_type, bytes, duration_ms, \
                             outcome, error_code, queue_depth";
const OPEN_COLUMNS: &str = "time, instance_id, boot_id, seq, project, user_id, path, rank, search_id";
const SNAPSHOT_COLUMNS: &str = "time, instance_id, boot_id, seq, project, total_files, indexed_files, \
                                vector_store_bytes, embedding_cache_bytes, duplication_ratio";

fn insert_sql(table: &str, columns: &str, rows: usize) -> String {
    let width = columns.split(',').count();
    let row = format!("({})", vec!["?"; width].join(", "));
    format!("INSERT INTO {table} ({columns}) VALUES {}", vec![row; rows].join(", "))
}

/// Inserts `items` in statements of as many rows as the variable limit
/// allows; `bind` binds one item's columns.
async fn insert_chunked<'a, T: 'a>(
    tx: &mut sqlx::SqliteConnection,
    table: &str,
    columns: &str,
    items: &'a [T],
    bind: impl for<'q> Fn(
        sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
        &'a T,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
) -> Result<(), sqlx::Error> {
    let width = columns.split(',').count();
    let per_statement = MAX_VARIABLES / width;
    for chunk in items.chunks(per_statement) {
        // Only the full-size statement is kept prepared: every batch ends
        // with a chunk of another size, and caching one statement per size
        // (each with thousands of parameters) grew memory by hundreds of MB.
        let mut query = sqlx::query(AssertSqlSafe(insert_sql(table, columns, chunk.len())))
            .persistent(chunk.len() == per_statement);
        for item in chunk {
            query = bind(query, item);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Storage for SqliteStorage {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn prepare(&self) -> Result<(), StorageError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
             checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        for migration in migrate::SQLITE {
            let applied: Option<String> =
                sqlx::query_scalar("SELECT checksum FROM schema_migrations WHERE version = ?1")
                    .bind(migration.version)
                    .fetch_optional(&mut *conn)
                    .await?;
            match applied {
                Some(sum) if sum == migration.checksum() => continue,
                Some(sum) => {
                    return Err(StorageError::Migration(format!(
                        "sqlite migration {} ({}) changed since it was applied (checksum {sum}, file {})",
                        migration.version,
                        migration.name,
                        migration.checksum()
                    )));
                }
                None => {}
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            for statement in migration.statements() {
                sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut *tx).await.map_err(|e| {
                    StorageError::Migration(format!(
                        "sqlite migration {} ({}): {e}",
                        migration.version, migration.name
                    ))
                })?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(migration.checksum())
            .bind(crate::plugin::now_us())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn last_seq(&self, instance_id: &str, boot_id: i64) -> Result<i64, StorageError> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT last_seq FROM ingest_progress WHERE instance_id = ?1 AND boot_id = ?2",
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
        let mut tx = self.writer.begin().await?;
        insert_chunked(&mut tx, "search_events", SEARCH_COLUMNS, &batch.searches, |q, (id, r)| {
            q.bind(r.time_us)
                .bind(instance_id)
                .bind(id.boot_id)
                .bind(id.seq)
                .bind(&r.project)
                .bind(&r.user_id)
                .bind(&r.query)
                .bind(r.kind)
                .bind(r.cache)
                .bind(r.status)
                .bind(&r.error_code)
                .bind(r.latency_ms)
                .bind(r.latency_bucket)
                .bind(r.result_count)
                .bind(serde_json::to_string(&r.top_results).unwrap_or_else(|_| "[]".to_owned()))
                .bind(&r.search_id)
        })
        .await?;
        insert_chunked(&mut tx, "index_events", INDEX_COLUMNS, &batch.indexes, |q, (id, r)| {
            q.bind(r.time_us)
                .bind(instance_id)
                .bind(id.boot_id)
                .bind(id.seq)
                .bind(&r.project)
                .bind(&r.path)
                .bind(&r.file_type)
                .bind(r.bytes)
                .bind(r.duration_ms)
                .bind(r.outcome)
                .bind(&r.error_code)
                .bind(r.queue_depth)
        })
        .await?;
        insert_chunked(&mut tx, "open_events", OPEN_COLUMNS, &batch.opens, |q, (id, r)| {
            q.bind(r.time_us)
                .bind(instance_id)
                .bind(id.boot_id)
                .bind(id.seq)
                .bind(&r.project)
                .bind(&r.user_id)
                .bind(&r.path)
                .bind(r.rank)
                .bind(&r.search_id)
        })
        .await?;
        insert_chunked(&mut tx, "project_snapshots", SNAPSHOT_COLUMNS, &batch.snapshots, |q, (id, r)| {
            q.bind(r.time_us)
                .bind(instance_id)
                .bind(id.boot_id)
                .bind(id.seq)
                .bind(&r.project)
                .bind(r.total_files)
                .bind(r.indexed_files)
                .bind(r.vector_store_bytes)
                .bind(r.embedding_cache_bytes)
                .bind(r.duplication_ratio)
        })
        .await?;
        sqlx::query(
            "INSERT INTO ingest_progress (instance_id, boot_id, last_seq, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (instance_id, boot_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), \
             updated_at = excluded.updated_at",
        )
        .bind(instance_id)
        .bind(batch.boot_id)
        .bind(batch.last_seq)
        .bind(crate::plugin::now_us())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO rollup_dirty (from_time, to_time) VALUES (?1, ?2)")
            .bind(batch.min_time_us)
            .bind(batch.max_time_us)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn maintain(&self, now_us: i64) -> Result<MaintenanceReport, StorageError> {
        let mut report = MaintenanceReport { ran: true, ..Default::default() };
        let mut tx = self.pool.begin().await?;
        let dirty: Vec<(i64, i64)> = sqlx::query_as("DELETE FROM rollup_dirty RETURNING from_time, to_time")
            .fetch_all(&mut *tx)
            .await?;
        let usage_dirty: Vec<(i64, i64)> =
            sqlx::query_as("DELETE FROM usage_dirty RETURNING from_time, to_time")
                .fetch_all(&mut *tx)
                .await?;
        let plan =
            rollup::plan(dirty, usage_dirty, now_us, &self.retention, &DIALECT, &super::RAW_TABLES, false);
        report.rollup_ranges = plan.ranges;
        report.usage_ranges = plan.usage_ranges;
        for step in plan.steps {
            let binds = step.binds.into_iter().map(super::Value::Int).collect();
            let affected = super::bound(step.sql, binds).execute(&mut *tx).await?.rows_affected();
            if step.retention {
                report.rows_deleted += affected;
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn query(&self, sql: &str, binds: &[super::Value]) -> Result<Vec<Vec<super::Value>>, StorageError> {
        let rows = super::bound(sql.to_owned(), binds.to_vec()).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(super::decode_row).collect())
    }

    /// Long reads (exports, copies) step their own read-only connection on
    /// a blocking thread and hand rows over in chunks: sqlx's SQLite worker
    /// passes every row through a channel to the async side, a thread
    /// wake-up per row that capped a large export at a third of what
    /// SQLite reads (BENCHMARKS.md). WAL mode lets it read beside the
    /// writer.
    fn stream(&self, sql: String, binds: Vec<super::Value>) -> super::RowStream {
        let (tx, rx) = tokio::sync::mpsc::channel(super::STREAM_BUFFER_CHUNKS);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_chunks(&path, &sql, &binds, &tx) {
                let _ = tx.blocking_send(Err(StorageError::Database(e.to_string())));
            }
        });
        rx
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Runs `sql` on a read-only connection of its own and sends its rows in
/// chunks until they end or the receiver hangs up.
fn read_chunks(
    path: &Path,
    sql: &str,
    binds: &[super::Value],
    tx: &tokio::sync::mpsc::Sender<Result<Vec<Vec<super::Value>>, StorageError>>,
) -> rusqlite::Result<()> {
    use super::Value;
    use rusqlite::{OpenFlags, types::ValueRef};
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mut statement = conn.prepare(sql)?;
    for (i, value) in binds.iter().enumerate() {
        match value {
            Value::Null => statement.raw_bind_parameter(i + 1, rusqlite::types::Null)?,
            Value::Int(v) => statement.raw_bind_parameter(i + 1, v)?,
            Value::Float(v) => statement.raw_bind_parameter(i + 1, v)?,
            Value::Text(v) => statement.raw_bind_parameter(i + 1, v)?,
        }
    }
    let width = statement.column_count();
    let mut rows = statement.raw_query();
    let mut chunk = Vec::with_capacity(super::STREAM_CHUNK_ROWS);
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Float(v),
                ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            });
        }
        chunk.push(values);
        if chunk.len() == super::STREAM_CHUNK_ROWS
            && tx
                .blocking_send(Ok(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(super::STREAM_CHUNK_ROWS),
                )))
                .is_err()
        {
            return Ok(());
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}
