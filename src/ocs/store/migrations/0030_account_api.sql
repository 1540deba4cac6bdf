-- 0030: the account API (ocs api) and the CDR export.
--
-- api_tokens: bearer tokens, one operator each. Only the SHA-256 of a token is kept; a token
-- is refused once revoked or past expires_at. Every call made with it acts as its operator, so
-- the operator's allowances (seed 004) bind the API exactly as they bind the CLI.
--
-- api_idempotency_keys: the first answer to a money-moving request with an Idempotency-Key,
-- per operator and key, written in the same transaction as the change it answers. The same key
-- again gets that answer; with another body (another SHA-256) it is refused.
--
-- cdr_outbox / cdr_batches: every session that closes is queued once (a trigger, the outbox
-- pattern of the warnings), grouped into batches that the daemon's exporter delivers (a CSV
-- file or a webhook POST) and marks delivered; a batch is fixed before it is delivered, so a
-- restart delivers the same batch again (same file name, same Idempotency-Key), never a CDR in
-- two batches.

CREATE TABLE api_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operator_id   bigint NOT NULL REFERENCES operators (id),
    token_sha256  bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    label         text,
    -- May also create operators and change their allowances (an operator's own token must not
    -- be able to raise its own caps).
    manage_operators boolean NOT NULL DEFAULT false,
    created_by    text NOT NULL DEFAULT current_user,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CHECK (expires_at IS NULL OR expires_at > created_at)
);
CREATE INDEX api_tokens_operator ON api_tokens (operator_id);

CREATE TABLE api_idempotency_keys (
    operator_id  bigint NOT NULL REFERENCES operators (id),
    key          text NOT NULL CHECK (key <> '' AND length(key) <= 255),
    method       text NOT NULL,
    path         text NOT NULL,
    body_sha256  bytea NOT NULL,
    status       integer,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (operator_id, key)
);
CREATE INDEX api_idempotency_keys_created ON api_idempotency_keys (created_at);

CREATE TABLE cdr_batches (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sink             text NOT NULL CHECK (sink IN ('files', 'webhook')),
    records          integer NOT NULL CHECK (records > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    delivered_at     timestamptz,
    delivered_to     text
);
CREATE INDEX cdr_batches_due ON cdr_batches (next_attempt_at, id) WHERE delivered_at IS NULL;

CREATE TABLE cdr_outbox (
    session_id  bigint PRIMARY KEY REFERENCES sessions (id),
    closed_at   timestamptz NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    batch_id    bigint REFERENCES cdr_batches (id)
);
CREATE INDEX cdr_outbox_unbatched ON cdr_outbox (session_id) WHERE batch_id IS NULL;
CREATE INDEX cdr_outbox_batch ON cdr_outbox (batch_id) WHERE batch_id IS NOT NULL;

-- A session is queued the first time it is closed (a Stop, a CCR-T, Accounting-On/Off, a lost
-- session ended by its grant): whoever closes it, in the closing transaction.
CREATE FUNCTION ocs_queue_cdr() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cdr_outbox (session_id, closed_at) VALUES (NEW.id, NEW.closed_at)
        ON CONFLICT (session_id) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER sessions_cdr_on_close AFTER UPDATE OF closed_at ON sessions
    FOR EACH ROW WHEN (OLD.closed_at IS NULL AND NEW.closed_at IS NOT NULL)
    EXECUTE FUNCTION ocs_queue_cdr();
CREATE TRIGGER sessions_cdr_on_insert AFTER INSERT ON sessions
    FOR EACH ROW WHEN (NEW.closed_at IS NOT NULL)
    EXECUTE FUNCTION ocs_queue_cdr();

-- Sessions closed before this migration are exported too.
INSERT INTO cdr_outbox (session_id, closed_at)
    SELECT id, closed_at FROM sessions WHERE closed_at IS NOT NULL;

-- CDR listings and exports read closed sessions by the time they ended.
CREATE INDEX sessions_closed ON sessions (closed_at, id) WHERE closed_at IS NOT NULL;
