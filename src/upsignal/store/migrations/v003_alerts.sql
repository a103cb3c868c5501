-- Alerts: cooldown flags on transitions, the outbox of alerts for destinations, and
-- one row per delivery attempt.

-- A transition enters to_tier and leaves from_tier. The model's cooldown can keep
-- either half from raising an alert; the transition itself is always stored.
ALTER TABLE transitions ADD COLUMN entry_suppressed BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE transitions ADD COLUMN exit_suppressed BOOLEAN NOT NULL DEFAULT false;

CREATE SEQUENCE alert_ids START 1;

-- One row per transition and subscribed destination, written in the scoring
-- transaction that stored the transition.
CREATE TABLE alert_outbox (
    alert_id        BIGINT PRIMARY KEY,
    alert_key       VARCHAR NOT NULL UNIQUE,  -- idempotency key sent with every attempt
    transition_id   BIGINT NOT NULL,
    destination     VARCHAR NOT NULL,         -- destination name in upsignal.yaml
    event           VARCHAR NOT NULL,         -- entered or left
    status          VARCHAR NOT NULL,         -- pending, delivering, delivered, dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,  -- retryable failures, rate limits excluded
    next_attempt_at TIMESTAMP NOT NULL,
    claimed_by      VARCHAR,                  -- dispatcher that is delivering the row
    claimed_until   TIMESTAMP,                -- after this, another dispatcher may take it over
    created_at      TIMESTAMP NOT NULL,
    delivered_at    TIMESTAMP,
    external_id     VARCHAR,                  -- record id at the destination, where it has one
    last_error      VARCHAR,
    UNIQUE (transition_id, destination)
);

CREATE TABLE alert_attempts (
    alert_id    BIGINT NOT NULL,
    attempt     INTEGER NOT NULL,
    claimed_by  VARCHAR NOT NULL,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    outcome     VARCHAR NOT NULL,  -- in_flight, delivered, retry, rate_limited, dead, interrupted
    status_code INTEGER,           -- HTTP status of the response that decided the outcome
    error       VARCHAR,
    retry_at    TIMESTAMP,
    PRIMARY KEY (alert_id, attempt)
);
