-- 0001: accounts, identities, ledger, usage, tariffs, temporary limits, limit history, operators.
--
-- Money is numeric(20,6) here and integer micro-units in the daemon. The balance is kept on the
-- account row by triggers on the append-only ledger and usage tables, so a snapshot is one
-- indexed row read, never a sum over history. Every trigger that changes what a decision depends
-- on bumps accounts.changed_at and NOTIFYs 'ocs_account_changed' with the account id.

CREATE TABLE operators (
    id                          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                        text NOT NULL UNIQUE CHECK (name <> ''),
    time_zone                   text NOT NULL DEFAULT 'UTC',
    max_temp_increase_amount    numeric(20, 6) CHECK (max_temp_increase_amount >= 0),
    max_temp_increase_percent   numeric(7, 2) CHECK (max_temp_increase_percent >= 0),
    max_temp_duration           interval,
    daily_credit_limit          numeric(20, 6) CHECK (daily_credit_limit >= 0),
    transaction_credit_limit    numeric(20, 6) CHECK (transaction_credit_limit >= 0),
    created_at                  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tariffs (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                 text NOT NULL UNIQUE CHECK (name <> ''),
    price_per_minute     numeric(20, 6) NOT NULL DEFAULT 0 CHECK (price_per_minute >= 0),
    billing_increment_s  integer NOT NULL DEFAULT 1 CHECK (billing_increment_s >= 1),
    minimum_s            integer NOT NULL DEFAULT 0 CHECK (minimum_s >= 0),
    price_per_mb         numeric(20, 6) NOT NULL DEFAULT 0 CHECK (price_per_mb >= 0),
    connection_fee       numeric(20, 6) NOT NULL DEFAULT 0 CHECK (connection_fee >= 0),
    price_per_event      numeric(20, 6) NOT NULL DEFAULT 0 CHECK (price_per_event >= 0),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                   text NOT NULL UNIQUE CHECK (name <> ''),
    status                 text NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'blocked', 'closed')),
    credit_limit           numeric(20, 6) NOT NULL DEFAULT 0,
    min_balance            numeric(20, 6) NOT NULL DEFAULT 0,
    limit_basis            text NOT NULL DEFAULT 'balance'
                           CHECK (limit_basis IN ('balance', 'unbilled')),
    time_zone              text NOT NULL DEFAULT 'UTC',
    max_sessions           integer CHECK (max_sessions >= 0),
    max_setups_per_s       integer CHECK (max_setups_per_s >= 0),
    tariff_id              bigint REFERENCES tariffs (id),
    -- Maintained by triggers; never written by hand.
    balance                numeric(20, 6) NOT NULL DEFAULT 0,
    unbilled               numeric(20, 6) NOT NULL DEFAULT 0,
    unbilled_period        date,
    created_at             timestamptz NOT NULL DEFAULT now(),
    changed_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_changed_at ON accounts (changed_at);

-- A time zone name PostgreSQL does not know is refused at write time, not at decision time.
CREATE FUNCTION ocs_check_time_zone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM now() AT TIME ZONE NEW.time_zone;
    RETURN NEW;
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'unknown time zone "%"', NEW.time_zone USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER accounts_time_zone BEFORE INSERT OR UPDATE OF time_zone ON accounts
    FOR EACH ROW EXECUTE FUNCTION ocs_check_time_zone();
CREATE TRIGGER operators_time_zone BEFORE INSERT OR UPDATE OF time_zone ON operators
    FOR EACH ROW EXECUTE FUNCTION ocs_check_time_zone();

CREATE TABLE account_identities (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN (
                    'user_name', 'e164', 'imsi', 'sip_uri', 'nai', 'calling_station_id', 'private')),
    value       text NOT NULL CHECK (value <> ''),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, value)
);
CREATE INDEX account_identities_account ON account_identities (account_id);

-- Money in and out that is not usage. The sign of amount is the effect on the balance and must
-- agree with the kind. Rows are never updated or deleted: corrections are new rows.
CREATE TABLE ledger_entries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts (id),
    kind         text NOT NULL CHECK (kind IN (
                     'payment', 'card_charge', 'credit', 'promotional_credit', 'refund',
                     'transfer_in', 'transfer_out', 'adjustment', 'service_charge')),
    amount       numeric(20, 6) NOT NULL CHECK (amount <> 0),
    external_id  text UNIQUE CHECK (external_id <> ''),
    operator_id  bigint REFERENCES operators (id),
    note         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE
        WHEN kind IN ('payment', 'card_charge', 'credit', 'promotional_credit', 'transfer_in')
            THEN amount > 0
        WHEN kind IN ('refund', 'transfer_out', 'service_charge') THEN amount < 0
        ELSE true END)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, created_at);

