-- 0011: change notifications carry the instant they were raised, "<account id> <epoch seconds>",
-- so listeners can measure how far behind they are (ocs_loader_notification_lag_seconds).
CREATE OR REPLACE FUNCTION ocs_notify_account(account bigint) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify(
        'ocs_account_changed',
        account::text || ' ' || extract(epoch FROM clock_timestamp())::text
    );
$$;
