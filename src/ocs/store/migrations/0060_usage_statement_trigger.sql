-- 0060: usage records change their accounts once per statement instead of once per row.
--
-- The usage writer inserts a batch's records in one statement (ocs.store.source); the row
-- trigger of 0001/0014 then locked, updated and announced each account once per record. This
-- statement-level trigger reads the statement's records from a transition table and applies
-- them set-based: each account is locked once (in id order, as the writer locks them, so two
-- writers never deadlock), updated once with the batch's total, and announced once.
--
-- Same figures as applying the records one by one in any order: the balance falls by their
-- sum; the unbilled amount is that of the latest monthly period (in the account's time zone)
-- among the account's period and the records' periods: the account's unbilled amount plus the
-- records of its period when that stays the latest, else the sum of the records of the newer
-- period; records of older periods only lower the balance. A record that charges nothing
-- changes nothing (as 0014's WHEN clause).
CREATE FUNCTION ocs_apply_usage_records() RETURNS trigger LANGUAGE plpgsql AS $$
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
    )
    UPDATE accounts a SET
        balance = a.balance - p.total,
        unbilled = CASE
            WHEN a.unbilled_period IS NULL OR p.top > a.unbilled_period THEN p.in_top
            ELSE a.unbilled + p.in_top END,
        unbilled_period = p.top,
        changed_at = clock_timestamp()
    FROM per_account p
    WHERE a.id = p.account_id;
    PERFORM ocs_notify_account(d.account_id)
        FROM (SELECT DISTINCT account_id FROM new_usage WHERE amount <> 0 ORDER BY 1) d;
    RETURN NULL;
END $$;

DROP TRIGGER usage_records_apply ON usage_records;
CREATE TRIGGER usage_records_apply AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_usage
    FOR EACH STATEMENT EXECUTE FUNCTION ocs_apply_usage_records();
DROP FUNCTION ocs_apply_usage_record();
