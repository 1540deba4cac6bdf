-- 0013: settling prepaid charges locks the account row FOR NO KEY UPDATE, not FOR UPDATE.
-- A payment's ledger insert first updates the account (its balance trigger takes NO KEY UPDATE),
-- then settles its prepaid charges. FOR UPDATE there upgraded the lock, and FOR UPDATE conflicts
-- with the KEY SHARE lock a concurrent writer's foreign-key check holds on the same account
-- while that writer waits for the payment's balance update: a deadlock (seen with a prepaid
-- period run charging the account's other service). NO KEY UPDATE serialises balance changes
-- just as well and does not conflict with foreign-key checks.
CREATE OR REPLACE FUNCTION ocs_prepaid_settle(p_account bigint, p_now timestamptz DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    acct record;
    v_now timestamptz := COALESCE(p_now, now());
BEGIN
    IF NOT EXISTS (SELECT 1 FROM prepaid_charges
                   WHERE account_id = p_account AND settled_at IS NULL) THEN
        RETURN false;
    END IF;
    SELECT status, blocked_reason INTO acct FROM accounts WHERE id = p_account FOR NO KEY UPDATE;
    IF ocs_balance_funds(p_account, v_now) < 0 THEN
        RETURN false;
    END IF;
    UPDATE prepaid_charges SET settled_at = v_now
        WHERE account_id = p_account AND settled_at IS NULL;
    IF acct.status = 'blocked' AND acct.blocked_reason = 'prepaid_unpaid' THEN
        UPDATE accounts SET status = 'active', blocked_reason = NULL WHERE id = p_account;
        RETURN true;
    END IF;
    RETURN false;
END $$;
