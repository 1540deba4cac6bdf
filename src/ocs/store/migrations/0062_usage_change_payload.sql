-- 0062: a usage batch's change notification carries the change itself.
--
-- Every charged usage batch changes its accounts' balance (and unbilled amount), and 0060's
-- trigger announces each account on 'ocs_account_changed'. Every daemon process listening then
-- re-read the account's snapshot and identities: two queries per process and batch, on every
-- charged record, for a change whose whole content is three figures.
--
-- The announcement now carries them, with the row's change stamp before and after:
--
--     "<account id> <epoch seconds, raised at> <changed_at before, µs> <changed_at after, µs>
--      <balance µ-units> <unbilled µ-units> <unbilled period YYYY-MM-DD or ->"
--
-- A listener whose cached snapshot is the one stamped "before" applies the figures and takes
-- "after" as its version; one that already holds "after" (the process that wrote the batch)
-- has nothing to do; any other re-reads the account as before. The first two fields are those
-- of 0011, so a listener that reads only them still works. Stamps are integer microseconds,
-- computed exactly on any PostgreSQL version (extract(epoch) is a double before 14).
CREATE FUNCTION ocs_epoch_micros(at timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT extract(epoch FROM date_trunc('second', at))::bigint * 1000000
           + extract(microseconds FROM at)::bigint % 1000000;
$$;

CREATE OR REPLACE FUNCTION ocs_apply_usage_records() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    announced bigint;
BEGIN
    PERFORM 1 FROM accounts
        WHERE id IN (SELECT account_id FROM new_usage WHERE amount <> 0)
        ORDER BY id
        FOR UPDATE;
    WITH charged AS (
        SELECT n.account_id, n.amount,
               date_trunc('month', n.occurred_at AT TIME ZONE a.time_zone)::date AS period,
               a.unbilled_period AS current_period
        FROM new_usage n JOIN accounts a ON a.id = n.account_id
        WHERE n.amount <> 0
    ), latest AS (
        SELECT account_id,
               GREATEST(max(current_period), max(period)) AS top,
               sum(amount) AS total
        FROM charged
        GROUP BY account_id
    ), per_account AS (
        SELECT l.account_id, l.top, l.total,
               COALESCE(sum(c.amount) FILTER (WHERE c.period = l.top), 0) AS in_top
        FROM latest l JOIN charged c USING (account_id)
        GROUP BY l.account_id, l.top, l.total
    ), before AS (
        -- The statement's snapshot: the stamps as they were (the rows are locked above).
        SELECT a.id, a.changed_at FROM accounts a
        WHERE a.id IN (SELECT account_id FROM per_account)
    ), updated AS (
        UPDATE accounts a SET
            balance = a.balance - p.total,
            unbilled = CASE
                WHEN a.unbilled_period IS NULL OR p.top > a.unbilled_period THEN p.in_top
                ELSE a.unbilled + p.in_top END,
            unbilled_period = p.top,
            changed_at = clock_timestamp()
        FROM per_account p
        WHERE a.id = p.account_id
        RETURNING a.id, a.changed_at, a.balance, a.unbilled, a.unbilled_period
    )
    SELECT count(pg_notify(
               'ocs_account_changed',
               concat_ws(' ',
                   u.id,
                   extract(epoch FROM clock_timestamp())::text,
                   ocs_epoch_micros(b.changed_at),
                   ocs_epoch_micros(u.changed_at),
                   (u.balance * 1000000)::bigint,
                   (u.unbilled * 1000000)::bigint,
                   COALESCE(to_char(u.unbilled_period, 'YYYY-MM-DD'), '-'))))
        INTO announced
        FROM updated u JOIN before b USING (id);
    RETURN NULL;
END $$;
