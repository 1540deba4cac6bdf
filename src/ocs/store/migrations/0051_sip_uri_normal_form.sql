-- 0051: SIP URI identities in their new normal form (ocs.core.identity): user@host, without the
-- scheme, a port, parameters, headers or angle brackets, the host in lower case. Stored values
-- were "sip:user@host"; a SIP proxy's Diameter Ro sends "sip:user@host:5060", which must find
-- the same account (a tel: URI keeps its scheme). A value whose new form another identity already has is left as it is (and
-- named in a NOTICE): an operator decides which account keeps it.

DO $$
DECLARE
    r record;
    uri text;
    user_part text;
    host_part text;
    normal text;
BEGIN
    FOR r IN SELECT id, value FROM account_identities WHERE kind = 'sip_uri' LOOP
        uri := r.value;
        IF uri ~ '<' THEN
            uri := substring(uri FROM '<([^>]*)');
        END IF;
        uri := btrim(uri);
        IF uri ~* '^tel:' THEN
            normal := 'tel:' || regexp_replace(substring(uri FROM 5), '[;?].*$', '');
            IF normal <> r.value AND NOT EXISTS (
                SELECT 1 FROM account_identities
                WHERE kind = 'sip_uri' AND value = normal AND id <> r.id
            ) THEN
                UPDATE account_identities SET value = normal WHERE id = r.id;
            END IF;
            CONTINUE;
        END IF;
        uri := regexp_replace(uri, '^sips?:', '', 'i');
        uri := regexp_replace(uri, '[;?].*$', '');
        IF position('@' IN uri) > 0 THEN
            user_part := substring(uri FROM '^(.*)@');
            host_part := substring(uri FROM '@([^@]*)$');
        ELSE
            user_part := NULL;
            host_part := uri;
        END IF;
        IF host_part ~ '^\[' THEN
            host_part := substring(host_part FROM '^(\[[^\]]*\])');
        ELSE
            host_part := regexp_replace(host_part, ':[0-9]*$', '');
        END IF;
        normal := CASE WHEN user_part IS NULL OR user_part = '' THEN lower(host_part)
                       ELSE user_part || '@' || lower(host_part) END;
        IF normal IS NULL OR normal = '' OR normal = r.value THEN
            CONTINUE;
        END IF;
        IF EXISTS (SELECT 1 FROM account_identities
                   WHERE kind = 'sip_uri' AND value = normal AND id <> r.id) THEN
            RAISE NOTICE 'sip_uri identity % (%) left as it is: % is taken', r.id, r.value, normal;
            CONTINUE;
        END IF;
        UPDATE account_identities SET value = normal WHERE id = r.id;
    END LOOP;
END $$;
