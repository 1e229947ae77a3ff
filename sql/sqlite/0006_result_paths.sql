-- Result paths by number (SQLite only). A search's ten result paths were
-- three quarters of its row's bytes, written twice (WAL, then checkpoint)
-- at every search: search_events.top_results now holds a JSON array of
-- result_paths ids, best first, and each distinct path is stored once.
-- Rows written before hold the paths themselves (JSON strings); readers
-- take both (storage/sqlite.rs: RESULT_PATH, TOP_RESULTS_JSON). Paths are
-- never deleted: there are as many as distinct result files, not events.
CREATE TABLE IF NOT EXISTS result_paths (
    id   INTEGER PRIMARY KEY,
    path TEXT    NOT NULL UNIQUE
);
