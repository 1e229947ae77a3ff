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

pub struct SqliteStorage {
    pool: SqlitePool,
    /// The event writer's own connection, opened on first use and dropped
    /// after a failed write. Writes run on it synchronously (rusqlite, one
    /// cached single-row statement per table) rather than through sqlx,
    /// whose SQLite worker thread takes every statement and its copied
    /// arguments over a channel: at 40,000 events/s that, the statement
    /// texts and the thread hand-overs cost more than SQLite itself
    /// (BENCHMARKS.md). A connection of its own also keeps its page cache
    /// warm: SQLite drops a connection's cache whenever another connection
    /// changed the file, so writes taking turns over a pool started cold.
    writer: parking_lot::Mutex<Option<rusqlite::Connection>>,
    /// The writer's ids of result paths (taken after `writer`).
    path_ids: parking_lot::Mutex<PathIds>,
    /// The database file, for the writer's and the streaming reader's own
    /// connections.
    path: std::path::PathBuf,
    /// How long a write may take, waits for the write lock included.
    write_timeout: Duration,
    retention: RetentionConfig,
    /// One maintenance run at a time (the task and the live page both
    /// start runs; a run's pieces are transactions of their own): a run
    /// that finds one going does not run.
    maintenance: tokio::sync::Mutex<()>,
}

/// Rows a maintenance run inserts per write transaction when it writes
/// the usage rollups in pieces: a few milliseconds of the write lock, so
/// the event writer gets its turn between them.
const PIECE_ROWS: usize = 5_000;

/// The path of a `json_each(…top_results) AS r` row. Since migration 0006
/// `top_results` holds `result_paths` ids (JSON numbers); rows written
/// before hold the paths themselves (JSON strings).
macro_rules! result_path {
    () => {
        "CASE r.type WHEN 'integer' THEN (SELECT p.path FROM result_paths p WHERE p.id = r.value) ELSE r.value END"
    };
}
pub const RESULT_PATH: &str = result_path!();

/// `top_results` of a `search_events` row as the JSON array of its paths,
/// best first, whichever way the row stores them.
pub const TOP_RESULTS_JSON: &str = concat!(
    "(SELECT json_group_array(",
    result_path!(),
    " ORDER BY r.key) FROM json_each(top_results) AS r)"
);

/// Known `result_paths` ids the writer keeps at most; past that it starts
/// over (about 4 MB; a path it no longer knows costs one indexed lookup).
const PATH_IDS_MAX: usize = 65_536;

/// The event writer's map of result paths to their `result_paths` ids.
/// Ids its open transaction found or made are kept apart until it
/// commits: after a rollback no id is known that the table does not hold.
#[derive(Default)]
struct PathIds {
    known: rustc_hash::FxHashMap<Box<str>, i64>,
    pending: rustc_hash::FxHashMap<Box<str>, i64>,
}

impl PathIds {
    fn id(&mut self, tx: &rusqlite::Transaction<'_>, path: &str) -> rusqlite::Result<i64> {
        use rusqlite::OptionalExtension;
        if let Some(&id) = self.known.get(path).or_else(|| self.pending.get(path)) {
            return Ok(id);
        }
        let found = tx
            .prepare_cached("SELECT id FROM result_paths WHERE path = ?1")?
            .query_row([path], |row| row.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO result_paths (path) VALUES (?1)")?.execute([path])?;
                tx.last_insert_rowid()
            }
        };
        self.pending.insert(path.into(), id);
        Ok(id)
    }

    /// The transaction committed (`true`) or not.
    fn settle(&mut self, committed: bool) {
        if committed {
            if self.known.len() + self.pending.len() > PATH_IDS_MAX {
                self.known.clear();
            }
            self.known.extend(self.pending.drain());
        } else {
            self.pending.clear();
        }
    }
}

const DIALECT: Dialect = Dialect {
    bucket: |col, width| format!("({col} / {width}) * {width}"),
    params: ("?1", "?2"),
    join: "group_concat",
    result_paths: ("json_each(s.top_results) AS r", RESULT_PATH),
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
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            writer: parking_lot::Mutex::new(None),
            path_ids: parking_lot::Mutex::new(PathIds::default()),
            path: path.to_path_buf(),
            write_timeout: Duration::from_millis(config.write_timeout_ms.max(1)),
            retention,
            maintenance: tokio::sync::Mutex::new(()),
        })
    }
}

