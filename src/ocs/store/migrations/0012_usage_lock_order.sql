-- 0012: record usage with the account row locked first. Two reports for different sessions of
-- one account used to lock their session rows, then the account row (in the balance trigger),
-- and later triggers on the account could deadlock against each other. Locking the account
-- first serializes an account's usage in one order, which is what it needs anyway.
CREATE OR REPLACE FUNCTION ocs_record_session_usage(
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
    PERFORM 1 FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account USING ERRCODE = 'no_data_found';
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
