"""The account API (placeholder until the server lands)."""
