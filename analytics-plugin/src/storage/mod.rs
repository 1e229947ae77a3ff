//! Durable storage of events behind one trait, [`Storage`]: SQLite (the
//! embedded default), plain PostgreSQL, and PostgreSQL with TimescaleDB.
//!
//! Every backend stores the same raw tables and the same rollups (per
//! minute, hour and day on SQLite and PostgreSQL, kept by the plugin's
//! maintenance task; hourly and daily continuous aggregates on TimescaleDB),
//! so every query the API runs has the same answer everywhere.

pub mod latency;
pub mod migrate;
pub mod postgres;
pub mod privacy;
pub mod rollup;
pub mod rows;
pub mod sqlite;

use std::{path::Path, sync::Arc};

use serde::Deserialize;

use rows::RowBatch;

/// The raw event tables, one per event kind, on every backend.
pub const RAW_TABLES: [&str; 4] = ["search_events", "index_events", "open_events", "project_snapshots"];

/// The plain tables the plugin writes its events and their rollups into on
/// every backend (TimescaleDB's continuous aggregates and the alerting
/// tables aside): everything a test on a shared database must empty.
pub const DATA_TABLES: [&str; 16] = [
    "search_events",
    "index_events",
    "open_events",
    "project_snapshots",
    "ingest_progress",
    "rollup_dirty",
    "usage_dirty",
    "click_pairs",
    "search_keys",
    "open_keys",
    "user_rollup_1h",
    "user_rollup_1d",
    "query_rollup_1h",
    "query_rollup_1d",
    "file_rollup_1h",
    "file_rollup_1d",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
    Timescaledb,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Timescaledb => "timescaledb",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimescaleMode {
    /// Use TimescaleDB when the server has the extension.
    #[default]
    Auto,
    /// Require it: start fails (degraded) without the extension.
    On,
    /// Plain PostgreSQL tables even where TimescaleDB is available.
    Off,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum InsertMethod {
    /// The faster as measured (BENCHMARKS.md): UNNEST. COPY also breaks
    /// the PGlite test server.
    #[default]
    Auto,
    Copy,
    Unnest,
}

/// `[plugins.analytics.config.storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` (relative paths are inside the plugin's data dir) or
    /// `postgres://USER@HOST:PORT/DB` (`postgresql://` too). A password is
    /// better given in the `PGPASSWORD` environment variable.
    pub url: String,
    /// `auto`, `on` or `off`.
    pub timescaledb: TimescaleMode,
    /// `auto`, `copy` or `unnest` (PostgreSQL only).
    pub insert_method: InsertMethod,
    /// Connections in the pool (at least 2 on PostgreSQL so API reads never
    /// wait behind a write).
    pub max_connections: u32,
    /// A write not committed within this time counts as failed; its events
    /// go to the spool.
    pub write_timeout_ms: u64,
    /// How often rollups and retention run (SQLite and PostgreSQL).
    pub maintenance_interval_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://analytics.db".to_owned(),
            timescaledb: TimescaleMode::Auto,
            insert_method: InsertMethod::Auto,
            max_connections: 4,
            write_timeout_ms: 10_000,
            maintenance_interval_secs: 60,
        }
    }
}

/// `[plugins.analytics.config.retention]`: how long each resolution is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub raw_days: u32,
    pub minute_days: u32,
    pub hourly_days: u32,
    pub daily_days: u32,
    /// TimescaleDB only: raw chunks older than this are compressed.
    pub compress_after_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { raw_days: 7, minute_days: 7, hourly_days: 90, daily_days: 365, compress_after_days: 3 }
    }
}

impl RetentionConfig {
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("raw_days", self.raw_days),
            ("minute_days", self.minute_days),
            ("hourly_days", self.hourly_days),
            ("daily_days", self.daily_days),
            ("compress_after_days", self.compress_after_days),
        ];
        if let Some((key, _)) = checks.iter().find(|(_, v)| *v == 0) {
            return Err(format!("retention.{key} = 0 (expected at least 1 day)"));
        }
        if self.minute_days > self.raw_days {
            return Err(format!(
                "retention.minute_days = {} is longer than retention.raw_days = {} (minute rollups are rebuilt from raw events)",
                self.minute_days, self.raw_days
            ));
        }
        Ok(())
    }
}

/// Where the events go, parsed from `storage.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Target {
    pub fn parse(url: &str, data_dir: &Path) -> Result<Self, String> {
        let accepted = "expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE";
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(format!("invalid storage.url '{url}': empty path ({accepted})"));
            }
            let path = Path::new(path);
            return Ok(Target::Sqlite(if path.is_absolute() {
                path.to_owned()
            } else {
                data_dir.join(path)
            }));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let rest = url.split_once("://").map_or("", |(_, r)| r);
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            if host.is_empty() || host.starts_with('/') {
                return Err(format!("invalid storage.url '{}': no host ({accepted})", redact(url)));
            }
            return Ok(Target::Postgres(url.to_owned()));
        }
        Err(format!("invalid storage.url '{}': unknown scheme ({accepted})", redact(url)))
    }
}

