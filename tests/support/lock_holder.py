"""A process that holds a SQLite store's node lock until it is killed.

Run it as ``python -c LOCK_HOLDER DB`` with tickwork importable; it prints ``ready`` once
it holds the lock, then sleeps.
"""

LOCK_HOLDER = """
import sys, time, trio
from tickwork.stores import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open(node_id="doomed")
    print("ready", flush=True)
    time.sleep(3600)

trio.run(main)
"""
