-- 0065: the warning thresholds are evaluated only for accounts that have some.
--
-- 0002's deferred trigger ran ocs_evaluate_warning_thresholds at commit for every account whose
-- balance, unbilled amount or limits changed; for an account without thresholds (most of them)
-- the call found none and returned. Under usage load that was a plpgsql call and a query per
-- charged account and batch, about 6 µs of PostgreSQL's CPU per charged report.
--
-- accounts.has_warning_thresholds says whether the account has any; triggers on
-- account_warning_thresholds keep it true exactly while it has a row there, and the trigger's
-- WHEN clause reads it, so no call is queued for the others. A threshold set later is armed
-- against the figure of that moment (ocs_set_warning_thresholds), as before.
ALTER TABLE accounts ADD COLUMN has_warning_thresholds boolean NOT NULL DEFAULT false;
UPDATE accounts SET has_warning_thresholds = true
    WHERE id IN (SELECT account_id FROM account_warning_thresholds);

CREATE FUNCTION ocs_mark_warning_thresholds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts a SET has_warning_thresholds = EXISTS (
            SELECT 1 FROM account_warning_thresholds t WHERE t.account_id = a.id)
        WHERE a.id IN (SELECT account_id FROM changed_thresholds)
          AND a.has_warning_thresholds IS DISTINCT FROM EXISTS (
              SELECT 1 FROM account_warning_thresholds t WHERE t.account_id = a.id);
    RETURN NULL;
END $$;
CREATE TRIGGER account_warning_thresholds_added AFTER INSERT ON account_warning_thresholds
    REFERENCING NEW TABLE AS changed_thresholds
    FOR EACH STATEMENT EXECUTE FUNCTION ocs_mark_warning_thresholds();
CREATE TRIGGER account_warning_thresholds_removed AFTER DELETE ON account_warning_thresholds
    REFERENCING OLD TABLE AS changed_thresholds
    FOR EACH STATEMENT EXECUTE FUNCTION ocs_mark_warning_thresholds();

DROP TRIGGER accounts_warning_thresholds ON accounts;
CREATE CONSTRAINT TRIGGER accounts_warning_thresholds
    AFTER UPDATE OF balance, unbilled, unbilled_period, credit_limit, min_balance, limit_basis
    ON accounts DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.has_warning_thresholds
          AND (OLD.balance IS DISTINCT FROM NEW.balance
               OR OLD.unbilled IS DISTINCT FROM NEW.unbilled
               OR OLD.unbilled_period IS DISTINCT FROM NEW.unbilled_period
               OR OLD.credit_limit IS DISTINCT FROM NEW.credit_limit
               OR OLD.min_balance IS DISTINCT FROM NEW.min_balance
               OR OLD.limit_basis IS DISTINCT FROM NEW.limit_basis))
    EXECUTE FUNCTION ocs_thresholds_after_change();
