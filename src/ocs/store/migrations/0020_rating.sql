-- 0020: rating by destination (issue 13): currencies, rate decks, rates, time bands, rate plans,
-- and the rate plan of an account or of its class.
--
-- A rate deck maps destination prefixes (E.164 digits, '' for every number) to rates; a rate plan
-- is decks in priority order (the lowest priority number is tried first); an account uses its own
-- plan, else its class's, else its tariff as before. Rates are never edited in place: a new price
-- is a new row with a later effective_from, and the price of a call is the one in force when it
-- started. Amounts are numeric(20,6) in the plan's currency.
--
-- Refusals by a rule carry SQLSTATE class 'OC' (see 0002):
--   OC004  an account and its rate plan are in different currencies
--   OC005  rates, currencies of plans and decks: never changed in place
-- Every change that can change a price NOTIFYs 'ocs_rate_plan_changed' with the plan id (and
-- bumps rate_plans.changed_at), so a daemon reloads only that plan.

CREATE TABLE currencies (
    code         text PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    minor_units  smallint NOT NULL CHECK (minor_units BETWEEN 0 AND 4)
);
-- ISO 4217 (the same list as ocs.core.currency; a test keeps them equal).
INSERT INTO currencies (code, minor_units) VALUES
    ('AED', 2), ('AFN', 2), ('ALL', 2), ('AMD', 2), ('ANG', 2), ('AOA', 2), ('ARS', 2), ('AUD', 2), ('AWG', 2), ('AZN', 2),
    ('BAM', 2), ('BBD', 2), ('BDT', 2), ('BGN', 2), ('BHD', 3), ('BIF', 0), ('BMD', 2), ('BND', 2), ('BOB', 2), ('BRL', 2),
    ('BSD', 2), ('BTN', 2), ('BWP', 2), ('BYN', 2), ('BZD', 2), ('CAD', 2), ('CDF', 2), ('CHF', 2), ('CLP', 0), ('CNY', 2),
    ('COP', 2), ('CRC', 2), ('CUP', 2), ('CVE', 2), ('CZK', 2), ('DJF', 0), ('DKK', 2), ('DOP', 2), ('DZD', 2), ('EGP', 2),
    ('ERN', 2), ('ETB', 2), ('EUR', 2), ('FJD', 2), ('FKP', 2), ('GBP', 2), ('GEL', 2), ('GHS', 2), ('GIP', 2), ('GMD', 2),
    ('GNF', 0), ('GTQ', 2), ('GYD', 2), ('HKD', 2), ('HNL', 2), ('HTG', 2), ('HUF', 2), ('IDR', 2), ('ILS', 2), ('INR', 2),
    ('IQD', 3), ('IRR', 2), ('ISK', 0), ('JMD', 2), ('JOD', 3), ('JPY', 0), ('KES', 2), ('KGS', 2), ('KHR', 2), ('KMF', 0),
    ('KPW', 2), ('KRW', 0), ('KWD', 3), ('KYD', 2), ('KZT', 2), ('LAK', 2), ('LBP', 2), ('LKR', 2), ('LRD', 2), ('LSL', 2),
    ('LYD', 3), ('MAD', 2), ('MDL', 2), ('MGA', 2), ('MKD', 2), ('MMK', 2), ('MNT', 2), ('MOP', 2), ('MRU', 2), ('MUR', 2),
    ('MVR', 2), ('MWK', 2), ('MXN', 2), ('MYR', 2), ('MZN', 2), ('NAD', 2), ('NGN', 2), ('NIO', 2), ('NOK', 2), ('NPR', 2),
    ('NZD', 2), ('OMR', 3), ('PAB', 2), ('PEN', 2), ('PGK', 2), ('PHP', 2), ('PKR', 2), ('PLN', 2), ('PYG', 0), ('QAR', 2),
    ('RON', 2), ('RSD', 2), ('RUB', 2), ('RWF', 0), ('SAR', 2), ('SBD', 2), ('SCR', 2), ('SDG', 2), ('SEK', 2), ('SGD', 2),
    ('SHP', 2), ('SLE', 2), ('SOS', 2), ('SRD', 2), ('SSP', 2), ('STN', 2), ('SVC', 2), ('SYP', 2), ('SZL', 2), ('THB', 2),
    ('TJS', 2), ('TMT', 2), ('TND', 3), ('TOP', 2), ('TRY', 2), ('TTD', 2), ('TWD', 2), ('TZS', 2), ('UAH', 2), ('UGX', 0),
    ('USD', 2), ('UYU', 2), ('UZS', 2), ('VES', 2), ('VND', 0), ('VUV', 0), ('WST', 2), ('XAF', 0), ('XCD', 2), ('XOF', 0),
    ('XPF', 0), ('YER', 2), ('ZAR', 2), ('ZMW', 2), ('ZWG', 2), ('XXX', 2), ('XTS', 2);

