from __future__ import annotations

# the kind/store fixtures every store must pass (tests/support/store_fixtures.py)
pytest_plugins = ["tests.support.store_fixtures"]
