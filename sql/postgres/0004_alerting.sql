-- Alerting: rules changed through the API, the state of every active alert,
-- its full history, silences, and the durable delivery queue. Plain tables
-- (not hypertables): small, and updated in place. Shared by PostgreSQL and
-- TimescaleDB.

-- Rules created, changed or deleted through the API; they override config
-- rules of the same name. `definition` is the rule as JSON, NULL when the
-- rule was deleted (a tombstone that also hides a config rule).
CREATE TABLE IF NOT EXISTS alert_rules (
    name        text        PRIMARY KEY,
    definition  text,
    updated_at  timestamptz NOT NULL,
    updated_by  text        NOT NULL
);

-- One row per pending or firing alert (rule + labels); deleted when it
-- resolves. The leader rewrites it after every evaluation that changes it,
-- so a new leader continues where the old one stopped.
CREATE TABLE IF NOT EXISTS alert_state (
    fingerprint       text             PRIMARY KEY,
    rule              text             NOT NULL,
    severity          text             NOT NULL,
    labels            text             NOT NULL,
    state             text             NOT NULL CHECK (state IN ('pending', 'firing')),
    active_since      timestamptz      NOT NULL,
    fired_at          timestamptz,
    last_true_at      timestamptz      NOT NULL,
    value             double precision,
    last_notified_at  timestamptz,
    repeats           integer          NOT NULL DEFAULT 0,
    ack_by            text,
    ack_at            timestamptz,
    ack_comment       text
);

CREATE TABLE IF NOT EXISTS alert_history (
    id           bigserial        PRIMARY KEY,
    time         timestamptz      NOT NULL,
    fingerprint  text             NOT NULL,
    rule         text             NOT NULL,
    severity     text             NOT NULL,
    project      text,
    event        text             NOT NULL,
    value        double precision,
    labels       text             NOT NULL,
    detail       text
);
CREATE INDEX IF NOT EXISTS alert_history_time ON alert_history (time DESC);
CREATE INDEX IF NOT EXISTS alert_history_rule_time ON alert_history (rule, time DESC);

CREATE TABLE IF NOT EXISTS alert_silences (
    id          text        PRIMARY KEY,
    matchers    text        NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  text        NOT NULL,
    comment     text        NOT NULL,
    created_at  timestamptz NOT NULL
);

-- One row per notification and channel: the channel's queue while pending,
-- then its record (delivered, or dead after the retry horizon).
CREATE TABLE IF NOT EXISTS alert_deliveries (
    notification_id  text        NOT NULL,
    channel          text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer     NOT NULL DEFAULT 0,
    payload          text        NOT NULL,
    created_at       timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    finished_at      timestamptz,
    last_error       text,
    PRIMARY KEY (notification_id, channel)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_pending ON alert_deliveries (channel, next_attempt_at) WHERE status = 'pending';
