from __future__ import annotations

import sys
from pathlib import Path

# tests import their helpers (pg_support, ...) as top-level modules
sys.path.insert(0, str(Path(__file__).parent))

# the kind/store fixtures every store must pass (tests/store_fixtures.py)
pytest_plugins = ["store_fixtures"]
