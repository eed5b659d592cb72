"""The SQL read model: SQLModel tables, the async engine, migrations and CRUD functions."""
