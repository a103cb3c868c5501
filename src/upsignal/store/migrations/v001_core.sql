-- Core tables: events, identities, accounts and score history.
-- All timestamps are naive TIMESTAMP values in UTC.

CREATE TABLE events (
    message_id   VARCHAR PRIMARY KEY,
    type         VARCHAR NOT NULL,      -- track, identify, group, alias, page, screen
    event        VARCHAR,               -- track event name
    name         VARCHAR,               -- page or screen name
    user_id      VARCHAR,
    anonymous_id VARCHAR,
    group_id     VARCHAR,               -- group call's groupId, else context.groupId
    previous_id  VARCHAR,               -- alias only
    timestamp    TIMESTAMP NOT NULL,    -- when it happened, skew-corrected, UTC
    received_at  TIMESTAMP NOT NULL,    -- when upsignal stored it, UTC
    properties   JSON,
    traits       JSON,
    context      JSON,
    source       VARCHAR,               -- file path or write-key source name
    timestamp_clamped BOOLEAN NOT NULL DEFAULT false
);

-- Counters of messages that never reached the events table.
CREATE TABLE ingest_counters (
    name  VARCHAR PRIMARY KEY,          -- rejected, duplicates
    value BIGINT NOT NULL
);
INSERT INTO ingest_counters VALUES ('rejected', 0), ('duplicates', 0);

-- Results of resolve_accounts, rebuilt from events on each run.
CREATE TABLE user_keys (
    user_key   VARCHAR PRIMARY KEY,     -- a userId, or 'anon:' || anonymousId
    user_id    VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL
);

CREATE TABLE users (
    user_id    VARCHAR PRIMARY KEY,
    email      VARCHAR,
    name       VARCHAR,
    account_id VARCHAR NOT NULL,
    joined_by  VARCHAR NOT NULL,        -- group, domain, personal
    first_seen TIMESTAMP,
    last_seen  TIMESTAMP
);

CREATE TABLE accounts (
    account_id VARCHAR PRIMARY KEY,
    domain     VARCHAR,
    name       VARCHAR,
    kind       VARCHAR NOT NULL,        -- group, domain, personal
    traits     JSON,
    users      INTEGER NOT NULL,
    first_seen TIMESTAMP
);

CREATE TABLE models (
    model_version VARCHAR PRIMARY KEY,  -- sha256 prefix of the normalised model
    name          VARCHAR NOT NULL,
    yaml          VARCHAR NOT NULL,
    created_at    TIMESTAMP NOT NULL
);

CREATE SEQUENCE score_run_ids START 1;

CREATE TABLE score_runs (
    run_id        BIGINT PRIMARY KEY,
    as_of         TIMESTAMP NOT NULL,
    model_version VARCHAR NOT NULL,
    engine        VARCHAR NOT NULL,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP,
    accounts      BIGINT
);

-- One row per account per run: the snapshot.
CREATE TABLE account_scores (
    run_id     BIGINT NOT NULL,
    account_id VARCHAR NOT NULL,
    score      DOUBLE NOT NULL,
    tier       VARCHAR NOT NULL,
    signals    JSON NOT NULL,           -- signal name -> value, plus previous-window values
    points     JSON NOT NULL            -- rule name -> points awarded
);

-- The latest score of each account, with the tier that hysteresis keeps.
CREATE TABLE account_state (
    account_id VARCHAR PRIMARY KEY,
    run_id     BIGINT NOT NULL,
    as_of      TIMESTAMP NOT NULL,
    score      DOUBLE NOT NULL,
    tier       VARCHAR NOT NULL,
    tier_since TIMESTAMP NOT NULL
);

CREATE SEQUENCE transition_ids START 1;

-- An account entering or leaving a tier, stored with the run whose snapshot caused it.
CREATE TABLE transitions (
    transition_id BIGINT PRIMARY KEY,
    run_id        BIGINT NOT NULL,
    account_id    VARCHAR NOT NULL,
    from_tier     VARCHAR,              -- NULL for an account's first score
    to_tier       VARCHAR NOT NULL,
    score         DOUBLE NOT NULL,
    as_of         TIMESTAMP NOT NULL
);
