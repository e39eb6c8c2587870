"""``python -m tickwork``: the same command line as the ``tickwork`` console script."""

from __future__ import annotations

from tickwork.cli import main

if __name__ == "__main__":
    main()
