-- TimescaleDB: raw event tables become hypertables, and the hourly and
-- daily rollups are continuous aggregates with the same names and columns as
-- the tables the plugin maintains itself on SQLite and plain PostgreSQL.
-- Retention, compression and refresh policies are added by the plugin at
-- start from its config (retention intervals are configurable).
--
-- Chunk interval: 1 day. Raw events are kept 7 days and compressed after 3,
-- so day chunks let retention drop and compression compress whole chunks at
-- the configured day boundaries, and 7-8 chunks per table keep planning
-- cheap. At 10 million searches a day a chunk is about 2-3 GB before
-- compression, inside the usual guidance of a quarter of memory for a
-- server sized for that traffic; smaller deployments lose nothing by it.

CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('search_events', by_range('time', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('index_events', by_range('time', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('open_events', by_range('time', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('project_snapshots', by_range('time', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);

ALTER TABLE search_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'project', timescaledb.compress_orderby = 'time DESC');
ALTER TABLE index_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'project', timescaledb.compress_orderby = 'time DESC');
ALTER TABLE open_events SET (timescaledb.compress, timescaledb.compress_segmentby = 'project', timescaledb.compress_orderby = 'time DESC');
ALTER TABLE project_snapshots SET (timescaledb.compress, timescaledb.compress_segmentby = 'project', timescaledb.compress_orderby = 'time DESC');

CREATE MATERIALIZED VIEW IF NOT EXISTS search_rollup_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, instance_id, project, kind, status, cache,
       count(*)::bigint AS searches,
       sum(CASE WHEN status = 'ok' AND result_count = 0 THEN 1 ELSE 0 END)::bigint AS zero_results,
       sum(result_count)::bigint AS results_sum,
       sum(latency_ms) AS latency_ms_sum,
       min(latency_ms) AS latency_ms_min,
       max(latency_ms) AS latency_ms_max
FROM search_events
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS search_rollup_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, instance_id, project, kind, status, cache,
       sum(searches)::bigint AS searches,
       sum(zero_results)::bigint AS zero_results,
       sum(results_sum)::bigint AS results_sum,
       sum(latency_ms_sum) AS latency_ms_sum,
       min(latency_ms_min) AS latency_ms_min,
       max(latency_ms_max) AS latency_ms_max
FROM search_rollup_1h
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS search_latency_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, instance_id, project, latency_bucket,
       count(*)::bigint AS searches
FROM search_events
GROUP BY 1, 2, 3, 4
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS search_latency_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, instance_id, project, latency_bucket,
       sum(searches)::bigint AS searches
FROM search_latency_1h
GROUP BY 1, 2, 3, 4
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS index_rollup_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, instance_id, project, file_type, outcome,
       count(*)::bigint AS files,
       sum(bytes)::bigint AS bytes_sum,
       sum(duration_ms) AS duration_ms_sum,
       max(duration_ms) AS duration_ms_max
FROM index_events
GROUP BY 1, 2, 3, 4, 5
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS index_rollup_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, instance_id, project, file_type, outcome,
       sum(files)::bigint AS files,
       sum(bytes_sum)::bigint AS bytes_sum,
       sum(duration_ms_sum) AS duration_ms_sum,
       max(duration_ms_max) AS duration_ms_max
FROM index_rollup_1h
GROUP BY 1, 2, 3, 4, 5
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS open_rollup_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, instance_id, project,
       count(*)::bigint AS opens,
       sum(rank)::bigint AS rank_sum
FROM open_events
GROUP BY 1, 2, 3
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS open_rollup_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, instance_id, project,
       sum(opens)::bigint AS opens,
       sum(rank_sum)::bigint AS rank_sum
FROM open_rollup_1h
GROUP BY 1, 2, 3
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS snapshot_rollup_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, instance_id, project,
       max(total_files) AS total_files,
       max(indexed_files) AS indexed_files,
       max(vector_store_bytes) AS vector_store_bytes,
       max(embedding_cache_bytes) AS embedding_cache_bytes
FROM project_snapshots
GROUP BY 1, 2, 3
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS snapshot_rollup_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, instance_id, project,
       max(total_files) AS total_files,
       max(indexed_files) AS indexed_files,
       max(vector_store_bytes) AS vector_store_bytes,
       max(embedding_cache_bytes) AS embedding_cache_bytes
FROM snapshot_rollup_1h
GROUP BY 1, 2, 3
WITH NO DATA;
