-- Rollups the plugin keeps itself on this backend (TimescaleDB keeps the
-- hourly and daily ones as continuous aggregates of the same shape instead).
-- Per minute, hour and day; every measure merges by sum/min/max, and
-- search_latency_* holds a fixed log-scale latency histogram (bucket i covers
-- [1.01^i, 1.01^(i+1)) nanoseconds), so percentiles merge across buckets,
-- projects and instances within 0.5%.
-- snapshot_rollup_* keeps the largest value reported in each bucket; the
-- duplication ratio is read from raw snapshots.

CREATE TABLE IF NOT EXISTS search_rollup_1m (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    kind                   text NOT NULL,
    status                 text NOT NULL,
    cache                  text NOT NULL,
    searches               bigint NOT NULL,
    zero_results           bigint NOT NULL,
    results_sum            bigint NOT NULL,
    latency_ms_sum         double precision NOT NULL,
    latency_ms_min         double precision NOT NULL,
    latency_ms_max         double precision NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, kind, status, cache)
);

CREATE INDEX IF NOT EXISTS search_rollup_1m_project_bucket ON search_rollup_1m (project, bucket);

CREATE TABLE IF NOT EXISTS search_rollup_1h (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    kind                   text NOT NULL,
    status                 text NOT NULL,
    cache                  text NOT NULL,
    searches               bigint NOT NULL,
    zero_results           bigint NOT NULL,
    results_sum            bigint NOT NULL,
    latency_ms_sum         double precision NOT NULL,
    latency_ms_min         double precision NOT NULL,
    latency_ms_max         double precision NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, kind, status, cache)
);

CREATE INDEX IF NOT EXISTS search_rollup_1h_project_bucket ON search_rollup_1h (project, bucket);

CREATE TABLE IF NOT EXISTS search_rollup_1d (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    kind                   text NOT NULL,
    status                 text NOT NULL,
    cache                  text NOT NULL,
    searches               bigint NOT NULL,
    zero_results           bigint NOT NULL,
    results_sum            bigint NOT NULL,
    latency_ms_sum         double precision NOT NULL,
    latency_ms_min         double precision NOT NULL,
    latency_ms_max         double precision NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, kind, status, cache)
);

CREATE INDEX IF NOT EXISTS search_rollup_1d_project_bucket ON search_rollup_1d (project, bucket);

CREATE TABLE IF NOT EXISTS search_latency_1m (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    latency_bucket         smallint NOT NULL,
    searches               bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, latency_bucket)
);

CREATE TABLE IF NOT EXISTS search_latency_1h (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    latency_bucket         smallint NOT NULL,
    searches               bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, latency_bucket)
);

CREATE TABLE IF NOT EXISTS search_latency_1d (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    latency_bucket         smallint NOT NULL,
    searches               bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, latency_bucket)
);

CREATE TABLE IF NOT EXISTS index_rollup_1m (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    file_type              text NOT NULL,
    outcome                text NOT NULL,
    files                  bigint NOT NULL,
    bytes_sum              bigint NOT NULL,
    duration_ms_sum        double precision NOT NULL,
    duration_ms_max        double precision NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, file_type, outcome)
);

CREATE INDEX IF NOT EXISTS index_rollup_1m_project_bucket ON index_rollup_1m (project, bucket);

CREATE TABLE IF NOT EXISTS index_rollup_1h (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    file_type              text NOT NULL,
    outcome                text NOT NULL,
    files                  bigint NOT NULL,
    bytes_sum              bigint NOT NULL,
    duration_ms_sum        double precision NOT NULL,
    duration_ms_max        double precision NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, file_type, outcome)
);

CREATE INDEX IF NOT EXISTS index_rollup_1h_project_bucket ON index_rollup_1h (project, bucket);

CREATE TABLE IF NOT EXISTS index_rollup_1d (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    file_type              text NOT NULL,
    outcome                text NOT NULL,
    files                  bigint NOT NULL,
    bytes_sum              bigint NOT NULL,
    duration_ms_sum        double precision NOT NULL,
    duration_ms_max        double precision NOT NULL,
    PRIMARY KEY (bucket, instance_id, project, file_type, outcome)
);

CREATE INDEX IF NOT EXISTS index_rollup_1d_project_bucket ON index_rollup_1d (project, bucket);

CREATE TABLE IF NOT EXISTS open_rollup_1m (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    opens                  bigint NOT NULL,
    rank_sum               bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS open_rollup_1m_project_bucket ON open_rollup_1m (project, bucket);

CREATE TABLE IF NOT EXISTS open_rollup_1h (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    opens                  bigint NOT NULL,
    rank_sum               bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS open_rollup_1h_project_bucket ON open_rollup_1h (project, bucket);

CREATE TABLE IF NOT EXISTS open_rollup_1d (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    opens                  bigint NOT NULL,
    rank_sum               bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS open_rollup_1d_project_bucket ON open_rollup_1d (project, bucket);

CREATE TABLE IF NOT EXISTS snapshot_rollup_1m (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    total_files            bigint NOT NULL,
    indexed_files          bigint NOT NULL,
    vector_store_bytes     bigint NOT NULL,
    embedding_cache_bytes  bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS snapshot_rollup_1m_project_bucket ON snapshot_rollup_1m (project, bucket);

CREATE TABLE IF NOT EXISTS snapshot_rollup_1h (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    total_files            bigint NOT NULL,
    indexed_files          bigint NOT NULL,
    vector_store_bytes     bigint NOT NULL,
    embedding_cache_bytes  bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS snapshot_rollup_1h_project_bucket ON snapshot_rollup_1h (project, bucket);

CREATE TABLE IF NOT EXISTS snapshot_rollup_1d (
    bucket                 timestamptz NOT NULL,
    instance_id            text NOT NULL,
    project                text NOT NULL,
    total_files            bigint NOT NULL,
    indexed_files          bigint NOT NULL,
    vector_store_bytes     bigint NOT NULL,
    embedding_cache_bytes  bigint NOT NULL,
    PRIMARY KEY (bucket, instance_id, project)
);

CREATE INDEX IF NOT EXISTS snapshot_rollup_1d_project_bucket ON snapshot_rollup_1d (project, bucket);

-- Time ranges written since the last rollup run: the maintenance task
-- recomputes the buckets they touch, so late (replayed) events count.
CREATE TABLE IF NOT EXISTS rollup_dirty (
    from_time  timestamptz NOT NULL,
    to_time    timestamptz NOT NULL
);
