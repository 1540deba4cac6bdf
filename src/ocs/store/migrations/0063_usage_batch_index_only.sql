-- 0063: the usage batch functions of 0061 always find their rows by index.
--
-- Every statement in them looks rows up by key (an account id, a session key, a usage record's
-- uid, report key or wire key), and each has an index for it. On a new database, though, the
-- planner has no statistics until autovacuum's first ANALYZE, and a plan made while the tables
-- hold a few pages reads them sequentially: the generic plan a connection caches after five
-- calls keeps doing so for every batch as the tables grow, until an ANALYZE replaces it.
-- Measured on a freshly seeded database (bench/diameter_load.py, every CCR-T with usage), that
-- was 2-4 times fewer CCRs a second than the same database after an ANALYZE.
--
-- So the two functions plan without sequential scans (enable_seqscan applies only while they
-- run). Where a statement has no index to use, PostgreSQL still scans; none here does.
ALTER FUNCTION ocs_usage_batch_read(bigint[], text[], text[], text[], text[], text[], text[])
    SET enable_seqscan = off;
ALTER FUNCTION ocs_usage_batch_write(jsonb, jsonb, jsonb, text, bigint[])
    SET enable_seqscan = off;