/// The URL without its password, for messages and health.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("write timed out after {0} ms")]
    Timeout(u64),
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StorageError::Unreachable(error.to_string()),
            _ => StorageError::Database(error.to_string()),
        }
    }
}

/// A value bound to, or read from, an analytics query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    pub fn as_i64(&self) -> i64 {
        match self {
            Value::Int(v) => *v,
            Value::Float(v) => *v as i64,
            Value::Text(t) => t.parse().unwrap_or(0),
            Value::Null => 0,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            Value::Text(t) => t.parse().ok(),
            Value::Null => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// The query text and its bound values, ready to run on either backend.
fn bound<DB>(
    sql: String,
    values: Vec<Value>,
) -> sqlx::query::Query<'static, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> f64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    values.into_iter().fold(sqlx::query(sqlx::AssertSqlSafe(sql)), |query, value| match value {
        Value::Null => query.bind(None::<String>),
        Value::Int(v) => query.bind(v),
        Value::Float(v) => query.bind(v),
        Value::Text(v) => query.bind(v),
    })
}

/// Rows of [`Storage::stream`], in order, a chunk at a time (one hand-over
/// between threads per chunk, not per row); an error ends the stream.
pub type RowStream = tokio::sync::mpsc::Receiver<Result<Vec<Vec<Value>>, StorageError>>;

/// Rows per chunk of a [`RowStream`].
const STREAM_CHUNK_ROWS: usize = 512;
/// Chunks buffered between a streaming query and its consumer.
const STREAM_BUFFER_CHUNKS: usize = 4;

/// Forwards a row stream into a [`RowStream`] channel, in chunks, until the
/// receiver hangs up or an error ends it.
async fn forward<S, R>(rows: S, tx: tokio::sync::mpsc::Sender<Result<Vec<Vec<Value>>, StorageError>>)
where
    S: futures_util::Stream<Item = Result<R, sqlx::Error>>,
    R: sqlx::Row,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    use futures_util::StreamExt as _;
    let mut rows = std::pin::pin!(rows);
    let mut chunk = Vec::with_capacity(STREAM_CHUNK_ROWS);
    while let Some(row) = rows.next().await {
        match row {
            Ok(row) => chunk.push(decode_row(&row)),
            Err(e) => {
                if !chunk.is_empty() && tx.send(Ok(std::mem::take(&mut chunk))).await.is_err() {
                    return;
                }
                let _ = tx.send(Err(StorageError::from(e))).await;
                return;
            }
        }
        if chunk.len() == STREAM_CHUNK_ROWS
            && tx
                .send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK_ROWS))))
                .await
                .is_err()
        {
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk)).await;
    }
}

/// What a maintenance run did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct MaintenanceReport {
    /// Ranges of `rollup_dirty` recomputed (the minute, hour and day
    /// rollups; on TimescaleDB only the usage rollups use them).
    pub rollup_ranges: usize,
    /// Spans of whole, complete hours recomputed in the usage rollups
    /// (from `rollup_dirty` and `usage_dirty`).
    pub usage_ranges: usize,
    pub rows_deleted: u64,
    /// TimescaleDB: `refresh_continuous_aggregate` calls made for buckets
    /// written since the last run (one per view and merged span).
    pub aggregate_refreshes: usize,
    /// False when another run held the maintenance lock (another instance
    /// on PostgreSQL, another run in this process on SQLite).
    pub ran: bool,
}

/// One storage backend.
#[async_trait::async_trait]
pub trait Storage: Send + Sync {
    /// The backend in use (known after [`Storage::prepare`] on PostgreSQL).
    fn backend(&self) -> Backend;

    /// Checks that a connection can be had, saying why not when it cannot.
    async fn ping(&self) -> Result<(), StorageError>;

    /// Connects, applies migrations and policies. Idempotent; safe for two
    /// instances at once.
    async fn prepare(&self) -> Result<(), StorageError>;

    /// The highest seq stored for this instance and boot (0 if none).
    async fn last_seq(&self, instance_id: &str, boot_id: i64) -> Result<i64, StorageError>;

    /// Writes the rows and advances the instance's progress in one
    /// transaction. Rows must have seqs above [`Storage::last_seq`].
    async fn write(&self, instance_id: &str, batch: &RowBatch) -> Result<(), StorageError>;

    /// Brings rollups up to date and enforces retention.
    async fn maintain(&self, now_us: i64) -> Result<MaintenanceReport, StorageError>;

    /// Runs a parameterized read query (the API's); every bind is a
    /// parameter, never spliced into the text.
    async fn query(&self, sql: &str, binds: &[Value]) -> Result<Vec<Vec<Value>>, StorageError>;

    /// Runs a parameterized read query and streams its rows in order
    /// through a bounded channel: the database is read as fast as the
    /// receiver consumes, in constant memory (exports).
    fn stream(&self, sql: String, binds: Vec<Value>) -> RowStream;

