-- 0061: the usage writer's batch in two calls instead of seven statements.
--
-- The writer (ocs.store.source) commits a batch of usage reports in one transaction. It used
-- seven statements besides BEGIN and COMMIT: lock the accounts, lock the session keys'
-- generations, read what was recorded, update generations, insert generations, insert usage
-- records, read the accounts' snapshots. Each is a round trip through a busy event loop while
-- the batch holds its locks. These two functions run the same statements, in the same order,
-- in one call each; the pure ledger still decides every report in Python between them.
--
-- ocs_usage_batch_read: the batch's accounts locked in id order, then every generation of its
-- session keys locked in id order (kind 0 rows), then the usage records that could make a
-- report a repeat (kind 1 rows: its uid; a report key of one of those generations; a wire key).
CREATE FUNCTION ocs_usage_batch_read(
    p_accounts bigint[], p_sources text[], p_origins text[], p_keys text[],
    p_uids text[], p_report_keys text[], p_wire_keys text[]
) RETURNS TABLE (
    kind smallint, id bigint, source text, origin text, session_key text, generation integer,
    account_id bigint, start_ref text, started_at timestamptz, seconds bigint, octets bigint,
    events bigint, charged bigint, start_key text, start_wire_key text, closed_at timestamptz,
    close_reason text, closed_by_final boolean, final_number bigint, hold_micros bigint,
    hold_until timestamptz, assumed_seconds bigint, price_per_minute_micros bigint,
    billing_increment_s integer, minimum_s integer, price_per_mb_micros bigint,
    connection_fee_micros bigint, price_per_event_micros bigint,
    idempotency_key text, session_ref bigint, report_key text, wire_key text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    refs bigint[];
BEGIN
    PERFORM 1 FROM accounts a WHERE a.id = ANY(p_accounts) ORDER BY a.id FOR UPDATE;
    RETURN QUERY
        SELECT 0::smallint, s.id, s.source, s.origin, s.session_key, s.generation,
               s.account_id, s.start_ref, s.started_at, s.seconds, s.octets, s.events,
               (s.charged * 1000000)::bigint, s.start_key, s.start_wire_key, s.closed_at,
               s.close_reason, s.closed_by_final, s.final_number, s.hold_micros, s.hold_until,
               s.assumed_seconds, s.price_per_minute_micros, s.billing_increment_s,
               s.minimum_s, s.price_per_mb_micros, s.connection_fee_micros,
               s.price_per_event_micros,
               NULL::text, NULL::bigint, NULL::text, NULL::text
        FROM sessions s
        JOIN unnest(p_sources, p_origins, p_keys) AS k(source, origin, session_key)
          ON (s.source, s.origin, s.session_key) = (k.source, k.origin, k.session_key)
        ORDER BY s.id
        FOR UPDATE OF s;
    SELECT array_agg(s.id) INTO refs
        FROM sessions s
        JOIN unnest(p_sources, p_origins, p_keys) AS k(source, origin, session_key)
          ON (s.source, s.origin, s.session_key) = (k.source, k.origin, k.session_key);
    RETURN QUERY
        SELECT 1::smallint, NULL::bigint, u.source, u.origin, u.session_id, NULL::integer,
               NULL::bigint, NULL::text, NULL::timestamptz, NULL::bigint, NULL::bigint,
               NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::timestamptz,
               NULL::text, NULL::boolean, NULL::bigint, NULL::bigint, NULL::timestamptz,
               NULL::bigint, NULL::bigint, NULL::integer, NULL::integer, NULL::bigint,
               NULL::bigint, NULL::bigint,
               u.idempotency_key, u.session_ref, u.report_key, u.wire_key
        FROM usage_records u
        WHERE u.idempotency_key = ANY(p_uids)
           OR (u.session_ref = ANY(refs) AND u.report_key = ANY(p_report_keys))
           OR u.wire_key = ANY(p_wire_keys);
END $$;

-- ocs_usage_batch_write: changed generations updated first (a superseded one is closed before
-- the one that replaces it is inserted: one open generation per key), new generations
-- inserted (kind 0 rows: their ids), usage records inserted (a record of a generation made in
-- this call names it by its key and generation number, a negative session_ref), and the
-- accounts' snapshots read back after the usage trigger has applied them (kind 1 rows).
-- The rows travel as JSON arrays of positional arrays, instants as integer microseconds since
-- the epoch, as ocs.store.source writes them.
CREATE FUNCTION ocs_usage_batch_write(
    p_changed jsonb, p_made jsonb, p_lines jsonb, p_owner text, p_accounts bigint[]
) RETURNS TABLE (
    kind smallint, id bigint, source text, origin text, session_key text, generation integer,
    snapshot account_snapshots
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF jsonb_array_length(p_changed) > 0 THEN
        UPDATE sessions s SET
            seconds = (e->>1)::bigint, octets = (e->>2)::bigint, events = (e->>3)::bigint,
            charged = (e->>4)::bigint / 1000000.0,
            closed_at = timestamptz 'epoch' + ((e->>5)::bigint * interval '1 microsecond'),
            close_reason = e->>6, closed_by_final = (e->>7)::boolean,
            final_number = (e->>8)::bigint, hold_micros = (e->>9)::bigint,
            hold_until = timestamptz 'epoch' + ((e->>10)::bigint * interval '1 microsecond'),
            owner = p_owner, assumed_seconds = (e->>11)::bigint, updated_at = now()
        FROM jsonb_array_elements(p_changed) AS g(e)
        WHERE s.id = (e->>0)::bigint;
    END IF;
    IF jsonb_array_length(p_made) > 0 THEN
        RETURN QUERY
            WITH inserted AS (
                INSERT INTO sessions (source, origin, session_key, generation, account_id,
                                      start_ref, started_at, updated_at, seconds, octets, events,
                                      charged, start_key, start_wire_key, closed_at,
                                      close_reason, closed_by_final, final_number, hold_micros,
                                      hold_until, owner, price_per_minute_micros,
                                      billing_increment_s, minimum_s, price_per_mb_micros,
                                      connection_fee_micros, price_per_event_micros,
                                      assumed_seconds)
                SELECT e->>0, e->>1, e->>2, (e->>3)::int, (e->>4)::bigint, e->>5,
                       timestamptz 'epoch' + ((e->>6)::bigint * interval '1 microsecond'),
                       timestamptz 'epoch' + ((e->>6)::bigint * interval '1 microsecond'),
                       (e->>7)::bigint, (e->>8)::bigint, (e->>9)::bigint,
                       (e->>10)::bigint / 1000000.0, e->>11, e->>12,
                       timestamptz 'epoch' + ((e->>13)::bigint * interval '1 microsecond'),
                       e->>14, (e->>15)::boolean, (e->>16)::bigint, (e->>17)::bigint,
                       timestamptz 'epoch' + ((e->>18)::bigint * interval '1 microsecond'),
                       p_owner, (e->>19)::bigint, (e->>20)::int, (e->>21)::int,
                       (e->>22)::bigint, (e->>23)::bigint, (e->>24)::bigint, (e->>25)::bigint
                FROM jsonb_array_elements(p_made) WITH ORDINALITY AS g(e, n)
                ORDER BY g.n
                RETURNING sessions.id, sessions.source, sessions.origin, sessions.session_key,
                          sessions.generation
            )
            SELECT 0::smallint, i.id, i.source, i.origin, i.session_key, i.generation,
                   NULL::account_snapshots
            FROM inserted i;
    END IF;
    IF jsonb_array_length(p_lines) > 0 THEN
        INSERT INTO usage_records (account_id, idempotency_key, source, session_id, seconds,
                                   octets, events, amount, occurred_at, session_ref, origin,
                                   report_key, wire_key)
        SELECT (e->>0)::bigint, e->>1, e->>2, e->>3, (e->>4)::bigint, (e->>5)::bigint,
               (e->>6)::bigint, (e->>7)::bigint / 1000000.0,
               timestamptz 'epoch' + ((e->>8)::bigint * interval '1 microsecond'),
               CASE WHEN (e->>9)::bigint > 0 THEN (e->>9)::bigint ELSE (
                   SELECT s.id FROM sessions s
                   WHERE (s.source, s.origin, s.session_key, s.generation)
                       = (e->>2, e->>10, e->>3, (e->>13)::int)
               ) END,
               e->>10, e->>11, e->>12
        FROM jsonb_array_elements(p_lines) AS g(e);
    END IF;
    RETURN QUERY
        SELECT 1::smallint, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::integer, v
        FROM account_snapshots v
        WHERE v.account_id = ANY(p_accounts);
END $$;