impl SqliteStorage {
    /// Runs `work` on the writer's connection, opened if it is not. On an
    /// error the connection is dropped, whatever state it is in, so the
    /// next write starts from a new one.
    fn with_writer<T>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let mut writer = self.writer.lock();
        if writer.is_none() {
            let conn = rusqlite::Connection::open_with_flags(
                &self.path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .and_then(|conn| {
                conn.busy_timeout(self.write_timeout)?;
                // FULL: a commit is on disk when it returns. The event queue
                // releases an event's room then; with NORMAL a power loss
                // could also take the commits since the last checkpoint,
                // beyond the queue's fsync window. One fsync per write
                // (about one a second).
                conn.pragma_update(None, "synchronous", "FULL")?;
                Ok(conn)
            })
            .map_err(|e| StorageError::Unreachable(format!("cannot open {}: {e}", self.path.display())))?;
            *writer = Some(conn);
        }
        work(writer.as_mut().expect("opened above")).map_err(|e| {
            writer.take();
            self.write_error(e)
        })
    }

    fn write_now(&self, instance_id: &str, batch: &RowBatch) -> Result<(), StorageError> {
        self.with_writer(|conn| {
            // Give up on statements still running at the deadline, as a
            // write through the pool would time out.
            let deadline = std::time::Instant::now() + self.write_timeout;
            let mut path_ids = self.path_ids.lock();
            let result = conn
                .progress_handler(10_000, Some(move || std::time::Instant::now() > deadline))
                .and_then(|()| write_rows(conn, instance_id, batch, &mut path_ids));
            let _ = conn.progress_handler(0, None::<fn() -> bool>);
            path_ids.settle(result.is_ok());
            result
        })
    }

    fn write_error(&self, e: rusqlite::Error) -> StorageError {
        match e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                StorageError::Unreachable(e.to_string())
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::OperationInterrupted
                ) =>
            {
                StorageError::Timeout(self.write_timeout.as_millis() as u64)
            }
            e => StorageError::Database(e.to_string()),
        }
    }

    /// Runs a usage step of a maintenance run outside its final
    /// transaction. A `DELETE FROM t WHERE …` deletes [`PIECE_ROWS`] rows
    /// per transaction; an `INSERT INTO t (…) SELECT …` reads its `SELECT`
    /// on a read-only connection (a snapshot, no lock: the grouping, which
    /// is the cost, happens there) and writes the rows through the
    /// writer's connection [`PIECE_ROWS`] per transaction. In one
    /// transaction, an hour-end run held the write lock for half a minute
    /// at 1,000 events/s, and the event writer waited and then spooled.
    fn run_in_pieces(&self, step: &rollup::Step) -> Result<u64, StorageError> {
        use rusqlite::types::Value;
        let binds: Vec<Value> = step.binds.iter().map(|&b| Value::Integer(b)).collect();
        let Some(split) = step.sql.starts_with("INSERT INTO ").then(|| step.sql.find(") SELECT ")).flatten()
        else {
            // A `DELETE FROM t WHERE …` (a recomputed hour's old rows: as
            // many as its events for the key tables) goes in pieces too.
            let sql = match step.sql.strip_prefix("DELETE FROM ").and_then(|rest| rest.split_once(" WHERE "))
            {
                Some((table, condition)) => format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {condition} LIMIT {PIECE_ROWS})"
                ),
                None => step.sql.clone(),
            };
            let mut deleted = 0;
            loop {
                let n =
                    self.with_writer(|conn| conn.execute(&sql, rusqlite::params_from_iter(&binds)))? as u64;
                deleted += n;
                if n < PIECE_ROWS as u64 || sql == step.sql {
                    return Ok(deleted);
                }
            }
        };
        let (into, select) = (&step.sql[..=split], &step.sql[split + 2..]);
        let columns = into.rsplit_once('(').map_or(0, |(_, cols)| cols.matches(',').count() + 1);
        let insert = format!("{into} VALUES ({})", vec!["?"; columns].join(", "));
        let read = |e| self.write_error(e);
        let reader = open_reader(&self.path, self.write_timeout).map_err(read)?;
        let mut statement = reader.prepare(select).map_err(read)?;
        let mut rows = statement.query(rusqlite::params_from_iter(&binds)).map_err(read)?;
        let mut piece: Vec<Vec<Value>> = Vec::with_capacity(PIECE_ROWS);
        let mut written = 0;
        loop {
            let row = rows.next().map_err(read)?;
            if let Some(row) = row {
                piece.push(
                    (0..columns)
                        .map(|i| row.get::<_, Value>(i))
                        .collect::<rusqlite::Result<_>>()
                        .map_err(read)?,
                );
            }
            let last = row.is_none();
            if !piece.is_empty() && (piece.len() == PIECE_ROWS || last) {
                self.with_writer(|conn| {
                    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    {
                        let mut insert = tx.prepare_cached(&insert)?;
                        for values in &piece {
                            insert.execute(rusqlite::params_from_iter(values))?;
                        }
                    }
                    tx.commit()
                })?;
                written += piece.len() as u64;
                piece.clear();
            }
            if last {
                return Ok(written);
            }
        }
    }
}