    /// Closes every connection (shutdown; the TimescaleDB test server
    /// accepts one connection at a time).
    async fn close(&self);

    /// Whether this instance leads (evaluates alerts and notifies). On
    /// PostgreSQL: a session advisory lock held on a connection of its own,
    /// so it ends when the process or its connection dies and another
    /// instance takes it at its next try. SQLite has one instance by
    /// construction: always the leader.
    async fn lead(&self, _key: i64) -> Result<bool, StorageError> {
        Ok(true)
    }

    /// Gives up leadership (shutdown).
    async fn resign(&self) {}

    /// Runs a SQL statement without parameters and returns the first column
    /// of every row as text (tests and tools).
    async fn query_strings(&self, sql: &str) -> Result<Vec<String>, StorageError> {
        let rows = self.query(sql, &[]).await?;
        Ok(rows
            .into_iter()
            .map(|row| match row.into_iter().next() {
                Some(Value::Text(t)) => t,
                Some(Value::Int(v)) => v.to_string(),
                Some(Value::Float(v)) => v.to_string(),
                Some(Value::Null) | None => String::new(),
            })
            .collect())
    }
}

/// Reads every column of a row as a [`Value`], by what it decodes to.
fn decode_row<R: sqlx::Row>(row: &R) -> Vec<Value>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i16: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    use sqlx::{Decode as _, TypeInfo as _, ValueRef as _};
    enum Class {
        Text,
        Float,
        Int,
        Other,
    }
    (0..row.len())
        .map(|i| {
            // Decode by the value's own type, straight from the raw value:
            // trying types in turn costs a formatted error per miss, and
            // `try_get` looks the column up and checks its type again
            // (both dominated large exports).
            if let Ok(raw) = row.try_get_raw(i) {
                if raw.is_null() {
                    return Value::Null;
                }
                let class = {
                    let info = raw.type_info();
                    let name = info.name();
                    let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(name));
                    if is(&["TEXT", "VARCHAR", "NAME", "BPCHAR"]) {
                        Class::Text
                    } else if is(&["REAL", "FLOAT8", "FLOAT4", "DOUBLE PRECISION"]) {
                        Class::Float
                    } else if is(&["INTEGER", "INT8", "BIGINT"]) {
                        Class::Int
                    } else {
                        Class::Other
                    }
                };
                let decoded = match class {
                    Class::Text => String::decode(raw).ok().map(Value::Text),
                    Class::Float => f64::decode(raw).ok().map(Value::Float),
                    Class::Int => i64::decode(raw).ok().map(Value::Int),
                    Class::Other => None,
                };
                if let Some(value) = decoded {
                    return value;
                }
            }
            if let Ok(Some(v)) = row.try_get::<Option<i64>, _>(i) {
                return Value::Int(v);
            }
            if let Ok(Some(v)) = row.try_get::<Option<i32>, _>(i) {
                return Value::Int(i64::from(v));
            }
            if let Ok(Some(v)) = row.try_get::<Option<i16>, _>(i) {
                return Value::Int(i64::from(v));
            }
            if let Ok(Some(v)) = row.try_get::<Option<f64>, _>(i) {
                return Value::Float(v);
            }
            if let Ok(Some(v)) = row.try_get::<Option<String>, _>(i) {
                return Value::Text(v);
            }
            if let Ok(Some(v)) = row.try_get::<Option<bool>, _>(i) {
                return Value::Int(i64::from(v));
            }
            Value::Null
        })
        .collect()
}

/// Builds the backend for a URL without connecting yet: an unreachable
/// database at start leaves the plugin loaded, spooling.
pub fn open(
    config: &StorageConfig,
    retention: &RetentionConfig,
    data_dir: &Path,
) -> Result<Arc<dyn Storage>, String> {
    match Target::parse(&config.url, data_dir)? {
        Target::Sqlite(path) => Ok(Arc::new(sqlite::SqliteStorage::new(&path, config, retention.clone())?)),
        Target::Postgres(url) => Ok(Arc::new(postgres::PgStorage::new(&url, config, retention.clone())?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused_with_the_accepted_forms() {
        let dir = Path::new("/data");
        assert_eq!(Target::parse("sqlite://a.db", dir), Ok(Target::Sqlite("/data/a.db".into())));
        assert_eq!(Target::parse("sqlite:///abs/a.db", dir), Ok(Target::Sqlite("/abs/a.db".into())));
        assert!(matches!(Target::parse("postgres://u@127.0.0.1:5432/db", dir), Ok(Target::Postgres(_))));
        assert_eq!(
            Target::parse("mysql://u:secret@h/db", dir),
            Err("invalid storage.url 'mysql://u:***@h/db': unknown scheme (expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE)".to_owned())
        );
        assert!(Target::parse("postgres://", dir).unwrap_err().contains("no host"));
    }
}
