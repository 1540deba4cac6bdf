"""Billing rules that run beside the charging path: prepaid periods, webhook delivery of the
outbox, bulk import. The rules themselves live in PostgreSQL (migration 0002); these modules
call them and move their results about."""