-- Rated usage. idempotency_key makes a repeated stop/termination a no-op (ON CONFLICT DO NOTHING).
CREATE TABLE usage_records (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id       bigint NOT NULL REFERENCES accounts (id),
    idempotency_key  text NOT NULL UNIQUE CHECK (idempotency_key <> ''),
    source           text NOT NULL,
    session_id       text,
    seconds          bigint NOT NULL DEFAULT 0 CHECK (seconds >= 0),
    octets           bigint NOT NULL DEFAULT 0 CHECK (octets >= 0),
    events           bigint NOT NULL DEFAULT 0 CHECK (events >= 0),
    amount           numeric(20, 6) NOT NULL CHECK (amount >= 0),
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_account ON usage_records (account_id, occurred_at);

CREATE TABLE temporary_credit_limits (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts (id),
    amount       numeric(20, 6) CHECK (amount >= 0),
    percent      numeric(7, 2) CHECK (percent >= 0),
    valid_from   timestamptz NOT NULL DEFAULT now(),
    valid_until  timestamptz NOT NULL,
    operator_id  bigint REFERENCES operators (id),
    changed_by   text NOT NULL DEFAULT current_user,
    reason       text,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((amount IS NULL) <> (percent IS NULL)),
    CHECK (valid_until > valid_from)
);
-- One active (not revoked) temporary increase per account: a new one revokes the old.
CREATE UNIQUE INDEX temporary_credit_limits_one_active
    ON temporary_credit_limits (account_id) WHERE revoked_at IS NULL;

CREATE TABLE credit_limit_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts (id),
    changed_at      timestamptz NOT NULL DEFAULT now(),
    operator_id     bigint REFERENCES operators (id),
    changed_by      text NOT NULL DEFAULT current_user,
    temporary       boolean NOT NULL,
    old_limit       numeric(20, 6),
    new_limit       numeric(20, 6),
    temp_amount     numeric(20, 6),
    temp_percent    numeric(7, 2),
    valid_until     timestamptz,
    reason          text
);
CREATE INDEX credit_limit_history_account ON credit_limit_history (account_id, changed_at);

-- Append-only tables.
CREATE FUNCTION ocs_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never changed or deleted; write a correcting row', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ocs_forbid_change();
CREATE TRIGGER usage_records_append_only BEFORE UPDATE OR DELETE ON usage_records
    FOR EACH ROW EXECUTE FUNCTION ocs_forbid_change();
CREATE TRIGGER credit_limit_history_append_only BEFORE UPDATE OR DELETE ON credit_limit_history
    FOR EACH ROW EXECUTE FUNCTION ocs_forbid_change();

CREATE FUNCTION ocs_notify_account(account bigint) RETURNS void LANGUAGE sql AS $$
    SELECT pg_notify('ocs_account_changed', account::text);
$$;

-- Keep accounts.balance in step with the ledger.
CREATE FUNCTION ocs_apply_ledger_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET balance = balance + NEW.amount, changed_at = clock_timestamp()
        WHERE id = NEW.account_id;
    PERFORM ocs_notify_account(NEW.account_id);
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_entries_apply AFTER INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ocs_apply_ledger_entry();

