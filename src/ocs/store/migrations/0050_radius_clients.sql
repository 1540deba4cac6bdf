-- 0050: what a NAS needs beyond credit: an account's bandwidth limit, and an identity's
-- credential for when ocs is the NAS's only RADIUS server (PAP, CHAP, MS-CHAPv2).
--
-- Both change what a decision says, so both announce the change like every other setting
-- (ocs_touch_account: changed_at and NOTIFY ocs_account_changed), and the snapshot view carries
-- the rate limit (0020's view with two columns added at the end: CREATE OR REPLACE VIEW only
-- adds).

ALTER TABLE accounts
    ADD COLUMN rate_limit_up_kbps integer CHECK (rate_limit_up_kbps > 0),
    ADD COLUMN rate_limit_down_kbps integer CHECK (rate_limit_down_kbps > 0),
    ADD CONSTRAINT accounts_rate_limit_both
        CHECK ((rate_limit_up_kbps IS NULL) = (rate_limit_down_kbps IS NULL));

CREATE TRIGGER accounts_touch_rate_limit
    BEFORE UPDATE OF rate_limit_up_kbps, rate_limit_down_kbps ON accounts
    FOR EACH ROW EXECUTE FUNCTION ocs_touch_account();

-- The stored credential, one of (see src/ocs/radius/auth.py, README "Authentication"):
--   pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>   PAP only (a one-way hash)
--   nt$<MD4 of the UTF-16LE password, 32 hex digits>              PAP and MS-CHAPv2
--   cleartext$<password>                                        PAP, CHAP and MS-CHAPv2
-- CHAP needs the password itself and MS-CHAPv2 its NT hash (which is as good as the password
-- to an attacker for MS-CHAP): that is the protocols' design, not ours to fix.
ALTER TABLE account_identities
    ADD COLUMN credential text CHECK (
        credential IS NULL
        OR credential ~ '^pbkdf2-sha256\$[0-9]+\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$'
        OR credential ~ '^nt\$[0-9a-f]{32}$'
        OR credential ~ '^cleartext\$.+$'
    );

CREATE TRIGGER account_identities_touch_credential
    AFTER UPDATE OF credential ON account_identities
    FOR EACH ROW EXECUTE FUNCTION ocs_touch_account();

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
    COALESCE(a.rate_plan_id, c.rate_plan_id) AS rate_plan_id,
    a.rate_limit_up_kbps,
    a.rate_limit_down_kbps
FROM accounts a
LEFT JOIN tariffs t ON t.id = a.tariff_id
LEFT JOIN temporary_credit_limits tl
    ON tl.account_id = a.id AND tl.revoked_at IS NULL AND tl.valid_until > now()
LEFT JOIN account_classes c ON c.id = a.account_class_id;
