-- 0002: operators' rules (seed 004), warning thresholds and the outbox (seed 001), transfers
-- between subscribers (seed 001), prepaid periods (seed 003).
--
-- Every rule is enforced here, inside the writing transaction, so that every writer is bound by
-- it: the ocs CLI, the customer's own billing system, a psql session. Refusals by a business rule
-- carry SQLSTATE class 'OC' so that clients can tell them from bugs and show the message as is:
--   OC001  an operator's allowance or limit would be exceeded
--   OC002  the sender does not have the available funds
--   OC003  not allowed (transfers disabled, the account is blocked or closed)
-- Bad arguments are 'check_violation', unknown accounts or operators 'no_data_found'.
--
-- Functions that depend on the time take p_now (NULL or left out: now()), so tests and batch
-- back-fills can say when. Money is numeric(20,6); percentages numeric(7,2).

-- --- helpers -----------------------------------------------------------------------------------

-- Money for people and messages: at least two decimals, more only when they matter.
CREATE FUNCTION ocs_money_text(p numeric) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN scale(trim_scale(p)) <= 2 THEN round(p, 2)::text ELSE trim_scale(p)::text END
$$;

-- A percentage of a positive permanent limit, truncated to the micro-unit as the core does
-- (credit_limit * percent_bp // 10000); nothing for a limit that is not positive (seed 001).
CREATE FUNCTION ocs_percent_of_limit(p_limit numeric, p_percent numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_limit > 0 THEN trunc(p_limit * p_percent / 100, 6) ELSE 0 END
$$;

-- The permanent limit plus the temporary increase while it counts (now < valid_until), as
-- DESIGN §1 and ocs.core.credit.effective_credit_limit compute it.
CREATE FUNCTION ocs_effective_credit_limit(p_account bigint, p_now timestamptz DEFAULT NULL)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT a.credit_limit + COALESCE((
        SELECT COALESCE(tl.amount, ocs_percent_of_limit(a.credit_limit, tl.percent))
        FROM temporary_credit_limits tl
        WHERE tl.account_id = a.id AND tl.revoked_at IS NULL
          AND tl.valid_until > COALESCE(p_now, now())), 0)
    FROM accounts a WHERE a.id = p_account
$$;

-- Available credit (DESIGN §1) without reservations, which only the daemon knows:
--   balance basis:  balance + effective_limit - min_balance
--   unbilled basis: effective_limit - unbilled usage of the current month in the account's zone
CREATE FUNCTION ocs_available_credit(p_account bigint, p_now timestamptz DEFAULT NULL)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN a.limit_basis = 'unbilled' THEN
            ocs_effective_credit_limit(a.id, p_now)
            - CASE WHEN a.unbilled_period IS NULL
                     OR a.unbilled_period
                        < date_trunc('month', COALESCE(p_now, now()) AT TIME ZONE a.time_zone)::date
                   THEN 0 ELSE a.unbilled END
        ELSE a.balance + ocs_effective_credit_limit(a.id, p_now) - a.min_balance END
    FROM accounts a WHERE a.id = p_account
$$;

-- What the balance can still pay (the balance basis whatever the account's basis): the prepaid
-- period charge is covered while this is >= 0 (Splynx: the minimum balance must remain).
CREATE FUNCTION ocs_balance_funds(p_account bigint, p_now timestamptz DEFAULT NULL)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT a.balance + ocs_effective_credit_limit(a.id, p_now) - a.min_balance
    FROM accounts a WHERE a.id = p_account
$$;

-- --- operators ---------------------------------------------------------------------------------
-- A NULL allowance means "no cap"; 0 means "none at all". Both temporary-increase caps may be
-- set: then both apply.

ALTER TABLE operators
    ADD CONSTRAINT operators_max_temp_duration_not_negative
        CHECK (max_temp_duration >= interval '0');

-- Credits and refunds per operator and local day (the operator's time zone), kept by the ledger
-- trigger so that the daily limit check is one locked row, never a sum over the ledger.
CREATE TABLE operator_daily_usage (
    operator_id  bigint NOT NULL REFERENCES operators (id),
    day          date NOT NULL,
    used         numeric(20, 6) NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (operator_id, day)
);

-- --- accounts: classes, transfers, ocs's own block ----------------------------------------------

-- Subscriber-to-subscriber transfers (seed 001) are allowed per account: yes, no, or as the
-- account's class says. Both ledger rows of a transfer point at one transfers row.
CREATE TABLE account_classes (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL UNIQUE CHECK (name <> ''),
    transfers_allowed  boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE accounts
    ADD COLUMN account_class_id bigint REFERENCES account_classes (id),
    -- 'yes', 'no', or 'class': as the account's class says (no class: no).
    ADD COLUMN transfers text NOT NULL DEFAULT 'class' CHECK (transfers IN ('yes', 'no', 'class')),
    -- Why the account is blocked when ocs blocked it ('prepaid_unpaid'), so that a payment lifts
    -- only ocs's own block, never one an operator set.
    ADD COLUMN blocked_reason text;

CREATE TABLE transfers (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_account_id  bigint NOT NULL REFERENCES accounts (id),
    to_account_id    bigint NOT NULL REFERENCES accounts (id),
    amount           numeric(20, 6) NOT NULL CHECK (amount > 0),
    external_id      text UNIQUE CHECK (external_id <> ''),
    operator_id      bigint REFERENCES operators (id),
    changed_by       text NOT NULL DEFAULT current_user,
    note             text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (from_account_id <> to_account_id)
);
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION ocs_forbid_change();

-- --- the ledger: who, and the operators' credit/refund limits ----------------------------------

-- changed_by: the login or database role that wrote the row, beside the operator it names.
ALTER TABLE ledger_entries
    ADD COLUMN changed_by text DEFAULT current_user,
    ADD COLUMN transfer_id bigint REFERENCES transfers (id);
CREATE INDEX ledger_entries_transfer ON ledger_entries (transfer_id) WHERE transfer_id IS NOT NULL;

-- Seed 004: manual credits, promotional credits and refunds count towards the operator's daily
-- and per-transaction credit/refund limits; payments and card charges do not. The day is the
-- local date of created_at in the operator's time zone, so the usage resets at their midnight.
-- A row that names no operator is the business owner's own act (its changed_by says which
-- database role wrote it) and no operator's limit applies; the ocs CLI always names one for
-- credits and refunds.
CREATE FUNCTION ocs_ledger_operator_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    op operators%ROWTYPE;
    what text := replace(NEW.kind, '_', ' ');
BEGIN
    IF NEW.kind NOT IN ('credit', 'promotional_credit', 'refund') OR NEW.operator_id IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT * INTO op FROM operators WHERE id = NEW.operator_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'operator % does not exist', NEW.operator_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF op.transaction_credit_limit IS NOT NULL AND abs(NEW.amount) > op.transaction_credit_limit
    THEN
        RAISE EXCEPTION 'operator % may credit or refund at most % per transaction; this % is %',
            op.name, ocs_money_text(op.transaction_credit_limit), what,
            ocs_money_text(abs(NEW.amount))
            USING ERRCODE = 'OC001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_entries_operator_check BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ocs_ledger_operator_check();

-- The daily sum is kept AFTER INSERT so that a row skipped by ON CONFLICT (external_id) DO
-- NOTHING is not counted. The upsert locks the (operator, day) row: concurrent credits by the
-- same operator queue here and each sees the sum the previous one committed.
CREATE FUNCTION ocs_ledger_operator_usage() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    op operators%ROWTYPE;
    local_day date;
    total numeric;
    v_amount numeric := abs(NEW.amount);
BEGIN
    SELECT * INTO op FROM operators WHERE id = NEW.operator_id;
    local_day := (NEW.created_at AT TIME ZONE op.time_zone)::date;
    INSERT INTO operator_daily_usage AS u (operator_id, day, used)
        VALUES (op.id, local_day, v_amount)
        ON CONFLICT (operator_id, day) DO UPDATE SET used = u.used + EXCLUDED.used
        RETURNING used INTO total;
    IF op.daily_credit_limit IS NOT NULL AND total > op.daily_credit_limit THEN
        RAISE EXCEPTION
            'operator % has used % of the daily credit/refund limit % on % (%); this % of % '
            'would take it to %',
            op.name, ocs_money_text(total - v_amount), ocs_money_text(op.daily_credit_limit),
            local_day, op.time_zone, replace(NEW.kind, '_', ' '), ocs_money_text(v_amount),
            ocs_money_text(total)
            USING ERRCODE = 'OC001',
                  HINT = 'the usage starts again at midnight in the operator''s time zone';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_operator_usage AFTER INSERT ON ledger_entries
    FOR EACH ROW
    WHEN (NEW.kind IN ('credit', 'promotional_credit', 'refund') AND NEW.operator_id IS NOT NULL)
    EXECUTE FUNCTION ocs_ledger_operator_usage();

-- --- temporary credit limits with the operator's allowance (seed 004) ---------------------------

DROP FUNCTION ocs_set_temporary_credit_limit(
    bigint, numeric, numeric, timestamptz, bigint, text, text);

-- One active temporary increase per account: a new one replaces it. An operator may give at most
-- their allowance (amount and/or percentage of the permanent limit) for at most their maximum
-- duration; a refusal names every rule the request breaks. Without an operator (the business
-- owner acting directly) no allowance applies; the history records who it was.
CREATE FUNCTION ocs_set_temporary_credit_limit(
    p_account bigint, p_amount numeric, p_percent numeric, p_valid_until timestamptz,
    p_operator bigint, p_changed_by text, p_reason text, p_now timestamptz DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    acct record;
    op operators%ROWTYPE;
    v_now timestamptz := COALESCE(p_now, now());
    increase numeric;
    allowed numeric;
    allowed_text text[] := '{}';
    refusals text[] := '{}';
    new_id bigint;
BEGIN
    SELECT id, name, credit_limit INTO acct FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account USING ERRCODE = 'no_data_found';
    END IF;
    IF (p_amount IS NULL) = (p_percent IS NULL) THEN
        RAISE EXCEPTION 'a temporary increase is either an amount or a percentage'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p_amount < 0 OR p_percent < 0 THEN
        RAISE EXCEPTION 'a temporary increase cannot be negative' USING ERRCODE = 'check_violation';
    END IF;
    IF p_valid_until <= v_now THEN
        RAISE EXCEPTION 'a temporary increase must end in the future (until %)', p_valid_until
            USING ERRCODE = 'check_violation';
    END IF;
    IF p_percent IS NOT NULL AND acct.credit_limit <= 0 THEN
        RAISE EXCEPTION 'a percentage increase needs a positive permanent credit limit '
            '(account % has %)', acct.name, ocs_money_text(acct.credit_limit)
            USING ERRCODE = 'check_violation';
    END IF;
    increase := COALESCE(p_amount, ocs_percent_of_limit(acct.credit_limit, p_percent));

    IF p_operator IS NOT NULL THEN
        SELECT * INTO op FROM operators WHERE id = p_operator;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'operator % does not exist', p_operator
                USING ERRCODE = 'no_data_found';
        END IF;
        IF op.max_temp_increase_amount IS NOT NULL THEN
            allowed := op.max_temp_increase_amount;
            allowed_text := allowed_text || ocs_money_text(op.max_temp_increase_amount);
        END IF;
        IF op.max_temp_increase_percent IS NOT NULL THEN
            allowed := LEAST(allowed,
                             ocs_percent_of_limit(acct.credit_limit, op.max_temp_increase_percent));
            allowed_text := allowed_text || format('%s%% of the permanent limit %s',
                trim_scale(op.max_temp_increase_percent), ocs_money_text(acct.credit_limit));
        END IF;
        IF allowed IS NOT NULL AND increase > allowed THEN
            refusals := refusals || format('the amount %s is more than the %s allowed (%s)',
                ocs_money_text(increase), ocs_money_text(allowed),
                array_to_string(allowed_text, ' and '));
        END IF;
        IF op.max_temp_duration IS NOT NULL AND p_valid_until - v_now > op.max_temp_duration THEN
            refusals := refusals || format('the duration %s is longer than the %s allowed',
                -- to the minute: "40 days", not "39 days 23:59:59.9994"
                justify_hours(date_trunc('minute', p_valid_until - v_now + interval '30 seconds')),
                op.max_temp_duration);
        END IF;
        IF cardinality(refusals) > 0 THEN
            RAISE EXCEPTION 'operator % may not give account % this temporary increase: %',
                op.name, acct.name, array_to_string(refusals, '; ')
                USING ERRCODE = 'OC001',
                      HINT = 'an operator with a larger allowance can give it';
        END IF;
    END IF;

    UPDATE temporary_credit_limits SET revoked_at = v_now
        WHERE account_id = p_account AND revoked_at IS NULL;
    INSERT INTO temporary_credit_limits
        (account_id, amount, percent, valid_from, valid_until, operator_id, changed_by, reason)
    VALUES (p_account, p_amount, p_percent, v_now, p_valid_until, p_operator,
            COALESCE(p_changed_by, current_user), p_reason)
    RETURNING id INTO new_id;
    INSERT INTO credit_limit_history
        (account_id, changed_at, operator_id, changed_by, temporary, old_limit, new_limit,
         temp_amount, temp_percent, valid_until, reason)
    VALUES (p_account, v_now, p_operator, COALESCE(p_changed_by, current_user), true,
            acct.credit_limit, acct.credit_limit, p_amount, p_percent, p_valid_until, p_reason);
    RETURN new_id;
END $$;

-- --- warning thresholds and the outbox (seed 001) ----------------------------------------------

-- Events for the outside world (webhooks). A deliverer claims due rows with FOR UPDATE SKIP
-- LOCKED and marks them delivered in the same transaction, so the outbox sees each delivered once.
CREATE TABLE outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic            text NOT NULL CHECK (topic <> ''),
    account_id       bigint REFERENCES accounts (id),
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    delivered_at     timestamptz,
    abandoned_at     timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;

CREATE FUNCTION ocs_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ocs_outbox', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION ocs_notify_outbox();

-- A threshold is an available-credit figure: an amount, or (postpaid only) a percentage of the
-- positive permanent limit. When the available credit falls to or below it, one outbox row is
-- written and the threshold is disarmed; it is re-armed when the figure goes back above.
CREATE TABLE account_warning_thresholds (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    amount      numeric(20, 6),
    percent     numeric(7, 2) CHECK (percent >= 0),
    armed       boolean NOT NULL DEFAULT true,
    fired_at    timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((amount IS NULL) <> (percent IS NULL))
);
CREATE UNIQUE INDEX account_warning_thresholds_amount
    ON account_warning_thresholds (account_id, amount) WHERE amount IS NOT NULL;
CREATE UNIQUE INDEX account_warning_thresholds_percent
    ON account_warning_thresholds (account_id, percent) WHERE percent IS NOT NULL;

CREATE FUNCTION ocs_threshold_level(p_limit numeric, p_amount numeric, p_percent numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_amount IS NOT NULL THEN p_amount
                WHEN p_limit > 0 THEN ocs_percent_of_limit(p_limit, p_percent) END
$$;

-- Compare the account's available credit with its thresholds; returns how many fired.
-- On the unbilled basis the figure rises at the month's start without any write, so a threshold
-- that fired in an earlier month counts as re-armed.
CREATE FUNCTION ocs_evaluate_warning_thresholds(p_account bigint, p_now timestamptz DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    acct record;
    v_now timestamptz := COALESCE(p_now, now());
    figure numeric;
    t record;
    level numeric;
    is_armed boolean;
    fired integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM account_warning_thresholds WHERE account_id = p_account) THEN
        RETURN 0;
    END IF;
    SELECT id, name, credit_limit, limit_basis, time_zone INTO acct
        FROM accounts WHERE id = p_account;
    figure := ocs_available_credit(p_account, v_now);
    FOR t IN SELECT * FROM account_warning_thresholds WHERE account_id = p_account
             ORDER BY amount DESC NULLS LAST, percent DESC FOR UPDATE
    LOOP
        level := ocs_threshold_level(acct.credit_limit, t.amount, t.percent);
        CONTINUE WHEN level IS NULL;  -- a percentage while the limit is not positive
        is_armed := t.armed OR (
            acct.limit_basis = 'unbilled' AND t.fired_at IS NOT NULL
            AND date_trunc('month', t.fired_at AT TIME ZONE acct.time_zone)
                < date_trunc('month', v_now AT TIME ZONE acct.time_zone));
        IF is_armed AND figure <= level THEN
            UPDATE account_warning_thresholds SET armed = false, fired_at = v_now WHERE id = t.id;
            INSERT INTO outbox (topic, account_id, payload, created_at, next_attempt_at)
            VALUES (
                CASE WHEN acct.credit_limit > 0 THEN 'credit_limit_warning' ELSE 'low_funds' END,
                p_account,
                jsonb_build_object(
                    'event', CASE WHEN acct.credit_limit > 0 THEN 'credit_limit_warning'
                                  ELSE 'low_funds' END,
                    'account_id', p_account,
                    'account', acct.name,
                    'threshold', COALESCE(ocs_money_text(t.amount), trim_scale(t.percent) || '%'),
                    'level', ocs_money_text(level),
                    'available', ocs_money_text(figure),
                    'available_micros', (figure * 1000000)::bigint,
                    'credit_limit', ocs_money_text(acct.credit_limit),
                    'at', v_now),
                v_now, v_now);
            fired := fired + 1;
        ELSIF NOT t.armed AND figure > level THEN
            UPDATE account_warning_thresholds SET armed = true WHERE id = t.id;
        END IF;
    END LOOP;
    RETURN fired;
END $$;

-- Replace an account's thresholds. A new threshold starts armed only if the figure is above it
-- now: a warning is about crossing, not about being below when the list was set.
CREATE FUNCTION ocs_set_warning_thresholds(
    p_account bigint, p_amounts numeric[], p_percents numeric[], p_now timestamptz DEFAULT NULL
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    acct record;
    figure numeric;
BEGIN
    SELECT id, name, credit_limit INTO acct FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account USING ERRCODE = 'no_data_found';
    END IF;
    IF cardinality(p_percents) > 0 AND acct.credit_limit <= 0 THEN
        RAISE EXCEPTION 'account % is prepaid: its warning thresholds are amounts of available '
            'funds, not percentages (those need a positive permanent credit limit)', acct.name
            USING ERRCODE = 'check_violation';
    END IF;
    figure := ocs_available_credit(p_account, p_now);
    DELETE FROM account_warning_thresholds WHERE account_id = p_account;
    INSERT INTO account_warning_thresholds (account_id, amount, armed)
        SELECT DISTINCT p_account, a, figure > a FROM unnest(p_amounts) AS a;
    INSERT INTO account_warning_thresholds (account_id, percent, armed)
        SELECT DISTINCT p_account, p, figure > ocs_percent_of_limit(acct.credit_limit, p)
        FROM unnest(p_percents) AS p;
END $$;

-- Evaluated when the transaction commits (deferred), so that it sees the final figure: replacing
-- a temporary increase (revoke, then insert) must not look like a drop and a rise. Every change
-- of balance, unbilled usage or limits goes through these, whoever writes it.
CREATE FUNCTION ocs_thresholds_after_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'accounts' THEN
        PERFORM ocs_evaluate_warning_thresholds(NEW.id);
    ELSE
        PERFORM ocs_evaluate_warning_thresholds(NEW.account_id);
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER accounts_warning_thresholds
    AFTER UPDATE OF balance, unbilled, unbilled_period, credit_limit, min_balance, limit_basis
    ON accounts DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.balance IS DISTINCT FROM NEW.balance
          OR OLD.unbilled IS DISTINCT FROM NEW.unbilled
          OR OLD.unbilled_period IS DISTINCT FROM NEW.unbilled_period
          OR OLD.credit_limit IS DISTINCT FROM NEW.credit_limit
          OR OLD.min_balance IS DISTINCT FROM NEW.min_balance
          OR OLD.limit_basis IS DISTINCT FROM NEW.limit_basis)
    EXECUTE FUNCTION ocs_thresholds_after_change();
CREATE CONSTRAINT TRIGGER temporary_credit_limits_warning_thresholds
    AFTER INSERT OR UPDATE ON temporary_credit_limits DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ocs_thresholds_after_change();

-- A temporary increase stops counting at valid_until with no write (DESIGN §1), so nothing
-- would notice the figure drop. The periodic billing run marks increases that ended; the update
-- re-evaluates the thresholds (trigger above) and announces the account (ocs_touch_account).
ALTER TABLE temporary_credit_limits ADD COLUMN ended_seen_at timestamptz;
CREATE INDEX temporary_credit_limits_ending ON temporary_credit_limits (valid_until)
    WHERE revoked_at IS NULL AND ended_seen_at IS NULL;

CREATE FUNCTION ocs_see_ended_increases(p_now timestamptz DEFAULT NULL, p_batch integer DEFAULT 500)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := COALESCE(p_now, now());
    r record;
    seen integer := 0;
BEGIN
    -- Account order, so that the account locks are taken in the order transfers take them.
    FOR r IN SELECT id FROM temporary_credit_limits
             WHERE revoked_at IS NULL AND ended_seen_at IS NULL AND valid_until <= v_now
             ORDER BY account_id LIMIT p_batch FOR UPDATE SKIP LOCKED
    LOOP
        UPDATE temporary_credit_limits SET ended_seen_at = v_now WHERE id = r.id;
        seen := seen + 1;
    END LOOP;
    RETURN seen;
END $$;

-- --- subscriber-to-subscriber transfers (seed 001) ---------------------------------------------

CREATE FUNCTION ocs_transfers_allowed(p_account bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT CASE a.transfers WHEN 'yes' THEN true WHEN 'no' THEN false
                ELSE COALESCE(c.transfers_allowed, false) END
    FROM accounts a LEFT JOIN account_classes c ON c.id = a.account_class_id
    WHERE a.id = p_account
$$;

-- Move funds from one account to another in one transaction. Both rows are locked in id order
-- (so two opposite transfers cannot deadlock) before the sender's available credit is read, so
-- concurrent transfers draining one account queue and cannot together exceed its funds. The
-- same external id again returns the first transfer unchanged.
CREATE FUNCTION ocs_transfer(
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
    available := ocs_available_credit(p_from, v_now);
    IF available < p_amount THEN
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

-- --- prepaid periods (seed 003, Splynx) --------------------------------------------------------

-- A status change that does not name a reason clears ocs's own reason, so that a payment never
-- lifts a block an operator set later.
CREATE FUNCTION ocs_status_reason() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status
       AND NEW.blocked_reason IS NOT DISTINCT FROM OLD.blocked_reason THEN
        NEW.blocked_reason := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_status_reason BEFORE UPDATE OF status ON accounts
    FOR EACH ROW EXECUTE FUNCTION ocs_status_reason();

-- A recurring service charged in advance: monthly (period_days NULL) or every N days, periods
-- counted from anchor in the account's time zone. next_period is the index of the next period
-- to charge. If the balance cannot cover a charge, the account is blocked once grace_period has
-- passed since the period started, and unblocked when a payment covers it.
CREATE TABLE prepaid_services (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    bigint NOT NULL REFERENCES accounts (id),
    name          text NOT NULL CHECK (name <> ''),
    amount        numeric(20, 6) NOT NULL CHECK (amount > 0),
    period_days   integer CHECK (period_days >= 1),
    anchor        timestamptz NOT NULL,
    grace_period  interval NOT NULL DEFAULT interval '0' CHECK (grace_period >= interval '0'),
    next_period   integer NOT NULL DEFAULT 0 CHECK (next_period >= 0),
    active        boolean NOT NULL DEFAULT true,
    operator_id   bigint REFERENCES operators (id),
    changed_by    text NOT NULL DEFAULT current_user,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);

-- One charge per service and period: the unique key makes a second run a no-op.
CREATE TABLE prepaid_charges (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id       bigint NOT NULL REFERENCES prepaid_services (id),
    account_id       bigint NOT NULL REFERENCES accounts (id),
    period           integer NOT NULL,
    period_start     timestamptz NOT NULL,
    period_end       timestamptz NOT NULL,
    amount           numeric(20, 6) NOT NULL CHECK (amount > 0),
    ledger_entry_id  bigint NOT NULL REFERENCES ledger_entries (id),
    charged_at       timestamptz NOT NULL,
    block_after      timestamptz NOT NULL,
    settled_at       timestamptz,  -- when the account covered it: at once, or on a later payment
    UNIQUE (service_id, period),
    UNIQUE (service_id, period_start)
);
CREATE INDEX prepaid_charges_unsettled ON prepaid_charges (account_id) WHERE settled_at IS NULL;

CREATE FUNCTION ocs_prepaid_period_start(
    p_anchor timestamptz, p_days integer, p_zone text, p_period integer
) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT ((p_anchor AT TIME ZONE p_zone)
            + CASE WHEN p_days IS NULL THEN make_interval(months => p_period)
                   ELSE make_interval(days => p_days * p_period) END) AT TIME ZONE p_zone
$$;

-- Mark the account's unpaid charges paid if its balance covers them now, and lift ocs's own
-- block. Returns true when the account was unblocked. Called by the ledger trigger (so a payment
-- unblocks at once) and by the periodic run (which also sees limit changes).
CREATE FUNCTION ocs_prepaid_settle(p_account bigint, p_now timestamptz DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    acct record;
    v_now timestamptz := COALESCE(p_now, now());
BEGIN
    IF NOT EXISTS (SELECT 1 FROM prepaid_charges
                   WHERE account_id = p_account AND settled_at IS NULL) THEN
        RETURN false;
    END IF;
    SELECT status, blocked_reason INTO acct FROM accounts WHERE id = p_account FOR UPDATE;
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

CREATE FUNCTION ocs_ledger_settle_prepaid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ocs_prepaid_settle(NEW.account_id, NEW.created_at);
    RETURN NULL;
END $$;
-- Named to run after ledger_entries_apply (same event, alphabetical order): the balance is new.
CREATE TRIGGER ledger_entries_settle_prepaid AFTER INSERT ON ledger_entries
    FOR EACH ROW WHEN (NEW.amount > 0) EXECUTE FUNCTION ocs_ledger_settle_prepaid();

-- Charge every due period of up to p_batch services (each once; periods missed while nothing ran
-- are charged too), then settle or block accounts with unpaid charges. Services being charged by
-- a concurrent run are skipped (SKIP LOCKED), not charged twice. Closed accounts are not charged;
-- blocked ones are (as in Splynx, the service is suspended, not ended). Call it until
-- services < p_batch.
CREATE FUNCTION ocs_run_prepaid_periods(p_now timestamptz DEFAULT NULL, p_batch integer DEFAULT 500)
RETURNS TABLE (services integer, charged integer, blocked integer, unblocked integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := COALESCE(p_now, now());
    s record;
    n integer;
    start_at timestamptz;
    end_at timestamptz;
    entry bigint;
    acct record;
BEGIN
    services := 0; charged := 0; blocked := 0; unblocked := 0;
    FOR s IN
        SELECT ps.*, a.time_zone, a.name AS account_name
        FROM prepaid_services ps JOIN accounts a ON a.id = ps.account_id
        WHERE ps.active AND a.status <> 'closed'
          AND ocs_prepaid_period_start(ps.anchor, ps.period_days, a.time_zone, ps.next_period)
              <= v_now
        -- Account order: concurrent runs take account locks in the same order.
        ORDER BY ps.account_id, ps.id
        LIMIT p_batch
        FOR UPDATE OF ps SKIP LOCKED
    LOOP
        services := services + 1;
        n := s.next_period;
        LOOP
            start_at := ocs_prepaid_period_start(s.anchor, s.period_days, s.time_zone, n);
            EXIT WHEN start_at > v_now;
            end_at := ocs_prepaid_period_start(s.anchor, s.period_days, s.time_zone, n + 1);
            INSERT INTO ledger_entries (account_id, kind, amount, external_id, operator_id,
                                        changed_by, note, created_at)
            VALUES (s.account_id, 'service_charge', -s.amount,
                    format('prepaid:%s:%s', s.id, n), s.operator_id, s.changed_by,
                    format('%s %s to %s', s.name,
                           to_char(start_at AT TIME ZONE s.time_zone, 'YYYY-MM-DD'),
                           to_char(end_at AT TIME ZONE s.time_zone, 'YYYY-MM-DD')),
                    v_now)
            ON CONFLICT (external_id) DO NOTHING
            RETURNING id INTO entry;
            IF entry IS NOT NULL THEN
                INSERT INTO prepaid_charges (service_id, account_id, period, period_start,
                                             period_end, amount, ledger_entry_id, charged_at,
                                             block_after)
                VALUES (s.id, s.account_id, n, start_at, end_at, s.amount, entry, v_now,
                        start_at + s.grace_period);
                charged := charged + 1;
            END IF;
            n := n + 1;
        END LOOP;
        UPDATE prepaid_services SET next_period = n WHERE id = s.id;
    END LOOP;

    FOR acct IN
        SELECT DISTINCT account_id FROM prepaid_charges WHERE settled_at IS NULL ORDER BY 1
    LOOP
        -- This run may hold locks on accounts it charged above; waiting here for an account
        -- another run or a payment holds could deadlock. A busy account is left to the
        -- payment's own trigger or to the next run.
        PERFORM 1 FROM accounts WHERE id = acct.account_id FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        IF ocs_prepaid_settle(acct.account_id, v_now) THEN
            unblocked := unblocked + 1;
        ELSIF EXISTS (SELECT 1 FROM prepaid_charges
                      WHERE account_id = acct.account_id AND settled_at IS NULL
                        AND block_after <= v_now) THEN
            UPDATE accounts SET status = 'blocked', blocked_reason = 'prepaid_unpaid'
                WHERE id = acct.account_id AND status = 'active'
                  AND ocs_balance_funds(id, v_now) < 0;
            IF FOUND THEN
                blocked := blocked + 1;
            END IF;
        END IF;
    END LOOP;
    RETURN NEXT;
END $$;