-- Existing accounts are in the default currency ('ocs account update NAME --currency EUR').
ALTER TABLE accounts ADD COLUMN currency text NOT NULL DEFAULT 'USD' REFERENCES currencies (code);

CREATE TABLE rate_plans (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name <> ''),
    currency     text NOT NULL REFERENCES currencies (code),
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    changed_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rate_decks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name <> ''),
    currency     text NOT NULL REFERENCES currencies (code),
    created_at   timestamptz NOT NULL DEFAULT now(),
    changed_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rate_plan_decks (
    plan_id   bigint NOT NULL REFERENCES rate_plans (id) ON DELETE CASCADE,
    deck_id   bigint NOT NULL REFERENCES rate_decks (id),
    priority  integer NOT NULL,
    PRIMARY KEY (plan_id, deck_id),
    UNIQUE (plan_id, priority)
);
CREATE INDEX rate_plan_decks_deck ON rate_plan_decks (deck_id);

-- Peak, off-peak ...: from start_time on each ISO weekday (1 Monday ... 7 Sunday) to end_time,
-- on the account's wall clock; an end at or before the start crosses midnight into the next day;
-- equal start and end: the whole day.
CREATE TABLE rate_deck_bands (
    deck_id     bigint NOT NULL REFERENCES rate_decks (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9_-]{1,32}$'),
    weekdays    smallint[] NOT NULL
                CHECK (cardinality(weekdays) > 0 AND weekdays <@ ARRAY[1, 2, 3, 4, 5, 6, 7]::smallint[]),
    start_time  time NOT NULL,
    end_time    time NOT NULL,
    PRIMARY KEY (deck_id, name)
);

CREATE TABLE rates (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deck_id           bigint NOT NULL REFERENCES rate_decks (id),
    prefix            text NOT NULL CHECK (prefix ~ '^[0-9]{0,15}$'),
    description       text NOT NULL DEFAULT '',
    price_per_minute  numeric(20, 6) NOT NULL CHECK (price_per_minute >= 0),
    minimum_s         integer NOT NULL DEFAULT 0 CHECK (minimum_s >= 0),
    increment_s       integer NOT NULL DEFAULT 1 CHECK (increment_s >= 1),
    connection_fee    numeric(20, 6) NOT NULL DEFAULT 0 CHECK (connection_fee >= 0),
    band              text NOT NULL DEFAULT '',  -- '' all day, else a band of the deck
    effective_from    timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (deck_id, prefix, band, effective_from)
);

ALTER TABLE accounts ADD COLUMN rate_plan_id bigint REFERENCES rate_plans (id);
ALTER TABLE account_classes ADD COLUMN rate_plan_id bigint REFERENCES rate_plans (id);
CREATE INDEX accounts_rate_plan ON accounts (rate_plan_id) WHERE rate_plan_id IS NOT NULL;

-- --- never changed in place ---------------------------------------------------------------------

CREATE FUNCTION ocs_rates_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rates are never changed or deleted'
        USING ERRCODE = 'OC005',
              HINT = 'import the new price with a later effective_from; calls keep the price '
                     'in force when they started';
END $$;
CREATE TRIGGER rates_append_only BEFORE UPDATE OR DELETE ON rates
    FOR EACH ROW EXECUTE FUNCTION ocs_rates_append_only();

CREATE FUNCTION ocs_currency_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.currency IS DISTINCT FROM OLD.currency THEN
        RAISE EXCEPTION '% % is in %: its currency cannot change', replace(TG_TABLE_NAME, '_', ' '),
            OLD.name, OLD.currency
            USING ERRCODE = 'OC005', HINT = 'create a new one in the other currency';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER rate_plans_currency_fixed BEFORE UPDATE OF currency ON rate_plans
    FOR EACH ROW EXECUTE FUNCTION ocs_currency_fixed();
CREATE TRIGGER rate_decks_currency_fixed BEFORE UPDATE OF currency ON rate_decks
    FOR EACH ROW EXECUTE FUNCTION ocs_currency_fixed();

-- --- one currency per account and plan ----------------------------------------------------------

-- A deck in a plan must price in the plan's currency.
CREATE FUNCTION ocs_check_plan_deck_currency() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    plan  rate_plans;
    deck  rate_decks;
