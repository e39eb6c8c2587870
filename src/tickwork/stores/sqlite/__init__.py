"""The embedded store: one SQLite file (WAL) per node."""

from tickwork.stores.sqlite._store import SQLiteStore as SQLiteStore
