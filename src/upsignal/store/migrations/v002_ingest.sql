-- Write keys for the HTTP ingest API and the queue of identities that live scoring must revisit.

-- Only a SHA-256 hash of each key is stored; the key itself is shown once, when created.
CREATE TABLE write_keys (
    key_id     VARCHAR PRIMARY KEY,     -- public id used to list and revoke a key
    source     VARCHAR NOT NULL,        -- stored with every event sent with the key
    key_hash   VARCHAR NOT NULL UNIQUE, -- hex SHA-256 of the key
    key_prefix VARCHAR NOT NULL,        -- first characters of the key, to recognise it
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);

-- Identities touched by ingested events and not yet re-scored by the live scorer.
-- The ingest writer appends rows in the transaction that stores the events, so a
-- crash never loses the note that an account needs scoring.
CREATE TABLE live_touched (
    seq      BIGINT NOT NULL,           -- ingest commit number; the scorer deletes up to a number
    kind     VARCHAR NOT NULL,          -- user_key or group
    value    VARCHAR NOT NULL
);

-- Accounts whose identity changed in a live pass and which still need a score.
CREATE TABLE live_pending_accounts (
    account_id VARCHAR NOT NULL
);