BEGIN
    SELECT * INTO plan FROM rate_plans WHERE id = NEW.plan_id;
    SELECT * INTO deck FROM rate_decks WHERE id = NEW.deck_id;
    IF plan.currency <> deck.currency THEN
        RAISE EXCEPTION 'rate deck % is in % and rate plan % in %: a plan''s decks are in its currency',
            deck.name, deck.currency, plan.name, plan.currency USING ERRCODE = 'OC004';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER rate_plan_decks_currency BEFORE INSERT OR UPDATE ON rate_plan_decks
    FOR EACH ROW EXECUTE FUNCTION ocs_check_plan_deck_currency();

-- The plan an account uses (its own, else its class's) is in the account's currency.
CREATE FUNCTION ocs_check_account_plan_currency() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    plan     rate_plans;
    via      text := '';
BEGIN
    IF NEW.rate_plan_id IS NOT NULL THEN
        SELECT * INTO plan FROM rate_plans WHERE id = NEW.rate_plan_id;
    ELSIF NEW.account_class_id IS NOT NULL THEN
        SELECT p.* INTO plan
            FROM account_classes c JOIN rate_plans p ON p.id = c.rate_plan_id
            WHERE c.id = NEW.account_class_id;
        SELECT ' (the plan of its class ' || name || ')' INTO via
            FROM account_classes WHERE id = NEW.account_class_id;
    END IF;
    IF plan.id IS NOT NULL AND plan.currency <> NEW.currency THEN
        RAISE EXCEPTION 'account % is in % and rate plan % is in %: an account can only use a '
                        'rate plan in its own currency', NEW.name, NEW.currency, plan.name || via,
                        plan.currency
            USING ERRCODE = 'OC004';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_plan_currency BEFORE INSERT OR UPDATE OF rate_plan_id, currency,
    account_class_id ON accounts
    FOR EACH ROW EXECUTE FUNCTION ocs_check_account_plan_currency();

-- A class's plan must suit every account of the class that has no plan of its own; the change
-- reaches those accounts' cached snapshots like any other change.
CREATE FUNCTION ocs_class_rate_plan_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    plan      rate_plans;
    other     record;
    affected  bigint;
BEGIN
    IF NEW.rate_plan_id IS NOT NULL THEN
        SELECT * INTO plan FROM rate_plans WHERE id = NEW.rate_plan_id;
        SELECT name, currency INTO other FROM accounts
            WHERE account_class_id = NEW.id AND rate_plan_id IS NULL AND currency <> plan.currency
            ORDER BY name LIMIT 1;
        IF FOUND THEN
            SELECT count(*) INTO affected FROM accounts
                WHERE account_class_id = NEW.id AND rate_plan_id IS NULL
                  AND currency <> plan.currency;
            RAISE EXCEPTION 'rate plan % is in % and % account(s) of class % are not (account % is '
                            'in %): an account can only use a rate plan in its own currency',
                plan.name, plan.currency, affected, NEW.name, other.name, other.currency
                USING ERRCODE = 'OC004';
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.rate_plan_id IS DISTINCT FROM OLD.rate_plan_id THEN
        UPDATE accounts SET changed_at = clock_timestamp()
            WHERE account_class_id = NEW.id AND rate_plan_id IS NULL;
        PERFORM ocs_notify_account(id) FROM accounts
            WHERE account_class_id = NEW.id AND rate_plan_id IS NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER account_classes_rate_plan AFTER INSERT OR UPDATE OF rate_plan_id ON account_classes
    FOR EACH ROW EXECUTE FUNCTION ocs_class_rate_plan_changed();

-- The account's plan (and class and currency) decide too: announce their changes.
DROP TRIGGER accounts_touch ON accounts;
CREATE TRIGGER accounts_touch BEFORE UPDATE OF status, credit_limit, min_balance, limit_basis,
    time_zone, max_sessions, max_setups_per_s, tariff_id, rate_plan_id, account_class_id, currency
    ON accounts
    FOR EACH ROW EXECUTE FUNCTION ocs_touch_account();

-- --- band names of rates ------------------------------------------------------------------------

-- Checked once per statement (a 100,000-row COPY is one statement), not per row.
CREATE FUNCTION ocs_check_rate_bands() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.prefix, n.band, d.name AS deck INTO bad
        FROM new_rates n JOIN rate_decks d ON d.id = n.deck_id
        WHERE n.band <> ''
          AND NOT EXISTS (SELECT 1 FROM rate_deck_bands b
                          WHERE b.deck_id = n.deck_id AND b.name = n.band)
        LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'rate deck %: prefix ''%'' names band ''%'', which the deck does not have',
            bad.deck, bad.prefix, bad.band USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER rates_bands AFTER INSERT ON rates REFERENCING NEW TABLE AS new_rates
    FOR EACH STATEMENT EXECUTE FUNCTION ocs_check_rate_bands();

-- A band that rates use stays.
CREATE FUNCTION ocs_band_in_use() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'DELETE' OR NEW.name <> OLD.name)
       AND EXISTS (SELECT 1 FROM rates WHERE deck_id = OLD.deck_id AND band = OLD.name) THEN
        RAISE EXCEPTION 'band % of rate deck % is used by its rates', OLD.name, OLD.deck_id
            USING ERRCODE = 'OC005';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER rate_deck_bands_in_use BEFORE UPDATE OR DELETE ON rate_deck_bands
    FOR EACH ROW EXECUTE FUNCTION ocs_band_in_use();