/// Runs synchronous SQLite work in place: on the plugin's multi-threaded
/// runtime the worker hands its other tasks over first.
fn in_place<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A read-only connection of its own (exports, a maintenance run's reads):
/// in WAL mode it reads a snapshot beside the writer.
fn open_reader(path: &Path, busy_timeout: Duration) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    Ok(conn)
}

/// One batch in one transaction: its rows, the writer's progress (same
/// transaction, so a replay never doubles) and the range rollups must
/// recompute.
fn write_rows(
    conn: &mut rusqlite::Connection,
    instance_id: &str,
    batch: &RowBatch,
    path_ids: &mut PathIds,
) -> rusqlite::Result<()> {
    use rusqlite::params;
    use std::fmt::Write;
    // IMMEDIATE: take the write lock first, rather than fail to upgrade a
    // read lock half-way.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // The result paths as the JSON array of their ids, in one reused buffer.
    let mut paths = String::new();
    insert_each(
        &tx,
        "INSERT INTO search_events (time, instance_id, boot_id, seq, project, user_id, query, kind, cache, \
             status, error_code, latency_ms, latency_bucket, result_count, top_results, search_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        &batch.searches,
        |insert, (id, r)| {
            paths.clear();
            paths.push('[');
            for (i, path) in r.top_results.iter().enumerate() {
                if i > 0 {
                    paths.push(',');
                }
                let _ = write!(paths, "{}", path_ids.id(&tx, path)?);
            }
            paths.push(']');
            insert.execute(params![
                r.time_us,
                instance_id,
                id.boot_id,
                id.seq,
                r.project,
                r.user_id,
                r.query,
                r.kind,
                r.cache,
                r.status,
                r.error_code,
                r.latency_ms,
                r.latency_bucket,
                r.result_count,
                paths,
                r.search_id
            ])
        },
    )?;
    insert_each(
        &tx,
        "INSERT INTO index_events (time, instance_id, boot_id, seq, project, path, file_type, bytes, \
             duration_ms, outcome, error_code, queue_depth) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        &batch.indexes,
        |insert, (id, r)| {
            insert.execute(params![
                r.time_us,
                instance_id,
                id.boot_id,
                id.seq,
                r.project,
                r.path,
                r.file_type,
                r.bytes,
                r.duration_ms,
                r.outcome,
                r.error_code,
                r.queue_depth
            ])
        },
    )?;
    insert_each(
        &tx,
        "INSERT INTO open_events (time, instance_id, boot_id, seq, project, user_id, path, rank, search_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        &batch.opens,
        |insert, (id, r)| {
            insert.execute(params![
                r.time_us,
                instance_id,
                id.boot_id,
                id.seq,
                r.project,
                r.user_id,
                r.path,
                r.rank,
                r.search_id
            ])
        },
    )?;
    insert_each(
        &tx,
        "INSERT INTO project_snapshots (time, instance_id, boot_id, seq, project, total_files, indexed_files, \
             vector_store_bytes, embedding_cache_bytes, duplication_ratio) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        &batch.snapshots,
        |insert, (id, r)| {
            insert.execute(params![
                r.time_us,
                instance_id,
                id.boot_id,
                id.seq,
                r.project,
                r.total_files,
                r.indexed_files,
                r.vector_store_bytes,
                r.embedding_cache_bytes,
                r.duplication_ratio
            ])
        },
    )?;
    tx.prepare_cached(
        "INSERT INTO ingest_progress (instance_id, boot_id, last_seq, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (instance_id, boot_id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq), \
         updated_at = excluded.updated_at",
    )?
    .execute(params![instance_id, batch.boot_id, batch.last_seq, crate::plugin::now_us()])?;
    tx.prepare_cached("INSERT INTO rollup_dirty (from_time, to_time) VALUES (?1, ?2)")?
        .execute(params![batch.min_time_us, batch.max_time_us])?;
    tx.commit()
}

