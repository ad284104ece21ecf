"""PostgreSQL state for a fleet: schema, state backend, advisory lock, and moving SQLite state in."""
