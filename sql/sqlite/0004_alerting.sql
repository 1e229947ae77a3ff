-- Alerting, as postgres/0004_alerting.sql (which explains each table), with
-- times as Unix microseconds: rules changed through the API, the state of
-- every active alert, its full history, silences, and the durable delivery
-- queue.

-- Rules created, changed or deleted through the API; they override config
-- rules of the same name. `definition` is the rule as JSON, NULL when the
-- rule was deleted (a tombstone that also hides a config rule).
CREATE TABLE IF NOT EXISTS alert_rules (
    name        TEXT        PRIMARY KEY,
    definition  TEXT,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT        NOT NULL
);

-- One row per pending or firing alert (rule + labels); deleted when it
-- resolves. The leader rewrites it after every evaluation that changes it,
-- so a new leader continues where the old one stopped.
CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint       TEXT             PRIMARY KEY,
    rule              TEXT             NOT NULL,
    severity          TEXT             NOT NULL,
    labels            TEXT             NOT NULL,
    state             TEXT             NOT NULL CHECK (state IN ('pending', 'firing')),
    active_since      INTEGER          NOT NULL,
    fired_at          INTEGER,
    last_true_at      INTEGER          NOT NULL,
    value             REAL,
    last_notified_at  INTEGER,
    repeats           INTEGER          NOT NULL DEFAULT 0,
    ack_by            TEXT,
    ack_at            INTEGER,
    ack_comment       TEXT
);

CREATE TABLE IF NOT EXISTS alert_history (
    id           INTEGER          PRIMARY KEY AUTOINCREMENT,
    time         INTEGER          NOT NULL,
    fingerprint  TEXT             NOT NULL,
    rule         TEXT             NOT NULL,
    severity     TEXT             NOT NULL,
    project      TEXT,
    event        TEXT             NOT NULL,
    value        REAL,
    labels       TEXT             NOT NULL,
    detail       TEXT
);
CREATE INDEX IF NOT EXISTS alert_history_time ON alert_history (time DESC);
CREATE INDEX IF NOT EXISTS alert_history_rule_time ON alert_history (rule, time DESC);

CREATE TABLE IF NOT EXISTS alert_silences (
    id          TEXT        PRIMARY KEY,
    matchers    TEXT        NOT NULL,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    created_by  TEXT        NOT NULL,
    comment     TEXT        NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One row per notification and channel: the channel's queue while pending,
-- then its record (delivered, or dead after the retry horizon).
CREATE TABLE IF NOT EXISTS alert_deliveries (
    notification_id  TEXT        NOT NULL,
    channel          TEXT        NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER     NOT NULL DEFAULT 0,
    payload          TEXT        NOT NULL,
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    finished_at      INTEGER,
    last_error       TEXT,
    PRIMARY KEY (notification_id, channel)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_pending ON alert_deliveries (channel, next_attempt_at) WHERE status = 'pending';
