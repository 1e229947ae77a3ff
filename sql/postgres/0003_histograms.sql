-- The latency histogram of each rollup bucket as one row per project and
-- one for all projects together (all_projects = 1, project ''), as
-- "bucket:count,..." text: the API merges a few rows per bucket instead of
-- one row per latency bucket. Rebuilt from search_latency_* by the
-- maintenance task (SQLite and plain PostgreSQL; TimescaleDB answers from
-- its continuous aggregates in long form).

CREATE TABLE IF NOT EXISTS search_histogram_1m (
    bucket        timestamptz NOT NULL,
    all_projects  bigint NOT NULL,
    project       text NOT NULL,
    searches      bigint NOT NULL,
    histogram     text NOT NULL,
    PRIMARY KEY (all_projects, bucket, project)
);

CREATE TABLE IF NOT EXISTS search_histogram_1h (
    bucket        timestamptz NOT NULL,
    all_projects  bigint NOT NULL,
    project       text NOT NULL,
    searches      bigint NOT NULL,
    histogram     text NOT NULL,
    PRIMARY KEY (all_projects, bucket, project)
);

CREATE TABLE IF NOT EXISTS search_histogram_1d (
    bucket        timestamptz NOT NULL,
    all_projects  bigint NOT NULL,
    project       text NOT NULL,
    searches      bigint NOT NULL,
    histogram     text NOT NULL,
    PRIMARY KEY (all_projects, bucket, project)
);
