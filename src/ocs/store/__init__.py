"""The store: SQL (asyncpg), schema migrations, the embedded PostgreSQL and demo data."""
