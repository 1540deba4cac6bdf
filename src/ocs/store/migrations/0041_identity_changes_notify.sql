-- 0041: an identity moved to another account is announced like an added one (the account it
-- moved to is touched and notified), so a daemon whose cache holds every identity
-- (authoritative after its full load) learns of it. A deleted identity is announced too (a
-- notification only: the account may be going away in the same statement).
CREATE FUNCTION ocs_touch_identity_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        UPDATE accounts SET changed_at = clock_timestamp() WHERE id = NEW.account_id;
        PERFORM ocs_notify_account(NEW.account_id);
    END IF;
    PERFORM ocs_notify_account(OLD.account_id);
    RETURN NULL;
END $$;
CREATE TRIGGER account_identities_moved AFTER UPDATE OR DELETE ON account_identities
    FOR EACH ROW EXECUTE FUNCTION ocs_touch_identity_accounts();
