-- TimescaleDB: what maintenance has taken out of rollup_dirty but not yet
-- refreshed in the continuous aggregates. A real-time aggregate answers from
-- raw events only after its watermark; an event written late into a bucket
-- already materialized is invisible in it until that bucket is refreshed.
-- So the API reads the buckets that rollup_dirty or this table mark from raw
-- events, maintenance moves rollup_dirty's marks here in the transaction
-- that brings the usage rollups up to date, refreshes the aggregates over
-- them (refresh_continuous_aggregate cannot run in a transaction), and only
-- then deletes them here, by id. A crash in between leaves them here for the
-- next run.
CREATE TABLE IF NOT EXISTS cagg_refresh_pending (
    id BIGSERIAL PRIMARY KEY,
    from_time TIMESTAMPTZ NOT NULL,
    to_time TIMESTAMPTZ NOT NULL
);
