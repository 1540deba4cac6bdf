-- 0010: sessions and idempotent usage recording for the RADIUS and Diameter fronts.
--
-- A session is keyed by (source, origin, session_key): RADIUS (NAS address, Acct-Session-Id),
-- Diameter (Origin-Host, Session-Id). Usage arrives as cumulative figures for the whole session,
-- rated by the daemon at the account's tariff into a cumulative amount; what is charged is the
-- difference to what the session was charged before, so billing increments and minimums apply
-- to the whole session and a late or repeated report never charges twice.

CREATE TABLE sessions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        text NOT NULL CHECK (source IN ('radius', 'diameter')),
    origin        text NOT NULL,
    session_key   text NOT NULL CHECK (session_key <> ''),
    account_id    bigint NOT NULL REFERENCES accounts (id),
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    seconds       bigint NOT NULL DEFAULT 0 CHECK (seconds >= 0),
    octets        bigint NOT NULL DEFAULT 0 CHECK (octets >= 0),
    events        bigint NOT NULL DEFAULT 0 CHECK (events >= 0),
    charged       numeric(20, 6) NOT NULL DEFAULT 0 CHECK (charged >= 0),
    closed_at     timestamptz,
    close_reason  text,
    UNIQUE (source, origin, session_key)
);
CREATE INDEX sessions_open ON sessions (source, origin) WHERE closed_at IS NULL;
CREATE INDEX sessions_account_open ON sessions (account_id) WHERE closed_at IS NULL;

-- Record one usage report. Returns what was charged now (0 for a repeat) and whether the
-- idempotency key was seen before. The caller acknowledges the report only after this commits.
CREATE FUNCTION ocs_record_session_usage(
    p_source text, p_origin text, p_session_key text, p_account bigint, p_idempotency_key text,
    p_seconds bigint, p_octets bigint, p_events bigint, p_total_amount numeric,
    p_final boolean, p_occurred_at timestamptz, p_close_reason text DEFAULT NULL
) RETURNS TABLE (charged_now numeric, was_duplicate boolean) LANGUAGE plpgsql AS $$
DECLARE
    s sessions%ROWTYPE;
    delta numeric;
BEGIN
    IF p_total_amount < 0 OR p_seconds < 0 OR p_octets < 0 OR p_events < 0 THEN
        RAISE EXCEPTION 'usage figures must not be negative' USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO sessions (source, origin, session_key, account_id, started_at)
        VALUES (p_source, p_origin, p_session_key, p_account, p_occurred_at)
        ON CONFLICT (source, origin, session_key) DO NOTHING;
    SELECT * INTO s FROM sessions
        WHERE source = p_source AND origin = p_origin AND session_key = p_session_key FOR UPDATE;
    IF s.account_id <> p_account THEN
        RAISE EXCEPTION 'session % of % belongs to account %, not %',
            p_session_key, p_origin, s.account_id, p_account USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM usage_records WHERE idempotency_key = p_idempotency_key) THEN
        RETURN QUERY SELECT 0::numeric, true;
        RETURN;
    END IF;
    delta := GREATEST(p_total_amount - s.charged, 0);
    INSERT INTO usage_records
        (account_id, idempotency_key, source, session_id, seconds, octets, events, amount,
         occurred_at)
    VALUES (p_account, p_idempotency_key, p_source, p_session_key,
            GREATEST(p_seconds - s.seconds, 0), GREATEST(p_octets - s.octets, 0),
            GREATEST(p_events - s.events, 0), delta, p_occurred_at);
    UPDATE sessions SET
        seconds = GREATEST(seconds, p_seconds),
        octets = GREATEST(octets, p_octets),
        events = GREATEST(events, p_events),
        charged = charged + delta,
        updated_at = now(),
        closed_at = CASE WHEN p_final THEN COALESCE(closed_at, p_occurred_at) ELSE closed_at END,
        close_reason = CASE WHEN p_final THEN COALESCE(close_reason, p_close_reason, 'stop')
                            ELSE close_reason END
        WHERE id = s.id;
    RETURN QUERY SELECT delta, false;
END $$;

-- Close every open session of one origin (RADIUS Accounting-On/Off: the NAS restarted, its
-- sessions are gone). Usage already reported stays charged; nothing more will come.
CREATE FUNCTION ocs_close_sessions(p_source text, p_origin text, p_reason text)
RETURNS TABLE (account_id bigint, session_key text) LANGUAGE sql AS $$
    UPDATE sessions SET closed_at = now(), close_reason = p_reason, updated_at = now()
        WHERE source = p_source AND origin = p_origin AND closed_at IS NULL
        RETURNING sessions.account_id, sessions.session_key;
$$;

-- Usage for an identity that matches no account: it cannot be charged, but it is not thrown
-- away either. Operators reconcile it (add the identity, then re-rate) from this table.
CREATE TABLE unmatched_usage (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    source           text NOT NULL,
    origin           text NOT NULL,
    session_key      text NOT NULL,
    identity_kind    text NOT NULL,
    identity         text NOT NULL,
    seconds          bigint NOT NULL DEFAULT 0,
    octets           bigint NOT NULL DEFAULT 0,
    events           bigint NOT NULL DEFAULT 0,
    final            boolean NOT NULL,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);
