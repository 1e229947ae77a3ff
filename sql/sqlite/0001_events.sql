-- Raw events, one table per kind. `time` is Unix microseconds (SQLite has
-- no timestamp type). (instance_id, boot_id, seq) identifies an event; the
-- writer never writes a seq at or below ingest_progress.last_seq of its
-- (instance_id, boot_id), in the same transaction, so replays never double.

CREATE TABLE IF NOT EXISTS search_events (
    time            INTEGER NOT NULL,
    instance_id     TEXT    NOT NULL,
    boot_id         INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    project         TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    query           TEXT,
    kind            TEXT    NOT NULL,
    cache           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    error_code      TEXT,
    latency_ms      REAL    NOT NULL,
    latency_bucket  INTEGER NOT NULL,
    result_count    INTEGER NOT NULL,
    top_results     TEXT    NOT NULL, -- JSON array of result paths, best first
    search_id       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS search_events_time ON search_events (time);
CREATE INDEX IF NOT EXISTS search_events_project_time ON search_events (project, time);

CREATE TABLE IF NOT EXISTS index_events (
    time            INTEGER NOT NULL,
    instance_id     TEXT    NOT NULL,
    boot_id         INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    project         TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    file_type       TEXT    NOT NULL,
    bytes           INTEGER NOT NULL,
    duration_ms     REAL    NOT NULL,
    outcome         TEXT    NOT NULL,
    error_code      TEXT,
    queue_depth     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS index_events_time ON index_events (time);
CREATE INDEX IF NOT EXISTS index_events_project_time ON index_events (project, time);

CREATE TABLE IF NOT EXISTS open_events (
    time            INTEGER NOT NULL,
    instance_id     TEXT    NOT NULL,
    boot_id         INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    project         TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    rank            INTEGER NOT NULL,
    search_id       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS open_events_time ON open_events (time);
CREATE INDEX IF NOT EXISTS open_events_project_time ON open_events (project, time);

CREATE TABLE IF NOT EXISTS project_snapshots (
    time                  INTEGER NOT NULL,
    instance_id           TEXT    NOT NULL,
    boot_id               INTEGER NOT NULL,
    seq                   INTEGER NOT NULL,
    project               TEXT    NOT NULL,
    total_files           INTEGER NOT NULL,
    indexed_files         INTEGER NOT NULL,
    vector_store_bytes    INTEGER NOT NULL,
    embedding_cache_bytes INTEGER NOT NULL,
    duplication_ratio     REAL
);
CREATE INDEX IF NOT EXISTS project_snapshots_project_time ON project_snapshots (project, time);

CREATE TABLE IF NOT EXISTS ingest_progress (
    instance_id  TEXT    NOT NULL,
    boot_id      INTEGER NOT NULL,
    last_seq     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (instance_id, boot_id)
);

-- Time ranges written since the last rollup run (the maintenance task
-- recomputes the rollup buckets they touch, so late events count).
CREATE TABLE IF NOT EXISTS rollup_dirty (
    from_time  INTEGER NOT NULL,
    to_time    INTEGER NOT NULL
);
