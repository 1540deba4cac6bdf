-- 0015: money leaving an account by another path than usage sees the credit its running
-- sessions hold (0014's ocs_held_credit), so a subscriber whose call holds the whole balance
-- cannot transfer it away while talking, nor can a refund take it.

CREATE OR REPLACE FUNCTION ocs_transfer(
    p_from bigint, p_to bigint, p_amount numeric, p_operator bigint DEFAULT NULL,
    p_changed_by text DEFAULT NULL, p_note text DEFAULT NULL, p_external_id text DEFAULT NULL,
    p_now timestamptz DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := COALESCE(p_now, now());
    src record;
    dst record;
    earlier transfers%ROWTYPE;
    available numeric;
    held numeric;
    new_id bigint;
    who text := COALESCE(p_changed_by, current_user);
BEGIN
    IF p_amount IS NULL OR p_amount <= 0 THEN
        RAISE EXCEPTION 'a transfer must be a positive amount' USING ERRCODE = 'check_violation';
    END IF;
    IF p_from = p_to THEN
        RAISE EXCEPTION 'a transfer needs two different accounts' USING ERRCODE = 'check_violation';
    END IF;
    IF p_external_id IS NOT NULL THEN
        SELECT * INTO earlier FROM transfers WHERE external_id = p_external_id;
        IF FOUND THEN
            IF (earlier.from_account_id, earlier.to_account_id, earlier.amount)
               IS DISTINCT FROM (p_from, p_to, p_amount) THEN
                RAISE EXCEPTION 'external id % was already used for a different transfer (%)',
                    p_external_id, earlier.id USING ERRCODE = 'unique_violation';
            END IF;
            RETURN earlier.id;
        END IF;
    END IF;
    PERFORM 1 FROM accounts WHERE id = LEAST(p_from, p_to) FOR UPDATE;
    PERFORM 1 FROM accounts WHERE id = GREATEST(p_from, p_to) FOR UPDATE;
    SELECT id, name, status, limit_basis, transfers INTO src FROM accounts WHERE id = p_from;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_from USING ERRCODE = 'no_data_found';
    END IF;
    SELECT id, name, status, transfers INTO dst FROM accounts WHERE id = p_to;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_to USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT ocs_transfers_allowed(p_from) THEN
        RAISE EXCEPTION 'account % may not transfer funds (transfers: %)', src.name,
            CASE src.transfers WHEN 'class' THEN 'as its class says, no' ELSE src.transfers END
            USING ERRCODE = 'OC003';
    END IF;
    IF NOT ocs_transfers_allowed(p_to) THEN
        RAISE EXCEPTION 'account % may not receive transfers (transfers: %)', dst.name,
            CASE dst.transfers WHEN 'class' THEN 'as its class says, no' ELSE dst.transfers END
            USING ERRCODE = 'OC003';
    END IF;
    IF src.status <> 'active' THEN
        RAISE EXCEPTION 'account % is %: it cannot transfer funds', src.name, src.status
            USING ERRCODE = 'OC003';
    END IF;
    IF dst.status = 'closed' THEN
        RAISE EXCEPTION 'account % is closed: it cannot receive funds', dst.name
            USING ERRCODE = 'OC003';
    END IF;
    IF src.limit_basis = 'unbilled' THEN
        -- Its credit is measured on unbilled usage, which a transfer does not lower.
        RAISE EXCEPTION 'account % is on the unbilled basis: it has no balance to transfer',
            src.name USING ERRCODE = 'OC003';
    END IF;
    held := ocs_held_credit(p_from, v_now);
    available := ocs_available_credit(p_from, v_now) - held;
    IF available < p_amount THEN
        IF held > 0 THEN
            RAISE EXCEPTION 'account % has % available (% more is held by % running sessions); '
                'a transfer of % needs more', src.name, ocs_money_text(available),
                ocs_money_text(held), ocs_running_sessions(p_from, v_now),
                ocs_money_text(p_amount) USING ERRCODE = 'OC002';
        END IF;
        RAISE EXCEPTION 'account % has % available; a transfer of % needs more', src.name,
            ocs_money_text(available), ocs_money_text(p_amount) USING ERRCODE = 'OC002';
    END IF;
    INSERT INTO transfers (from_account_id, to_account_id, amount, external_id, operator_id,
                           changed_by, note, created_at)
    VALUES (p_from, p_to, p_amount, p_external_id, p_operator, who, p_note, v_now)
    RETURNING id INTO new_id;
    INSERT INTO ledger_entries (account_id, kind, amount, operator_id, changed_by, note,
                                transfer_id, created_at)
    VALUES (p_from, 'transfer_out', -p_amount, p_operator, who,
            COALESCE(p_note, 'transfer to ' || dst.name), new_id, v_now),
           (p_to, 'transfer_in', p_amount, p_operator, who,
            COALESCE(p_note, 'transfer from ' || src.name), new_id, v_now);
    RETURN new_id;
END $$;

-- A refund may not take credit that running sessions hold (refunds beyond the available credit
-- of an account that holds nothing stay the operator's call, as before).
CREATE FUNCTION ocs_refund_check_held() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    held numeric := ocs_held_credit(NEW.account_id, NEW.created_at);
    available numeric;
BEGIN
    IF held <= 0 THEN
        RETURN NEW;
    END IF;
    available := ocs_available_credit(NEW.account_id, NEW.created_at) - held;
    IF available + NEW.amount < 0 THEN
        RAISE EXCEPTION 'account % has % available (% more is held by % running sessions); '
            'a refund of % needs more',
            (SELECT name FROM accounts WHERE id = NEW.account_id), ocs_money_text(available),
            ocs_money_text(held), ocs_running_sessions(NEW.account_id, NEW.created_at),
            ocs_money_text(-NEW.amount) USING ERRCODE = 'OC002';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_entries_refund_held BEFORE INSERT ON ledger_entries
    FOR EACH ROW WHEN (NEW.kind = 'refund') EXECUTE FUNCTION ocs_refund_check_held();