/// Inserts `rows` with one cached single-row statement.
fn insert_each<T>(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    rows: &[T],
    mut insert: impl FnMut(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut statement = tx.prepare_cached(sql)?;
    for row in rows {
        insert(&mut statement, row)?;
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
        in_place(|| self.write_now(instance_id, batch))
    }

    async fn maintain(&self, now_us: i64) -> Result<MaintenanceReport, StorageError> {
        // A run already going (the task's or the live page's) does what
        // this one would: like another instance holding PostgreSQL's
        // maintenance lock, this one does not run.
        let Ok(_one_run) = self.maintenance.try_lock() else {
            return Ok(MaintenanceReport::default());
        };
        let mut report = MaintenanceReport { ran: true, ..Default::default() };
        // The markers are read now and deleted by the run's last
        // transaction: until then readers take their ranges from raw
        // events, whatever pieces of the usage rollups are written, and a
        // run that stops half-way leaves them to the next one. Markers
        // written meanwhile have higher rowids and stay.
        let marked = |table: &str| {
            sqlx::query_as::<_, (i64, i64, i64)>(AssertSqlSafe(format!(
                "SELECT rowid, from_time, to_time FROM {table} ORDER BY rowid"
            )))
            .fetch_all(&self.pool)
        };
        let dirty = marked("rollup_dirty").await?;
        let usage_dirty = marked("usage_dirty").await?;
        let ranges = |marks: &[(i64, i64, i64)]| marks.iter().map(|&(_, from, to)| (from, to)).collect();
        let last = |marks: &[(i64, i64, i64)]| marks.last().map_or(i64::MIN, |m| m.0);
        let plan = rollup::plan(
            ranges(&dirty),
            ranges(&usage_dirty),
            now_us,
            &self.retention,
            &DIALECT,
            &super::RAW_TABLES,
            false,
        );
        report.rollup_ranges = plan.ranges;
        report.usage_ranges = plan.usage_ranges;
        let (usage, rest): (Vec<_>, Vec<_>) = plan.steps.into_iter().partition(|step| step.usage);
        for step in &usage {
            in_place(|| self.run_in_pieces(step))?;
        }
        let mut tx = self.pool.begin().await?;
        for step in rest {
            let binds = step.binds.into_iter().map(super::Value::Int).collect();
            let affected = super::bound(step.sql, binds).execute(&mut *tx).await?.rows_affected();
            if step.retention {
                report.rows_deleted += affected;
            }
        }
        for (table, marks) in [("rollup_dirty", &dirty), ("usage_dirty", &usage_dirty)] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE rowid <= ?1")))
                .bind(last(marks))
                .execute(&mut *tx)
                .await?;
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
        self.writer.lock().take();
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
    use rusqlite::types::ValueRef;
    let conn = open_reader(path, Duration::from_secs(10))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty `result_paths`, made by its migration, and a writer's ids.
    fn dictionary() -> (rusqlite::Connection, PathIds) {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let migration = migrate::SQLITE.iter().find(|m| m.name == "result paths").unwrap();
        for statement in migration.statements() {
            conn.execute_batch(statement).unwrap();
        }
        (conn, PathIds::default())
    }

    #[test]
    fn path_ids_of_a_rolled_back_transaction_are_forgotten() {
        let (mut conn, mut ids) = dictionary();
        let tx = conn.transaction().unwrap();
        let a = ids.id(&tx, "src/a.rs").unwrap();
        assert_eq!(ids.id(&tx, "src/a.rs").unwrap(), a, "known within its transaction");
        tx.commit().unwrap();
        ids.settle(true);

        let tx = conn.transaction().unwrap();
        let b = ids.id(&tx, "src/b.rs").unwrap();
        assert_eq!(ids.id(&tx, "src/a.rs").unwrap(), a);
        drop(tx); // rolled back: "src/b.rs" and its id are gone
        ids.settle(false);

        // Another writer takes b's id for another path meanwhile.
        conn.execute("INSERT INTO result_paths (id, path) VALUES (?1, 'src/other.rs')", [b]).unwrap();
        let tx = conn.transaction().unwrap();
        let b2 = ids.id(&tx, "src/b.rs").unwrap();
        assert_ne!(b2, b, "an id of a rolled-back transaction is never reused from memory");
        tx.commit().unwrap();
        ids.settle(true);
        let stored: Vec<(i64, String)> = conn
            .prepare("SELECT id, path FROM result_paths ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, [(a, "src/a.rs".into()), (b, "src/other.rs".into()), (b2, "src/b.rs".into())]);
    }

    #[test]
    fn path_ids_start_over_past_their_bound() {
        let (mut conn, mut ids) = dictionary();
        let tx = conn.transaction().unwrap();
        let first = ids.id(&tx, "p0").unwrap();
        tx.commit().unwrap();
        ids.settle(true);
        let tx = conn.transaction().unwrap();
        for i in 1..=PATH_IDS_MAX {
            ids.id(&tx, &format!("p{i}")).unwrap();
        }
        tx.commit().unwrap();
        ids.settle(true);
        assert_eq!(ids.known.len(), PATH_IDS_MAX, "the earlier ones went");
        // A path no longer in memory is found in the table, not made again.
        let tx = conn.transaction().unwrap();
        assert_eq!(ids.id(&tx, "p0").unwrap(), first);
    }
}