-- Usage lowers the balance and adds to the unbilled amount of the monthly period (in the
-- account's time zone) it occurred in. Late usage for an older period only lowers the balance.
CREATE FUNCTION ocs_apply_usage_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    zone    text;
    period  date;
BEGIN
    SELECT time_zone INTO zone FROM accounts WHERE id = NEW.account_id FOR UPDATE;
    period := date_trunc('month', NEW.occurred_at AT TIME ZONE zone)::date;
    UPDATE accounts SET
        balance = balance - NEW.amount,
        unbilled = CASE
            WHEN unbilled_period IS NULL OR period > unbilled_period THEN NEW.amount
            WHEN period = unbilled_period THEN unbilled + NEW.amount
            ELSE unbilled END,
        unbilled_period = GREATEST(COALESCE(unbilled_period, period), period),
        changed_at = clock_timestamp()
        WHERE id = NEW.account_id;
    PERFORM ocs_notify_account(NEW.account_id);
    RETURN NEW;
END $$;
CREATE TRIGGER usage_records_apply AFTER INSERT ON usage_records
    FOR EACH ROW EXECUTE FUNCTION ocs_apply_usage_record();

-- Changes to what decides (limits, status, tariff, temporary increases) are announced too.
CREATE FUNCTION ocs_touch_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'accounts' THEN
        NEW.changed_at := clock_timestamp();
        PERFORM ocs_notify_account(NEW.id);
        RETURN NEW;
    END IF;
    UPDATE accounts SET changed_at = clock_timestamp() WHERE id = NEW.account_id;
    PERFORM ocs_notify_account(NEW.account_id);
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_touch BEFORE UPDATE OF status, credit_limit, min_balance, limit_basis,
    time_zone, max_sessions, max_setups_per_s, tariff_id ON accounts
    FOR EACH ROW EXECUTE FUNCTION ocs_touch_account();
CREATE TRIGGER temporary_credit_limits_touch AFTER INSERT OR UPDATE ON temporary_credit_limits
    FOR EACH ROW EXECUTE FUNCTION ocs_touch_account();
CREATE TRIGGER account_identities_touch AFTER INSERT ON account_identities
    FOR EACH ROW EXECUTE FUNCTION ocs_touch_account();

-- A tariff change touches every account on it.
CREATE FUNCTION ocs_touch_tariff_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET changed_at = clock_timestamp() WHERE tariff_id = NEW.id;
    PERFORM pg_notify('ocs_tariff_changed', NEW.id::text);
    RETURN NEW;
END $$;
CREATE TRIGGER tariffs_touch AFTER UPDATE ON tariffs
    FOR EACH ROW EXECUTE FUNCTION ocs_touch_tariff_accounts();

-- The snapshot the daemon caches: one row per account, money as integer micro-units so that
-- loading a million accounts creates no Decimal objects. The temporary increase is the active
-- one (not revoked, not yet ended); the daemon compares valid_until with its own clock.
CREATE VIEW account_snapshots AS
SELECT
    a.id AS account_id,
    a.name,
    a.status,
    (a.balance * 1000000)::bigint AS balance_micros,
    (a.credit_limit * 1000000)::bigint AS credit_limit_micros,
    (a.min_balance * 1000000)::bigint AS min_balance_micros,
    a.limit_basis,
    (a.unbilled * 1000000)::bigint AS unbilled_micros,
    a.unbilled_period,
    a.time_zone,
    a.max_sessions,
    a.max_setups_per_s,
    (t.price_per_minute * 1000000)::bigint AS price_per_minute_micros,
    COALESCE(t.billing_increment_s, 1) AS billing_increment_s,
    COALESCE(t.minimum_s, 0) AS minimum_s,
    (t.price_per_mb * 1000000)::bigint AS price_per_mb_micros,
    (t.connection_fee * 1000000)::bigint AS connection_fee_micros,
    (t.price_per_event * 1000000)::bigint AS price_per_event_micros,
    (tl.amount * 1000000)::bigint AS temp_amount_micros,
    (tl.percent * 100)::bigint AS temp_percent_bp,
    tl.valid_until AS temp_valid_until,
    a.changed_at
FROM accounts a
LEFT JOIN tariffs t ON t.id = a.tariff_id
LEFT JOIN temporary_credit_limits tl
    ON tl.account_id = a.id AND tl.revoked_at IS NULL AND tl.valid_until > now();

-- Limit changes go through these functions so that every writer keeps the history. Operator
-- permissions are checked here too once operators get their rules.
CREATE FUNCTION ocs_set_credit_limit(
    p_account bigint, p_limit numeric, p_operator bigint, p_changed_by text, p_reason text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    old numeric;
BEGIN
    SELECT credit_limit INTO old FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE accounts SET credit_limit = p_limit WHERE id = p_account;
    INSERT INTO credit_limit_history
        (account_id, operator_id, changed_by, temporary, old_limit, new_limit, reason)
    VALUES (p_account, p_operator, COALESCE(p_changed_by, current_user), false, old, p_limit, p_reason);
END $$;

CREATE FUNCTION ocs_set_temporary_credit_limit(
    p_account bigint, p_amount numeric, p_percent numeric, p_valid_until timestamptz,
    p_operator bigint, p_changed_by text, p_reason text
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    permanent numeric;
    new_id bigint;
BEGIN
    SELECT credit_limit INTO permanent FROM accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account USING ERRCODE = 'no_data_found';
    END IF;
    IF p_valid_until <= now() THEN
        RAISE EXCEPTION 'a temporary increase must end in the future (until %)', p_valid_until
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE temporary_credit_limits SET revoked_at = now()
        WHERE account_id = p_account AND revoked_at IS NULL;
    INSERT INTO temporary_credit_limits
        (account_id, amount, percent, valid_until, operator_id, changed_by, reason)
    VALUES (p_account, p_amount, p_percent, p_valid_until, p_operator,
            COALESCE(p_changed_by, current_user), p_reason)
    RETURNING id INTO new_id;
    INSERT INTO credit_limit_history
        (account_id, operator_id, changed_by, temporary, old_limit, new_limit,
         temp_amount, temp_percent, valid_until, reason)
    VALUES (p_account, p_operator, COALESCE(p_changed_by, current_user), true, permanent, permanent,
            p_amount, p_percent, p_valid_until, p_reason);
    RETURN new_id;
END $$;