-- --- change notification ------------------------------------------------------------------------

CREATE FUNCTION ocs_notify_rate_plans(p_plans bigint[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    plan bigint;
BEGIN
    FOR plan IN SELECT DISTINCT unnest(p_plans) ORDER BY 1 LOOP
        UPDATE rate_plans SET changed_at = clock_timestamp() WHERE id = plan;
        PERFORM pg_notify('ocs_rate_plan_changed',
                          plan::text || ' ' || extract(epoch FROM clock_timestamp())::text);
    END LOOP;
END $$;

CREATE FUNCTION ocs_rates_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rate_decks SET changed_at = clock_timestamp()
        WHERE id IN (SELECT DISTINCT deck_id FROM new_rates);
    PERFORM ocs_notify_rate_plans(ARRAY(
        SELECT pd.plan_id FROM rate_plan_decks pd
        WHERE pd.deck_id IN (SELECT DISTINCT deck_id FROM new_rates)));
    RETURN NULL;
END $$;
CREATE TRIGGER rates_notify AFTER INSERT ON rates REFERENCING NEW TABLE AS new_rates
    FOR EACH STATEMENT EXECUTE FUNCTION ocs_rates_changed();

CREATE FUNCTION ocs_deck_part_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deck bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.deck_id ELSE NEW.deck_id END;
BEGIN
    IF TG_TABLE_NAME = 'rate_plan_decks' THEN
        PERFORM ocs_notify_rate_plans(ARRAY[CASE WHEN TG_OP = 'DELETE' THEN OLD.plan_id
                                                 ELSE NEW.plan_id END]);
        IF TG_OP = 'UPDATE' AND OLD.plan_id <> NEW.plan_id THEN
            PERFORM ocs_notify_rate_plans(ARRAY[OLD.plan_id]);
        END IF;
    ELSE
        PERFORM ocs_notify_rate_plans(ARRAY(
            SELECT plan_id FROM rate_plan_decks WHERE deck_id = deck));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER rate_plan_decks_notify AFTER INSERT OR UPDATE OR DELETE ON rate_plan_decks
    FOR EACH ROW EXECUTE FUNCTION ocs_deck_part_changed();
CREATE TRIGGER rate_deck_bands_notify AFTER INSERT OR UPDATE OR DELETE ON rate_deck_bands
    FOR EACH ROW EXECUTE FUNCTION ocs_deck_part_changed();

-- --- what the daemon caches ---------------------------------------------------------------------

-- The snapshot gains the account's rate plan (its own, else its class's); columns are only added
-- at the end, as CREATE OR REPLACE VIEW requires.
CREATE OR REPLACE VIEW account_snapshots AS
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
    a.changed_at,
    COALESCE(a.rate_plan_id, c.rate_plan_id) AS rate_plan_id
FROM accounts a
LEFT JOIN tariffs t ON t.id = a.tariff_id
LEFT JOIN temporary_credit_limits tl
    ON tl.account_id = a.id AND tl.revoked_at IS NULL AND tl.valid_until > now()
LEFT JOIN account_classes c ON c.id = a.account_class_id;

-- Rates in micro-units for the daemon's cache, plan by plan.
CREATE VIEW rate_plan_rates AS
SELECT
    pd.plan_id,
    pd.priority,
    r.deck_id,
    r.prefix,
    (r.price_per_minute * 1000000)::bigint AS price_per_minute_micros,
    r.minimum_s,
    r.increment_s,
    (r.connection_fee * 1000000)::bigint AS connection_fee_micros,
    r.band,
    r.effective_from
FROM rate_plan_decks pd
JOIN rates r ON r.deck_id = pd.deck_id;
