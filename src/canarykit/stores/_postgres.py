"""PostgreSQL store and lease (being written)."""
