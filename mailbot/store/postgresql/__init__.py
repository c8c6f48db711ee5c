"""The PostgreSQL engine: shared by every instance of the bot (psycopg 3; schema and migrations in schema.py)."""

from mailbot.store.postgresql.engine import PostgresStore
from mailbot.store.postgresql.schema import SCHEMA_VERSION, init_schema

__all__ = ["SCHEMA_VERSION", "PostgresStore", "init_schema"]
