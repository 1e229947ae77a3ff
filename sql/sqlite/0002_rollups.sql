-- Rollups the plugin keeps itself on this backend (TimescaleDB keeps the
-- hourly and daily ones as continuous aggregates of the same shape instead).
-- Per minute, hour and day; every measure merges by sum/min/max, and
-- search_latency_* holds a fixed log-scale latency histogram (bucket i covers
-- [1.01^i, 1.01^(i+1)) nanoseconds), so percentiles merge across buckets,
-- projects and instances within 0.5%.
-- snapshot_rollup_* keeps the largest value reported in each bucket; the
-- duplication ratio is read from raw snapshots.

CREATE TABLE IF NOT EXISTS search_rollup_1m (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    kind                   TEXT NOT NULL,
    status                 TEXT NOT NULL,
    cache                  TEXT NOT NULL,
    searches               INTEGER NOT NULL,
    zero_results           INTEGER NOT NULL,
    results_sum            INTEGER NOT NULL,
    latency_ms_sum         REAL NOT NULL,
    latency_ms_min         REAL NOT NULL,
    latency_ms_max         REAL NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, kind, status, cache)
);

CREATE INDEX IF NOT EXISTS search_rollup_1m_project_bucket ON search_rollup_1m (project, bucket);

CREATE TABLE IF NOT EXISTS search_rollup_1h (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    kind                   TEXT NOT NULL,
    status                 TEXT NOT NULL,
    cache                  TEXT NOT NULL,
    searches               INTEGER NOT NULL,
    zero_results           INTEGER NOT NULL,
    results_sum            INTEGER NOT NULL,
    latency_ms_sum         REAL NOT NULL,
    latency_ms_min         REAL NOT NULL,
    latency_ms_max         REAL NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, kind, status, cache)
);

CREATE INDEX IF NOT EXISTS search_rollup_1h_project_bucket ON search_rollup_1h (project, bucket);

CREATE TABLE IF NOT EXISTS search_rollup_1d (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    kind                   TEXT NOT NULL,
    status                 TEXT NOT NULL,
    cache                  TEXT NOT NULL,
    searches               INTEGER NOT NULL,
    zero_results           INTEGER NOT NULL,
    results_sum            INTEGER NOT NULL,
    latency_ms_sum         REAL NOT NULL,
    latency_ms_min         REAL NOT NULL,
    latency_ms_max         REAL NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, kind, status, cache)
);

CREATE INDEX IF NOT EXISTS search_rollup_1d_project_bucket ON search_rollup_1d (project, bucket);

CREATE TABLE IF NOT EXISTS search_latency_1m (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    latency_bucket         INTEGER NOT NULL,
    searches               INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, latency_bucket)
);

CREATE TABLE IF NOT EXISTS search_latency_1h (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    latency_bucket         INTEGER NOT NULL,
    searches               INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, latency_bucket)
);

CREATE TABLE IF NOT EXISTS search_latency_1d (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    latency_bucket         INTEGER NOT NULL,
    searches               INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, latency_bucket)
);

CREATE TABLE IF NOT EXISTS index_rollup_1m (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    file_type              TEXT NOT NULL,
    outcome                TEXT NOT NULL,
    files                  INTEGER NOT NULL,
    bytes_sum              INTEGER NOT NULL,
    duration_ms_sum        REAL NOT NULL,
    duration_ms_max        REAL NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, file_type, outcome)
);

CREATE INDEX IF NOT EXISTS index_rollup_1m_project_bucket ON index_rollup_1m (project, bucket);

CREATE TABLE IF NOT EXISTS index_rollup_1h (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    file_type              TEXT NOT NULL,
    outcome                TEXT NOT NULL,
    files                  INTEGER NOT NULL,
    bytes_sum              INTEGER NOT NULL,
    duration_ms_sum        REAL NOT NULL,
    duration_ms_max        REAL NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, file_type, outcome)
);

CREATE INDEX IF NOT EXISTS index_rollup_1h_project_bucket ON index_rollup_1h (project, bucket);

CREATE TABLE IF NOT EXISTS index_rollup_1d (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    file_type              TEXT NOT NULL,
    outcome                TEXT NOT NULL,
    files                  INTEGER NOT NULL,
    bytes_sum              INTEGER NOT NULL,
    duration_ms_sum        REAL NOT NULL,
    duration_ms_max        REAL NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, file_type, outcome)
);

CREATE INDEX IF NOT EXISTS index_rollup_1d_project_bucket ON index_rollup_1d (project, bucket);

CREATE TABLE IF NOT EXISTS open_rollup_1m (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    opens                  INTEGER NOT NULL,
    rank_sum               INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS open_rollup_1m_project_bucket ON open_rollup_1m (project, bucket);

CREATE TABLE IF NOT EXISTS open_rollup_1h (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    opens                  INTEGER NOT NULL,
    rank_sum               INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS open_rollup_1h_project_bucket ON open_rollup_1h (project, bucket);

CREATE TABLE IF NOT EXISTS open_rollup_1d (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    opens                  INTEGER NOT NULL,
    rank_sum               INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS open_rollup_1d_project_bucket ON open_rollup_1d (project, bucket);

CREATE TABLE IF NOT EXISTS snapshot_rollup_1m (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    total_files            INTEGER NOT NULL,
    indexed_files          INTEGER NOT NULL,
    vector_store_bytes     INTEGER NOT NULL,
    embedding_cache_bytes  INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS snapshot_rollup_1m_project_bucket ON snapshot_rollup_1m (project, bucket);

CREATE TABLE IF NOT EXISTS snapshot_rollup_1h (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    total_files            INTEGER NOT NULL,
    indexed_files          INTEGER NOT NULL,
    vector_store_bytes     INTEGER NOT NULL,
    embedding_cache_bytes  INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS snapshot_rollup_1h_project_bucket ON snapshot_rollup_1h (project, bucket);

CREATE TABLE IF NOT EXISTS snapshot_rollup_1d (
    bucket                 INTEGER NOT NULL,
    instance_id            TEXT NOT NULL,
    project                TEXT NOT NULL,
    total_files            INTEGER NOT NULL,
    indexed_files          INTEGER NOT NULL,
    vector_store_bytes     INTEGER NOT NULL,
    embedding_cache_bytes  INTEGER NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS snapshot_rollup_1d_project_bucket ON snapshot_rollup_1d (project, bucket);
