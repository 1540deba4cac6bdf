-- 0040: why usage was kept unmatched (the column is 0014's). Besides an identity no account
-- has ('unknown_identity') the fronts keep usage whose identity, session id or origin is text
-- that cannot be one ('identity_nul_byte', 'session_id_invalid_utf8', ...; the value stored
-- escaped), so operators can tell a missing subscriber from a broken or hostile client.
ALTER TABLE unmatched_usage ADD CONSTRAINT unmatched_usage_reason_given CHECK (reason <> '');
CREATE INDEX unmatched_usage_reason ON unmatched_usage (reason, received_at);
