"""Stores: durable homes for instances. See :mod:`tickwork.stores.base` for the protocol."""

from __future__ import annotations

from tickwork.stores._wrapper import StoreWrapper as StoreWrapper
from tickwork.stores.base import INTERRUPTED as INTERRUPTED
from tickwork.stores.base import Store as Store
from tickwork.stores.memory import MemoryStore as MemoryStore
from tickwork.stores.sqlite import SQLiteStore as SQLiteStore

__all__ = ["INTERRUPTED", "MemoryStore", "SQLiteStore", "Store", "StoreWrapper"]
