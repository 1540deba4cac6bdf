-- 0014: one ledger of sessions with generations, holds that survive restarts, idempotency
-- decided from the database at any age.
--
-- A session key (source, origin, session_key) is the client's, and clients reuse it: each use
-- is a generation with its own account, usage, charge, rate (fixed when it opened) and hold.
-- Which generation a report belongs to, and whether it is a repeat, is decided by the daemon's
-- pure ledger (ocs.core.ledger) on the rows it reads here under lock; the writes are plain
-- set-based statements. ocs_record_session_usage (0010/0012), which treated a key as one
-- session for ever, is gone.

ALTER TABLE sessions
    ADD COLUMN generation integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
    ADD COLUMN start_ref text,
    ADD COLUMN start_key text,
    ADD COLUMN start_wire_key text,
    ADD COLUMN owner text,
    ADD COLUMN closed_by_final boolean NOT NULL DEFAULT false,
    ADD COLUMN final_number bigint,
    -- seconds charged without being reported (a session closed with no news is charged its
    -- last quota); usage reported later for it is set against them first
    ADD COLUMN assumed_seconds bigint NOT NULL DEFAULT 0 CHECK (assumed_seconds >= 0),
    ADD COLUMN hold_micros bigint NOT NULL DEFAULT 0 CHECK (hold_micros >= 0),
    ADD COLUMN hold_until timestamptz,
    -- the rate the generation is charged at, fixed when it opened (micro-units)
    ADD COLUMN price_per_minute_micros bigint NOT NULL DEFAULT 0,
    ADD COLUMN billing_increment_s integer NOT NULL DEFAULT 1 CHECK (billing_increment_s >= 1),
    ADD COLUMN minimum_s integer NOT NULL DEFAULT 0,
    ADD COLUMN price_per_mb_micros bigint NOT NULL DEFAULT 0,
    ADD COLUMN connection_fee_micros bigint NOT NULL DEFAULT 0,
    ADD COLUMN price_per_event_micros bigint NOT NULL DEFAULT 0;

-- Sessions recorded before generations: their account's rate now, closed ones as by their final.
UPDATE sessions s SET
    price_per_minute_micros = COALESCE((t.price_per_minute * 1000000)::bigint, 0),
    billing_increment_s = COALESCE(t.billing_increment_s, 1),
    minimum_s = COALESCE(t.minimum_s, 0),
    price_per_mb_micros = COALESCE((t.price_per_mb * 1000000)::bigint, 0),
    connection_fee_micros = COALESCE((t.connection_fee * 1000000)::bigint, 0),
    price_per_event_micros = COALESCE((t.price_per_event * 1000000)::bigint, 0),
    closed_by_final = (s.closed_at IS NOT NULL
                       AND s.close_reason NOT IN ('accounting_on', 'accounting_off', 'tcc_expired'))
FROM accounts a LEFT JOIN tariffs t ON t.id = a.tariff_id
WHERE a.id = s.account_id;

ALTER TABLE sessions DROP CONSTRAINT sessions_source_origin_session_key_key;
CREATE UNIQUE INDEX sessions_generation ON sessions (source, origin, session_key, generation);
-- At most one open generation per key.
CREATE UNIQUE INDEX sessions_one_open ON sessions (source, origin, session_key)
    WHERE closed_at IS NULL;
CREATE INDEX sessions_owner_open ON sessions (owner) WHERE closed_at IS NULL;

ALTER TABLE usage_records
    ADD COLUMN session_ref bigint REFERENCES sessions (id),
    ADD COLUMN origin text,
    ADD COLUMN report_key text,
    ADD COLUMN wire_key text;
CREATE INDEX usage_records_session_report ON usage_records (session_ref, report_key)
    WHERE session_ref IS NOT NULL;
CREATE INDEX usage_records_wire_key ON usage_records (wire_key) WHERE wire_key IS NOT NULL;

-- A usage record that charges nothing changes no figure: it neither touches the account row
-- nor announces a change (it is kept for the idempotency of its report).
DROP TRIGGER usage_records_apply ON usage_records;
CREATE TRIGGER usage_records_apply AFTER INSERT ON usage_records
    FOR EACH ROW WHEN (NEW.amount <> 0) EXECUTE FUNCTION ocs_apply_usage_record();

DROP FUNCTION ocs_record_session_usage(
    text, text, text, bigint, text, bigint, bigint, bigint, numeric, boolean, timestamptz, text);

-- Accounting-On/Off closes a NAS's open generations (a later report of one is still charged to
-- it: late usage is never refused).
CREATE OR REPLACE FUNCTION ocs_close_sessions(p_source text, p_origin text, p_reason text)
RETURNS TABLE (account_id bigint, session_key text) LANGUAGE sql AS $$
    UPDATE sessions SET closed_at = now(), close_reason = p_reason, updated_at = now(),
                        hold_micros = 0, hold_until = NULL
        WHERE source = p_source AND origin = p_origin AND closed_at IS NULL
        RETURNING sessions.account_id, sessions.session_key;
$$;

-- Usage that cannot be charged says why.
ALTER TABLE unmatched_usage ADD COLUMN reason text NOT NULL DEFAULT 'unknown_identity';

-- Credit held by the account's running sessions (the daemons write each open generation's
-- hold: the price of the grant it runs on, until the grant ends). Money leaving the account by
-- another path must leave that much in place.
CREATE FUNCTION ocs_held_credit(p_account bigint, p_now timestamptz DEFAULT NULL)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT COALESCE(sum(hold_micros), 0) / 1000000.0
    FROM sessions
    WHERE account_id = p_account AND closed_at IS NULL AND hold_micros > 0
      AND hold_until > COALESCE(p_now, now())
$$;

CREATE FUNCTION ocs_running_sessions(p_account bigint, p_now timestamptz DEFAULT NULL)
RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM sessions
    WHERE account_id = p_account AND closed_at IS NULL AND hold_micros > 0
      AND hold_until > COALESCE(p_now, now())
$$;
