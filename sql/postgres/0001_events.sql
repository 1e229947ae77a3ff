-- Raw events, one table per kind; `time` is when the event completed (UTC).
-- (instance_id, boot_id, seq) identifies an event: the writer never writes a
-- seq at or below ingest_progress.last_seq of its (instance_id, boot_id), in
-- the same transaction as the rows, so replays never write a row twice.
-- Shared by plain PostgreSQL and TimescaleDB (which turns these tables into
-- hypertables in its own migration).

CREATE TABLE IF NOT EXISTS search_events (
    time            timestamptz      NOT NULL,
    instance_id     text             NOT NULL,
    boot_id         bigint           NOT NULL,
    seq             bigint           NOT NULL,
    project         text             NOT NULL,
    user_id         text             NOT NULL,
    query           text,
    kind            text             NOT NULL,
    cache           text             NOT NULL,
    status          text             NOT NULL,
    error_code      text,
    latency_ms      double precision NOT NULL,
    latency_bucket  smallint         NOT NULL,
    result_count    integer          NOT NULL,
    top_results     text[]           NOT NULL, -- result paths, best first
    search_id       text             NOT NULL
);
CREATE INDEX IF NOT EXISTS search_events_project_time ON search_events (project, time DESC);

CREATE TABLE IF NOT EXISTS index_events (
    time            timestamptz      NOT NULL,
    instance_id     text             NOT NULL,
    boot_id         bigint           NOT NULL,
    seq             bigint           NOT NULL,
    project         text             NOT NULL,
    path            text             NOT NULL,
    file_type       text             NOT NULL,
    bytes           bigint           NOT NULL,
    duration_ms     double precision NOT NULL,
    outcome         text             NOT NULL,
    error_code      text,
    queue_depth     bigint           NOT NULL
);
CREATE INDEX IF NOT EXISTS index_events_project_time ON index_events (project, time DESC);

CREATE TABLE IF NOT EXISTS open_events (
    time            timestamptz      NOT NULL,
    instance_id     text             NOT NULL,
    boot_id         bigint           NOT NULL,
    seq             bigint           NOT NULL,
    project         text             NOT NULL,
    user_id         text             NOT NULL,
    path            text             NOT NULL,
    rank            integer          NOT NULL,
    search_id       text             NOT NULL
);
CREATE INDEX IF NOT EXISTS open_events_project_time ON open_events (project, time DESC);

CREATE TABLE IF NOT EXISTS project_snapshots (
    time                  timestamptz      NOT NULL,
    instance_id           text             NOT NULL,
    boot_id               bigint           NOT NULL,
    seq                   bigint           NOT NULL,
    project               text             NOT NULL,
    total_files           bigint           NOT NULL,
    indexed_files         bigint           NOT NULL,
    vector_store_bytes    bigint           NOT NULL,
    embedding_cache_bytes bigint           NOT NULL,
    duplication_ratio     double precision
);
CREATE INDEX IF NOT EXISTS project_snapshots_project_time ON project_snapshots (project, time DESC);

CREATE TABLE IF NOT EXISTS ingest_progress (
    instance_id  text        NOT NULL,
    boot_id      bigint      NOT NULL,
    last_seq     bigint      NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (instance_id, boot_id)
);
