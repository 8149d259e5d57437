"""Order search: one pre-tokenised index row per order, kept by an outbox consumer, queried
through one parser and one engine interface (PostgreSQL GIN, SQLite FTS5)."""
