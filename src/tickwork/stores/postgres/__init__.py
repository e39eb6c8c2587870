"""The PostgreSQL store: durable, shared by a cluster's nodes (needs ``tickwork[postgres]``)."""

from tickwork.stores.postgres._store import PostgresStore as PostgresStore
