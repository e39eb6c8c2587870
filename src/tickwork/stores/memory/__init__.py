"""The in-memory store: nothing survives the process (tests, demos, embedded use)."""

from tickwork.stores.memory._store import MemoryStore as MemoryStore
