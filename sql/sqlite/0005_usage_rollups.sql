-- Rollups behind the usage, top-queries and code-health routes, kept by the
-- plugin's maintenance task on every backend (TimescaleDB too: a continuous
-- aggregate can neither unnest top_results nor join opens to their
-- searches), per hour (from raw events) and per day (from hours), recomputed
-- for the complete hours rollup_dirty and usage_dirty mark (an hour is
-- rolled up once it has ended; until then readers take it from raw events),
-- and dropped with the raw events they come from (retention.raw_days), so
-- they never outlive them.
--
-- Users and queries are stored as the raw tables store them (hashed when
-- privacy says so). A route reads whole clean hours and days from here and
-- the rest of its range (partial hours at its ends, hours still marked
-- dirty) from raw events, so its answer equals one computed from raw
-- events alone.
--
-- user_rollup_*: searches and opens per (bucket, project, user); distinct
-- users over any range are counted over these rows, never summed.
-- query_rollup_*: per (bucket, project, query) the searches, their latency
-- and result sums, the zero-result ones, and the opens attributed to them
-- (opens in the same hour and project as their search; every other
-- open-search pair is a row of click_pairs).
-- file_rollup_*: per (bucket, project, path) times returned in top results,
-- opened, indexed, and the first indexing and first access in the bucket.
-- click_pairs: an open whose search (same search_id) lies in another hour
-- or project, with both times, so any range counts it exactly.
-- search_keys, open_keys: search_id, time and project of every rolled-up
-- search (with a query) and open.

CREATE TABLE IF NOT EXISTS user_rollup_1h (
    bucket                 INTEGER NOT NULL,
    project                TEXT NOT NULL,
    user_id                TEXT NOT NULL,
    searches               INTEGER NOT NULL,
    opens                  INTEGER NOT NULL,
    PRIMARY KEY (bucket, project, user_id)
);

CREATE TABLE IF NOT EXISTS query_rollup_1h (
    bucket                 INTEGER NOT NULL,
    project                TEXT NOT NULL,
    query                  TEXT NOT NULL,
    searches               INTEGER NOT NULL,
    latency_ms_sum         REAL NOT NULL,
    results_sum            INTEGER NOT NULL,
    zero_results           INTEGER NOT NULL,
    zero_latency_ms_sum    REAL NOT NULL,
    opens                  INTEGER NOT NULL,
    zero_opens             INTEGER NOT NULL,
    PRIMARY KEY (bucket, project, query)
);

CREATE TABLE IF NOT EXISTS file_rollup_1h (
    bucket                 INTEGER NOT NULL,
    project                TEXT NOT NULL,
    path                   TEXT NOT NULL,
    returned               INTEGER NOT NULL,
    opened                 INTEGER NOT NULL,
    indexed                INTEGER NOT NULL,
    first_indexed          INTEGER,
    first_reached          INTEGER,
    PRIMARY KEY (bucket, project, path)
);

CREATE TABLE IF NOT EXISTS user_rollup_1d (
    bucket                 INTEGER NOT NULL,
    project                TEXT NOT NULL,
    user_id                TEXT NOT NULL,
    searches               INTEGER NOT NULL,
    opens                  INTEGER NOT NULL,
    PRIMARY KEY (bucket, project, user_id)
);

CREATE TABLE IF NOT EXISTS query_rollup_1d (
    bucket                 INTEGER NOT NULL,
    project                TEXT NOT NULL,
    query                  TEXT NOT NULL,
    searches               INTEGER NOT NULL,
    latency_ms_sum         REAL NOT NULL,
    results_sum            INTEGER NOT NULL,
    zero_results           INTEGER NOT NULL,
    zero_latency_ms_sum    REAL NOT NULL,
    opens                  INTEGER NOT NULL,
    zero_opens             INTEGER NOT NULL,
    PRIMARY KEY (bucket, project, query)
);

CREATE TABLE IF NOT EXISTS file_rollup_1d (
    bucket                 INTEGER NOT NULL,
    project                TEXT NOT NULL,
    path                   TEXT NOT NULL,
    returned               INTEGER NOT NULL,
    opened                 INTEGER NOT NULL,
    indexed                INTEGER NOT NULL,
    first_indexed          INTEGER,
    first_reached          INTEGER,
    PRIMARY KEY (bucket, project, path)
);

CREATE TABLE IF NOT EXISTS click_pairs (
    search_time            INTEGER NOT NULL,
    open_time              INTEGER NOT NULL,
    search_project         TEXT NOT NULL,
    open_project           TEXT NOT NULL,
    query                  TEXT NOT NULL,
    zero_result            INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS click_pairs_search_time ON click_pairs (search_time);

CREATE INDEX IF NOT EXISTS click_pairs_open_time ON click_pairs (open_time);

-- Opens are matched to their searches by search_id when rolling up and at
-- the raw edges of a range, through these copies of the rolled-up hours'
-- keys (filled by maintenance, like the rollups): an index on the raw
-- tables would cost every write.
CREATE TABLE IF NOT EXISTS search_keys (
    search_id              TEXT NOT NULL,
    time                   INTEGER NOT NULL,
    project                TEXT NOT NULL,
    query                  TEXT NOT NULL,
    zero_result            INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS search_keys_search_id ON search_keys (search_id);

CREATE INDEX IF NOT EXISTS search_keys_time ON search_keys (time);

CREATE TABLE IF NOT EXISTS open_keys (
    search_id              TEXT NOT NULL,
    time                   INTEGER NOT NULL,
    project                TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS open_keys_search_id ON open_keys (search_id);

CREATE INDEX IF NOT EXISTS open_keys_time ON open_keys (time);

-- Ranges the usage rollups still have to recompute: written in an hour
-- that was not complete at the maintenance run that took them from
-- rollup_dirty (the other rollups are done with them). Each run
-- recomputes the complete hours of rollup_dirty's and these ranges and
-- puts the rest back here, so a run reads only what was written since the
-- last one, never the current hour so far; readers take an hour marked
-- here as dirty and read it from raw events.
CREATE TABLE IF NOT EXISTS usage_dirty (
    from_time  INTEGER NOT NULL,
    to_time    INTEGER NOT NULL
);
