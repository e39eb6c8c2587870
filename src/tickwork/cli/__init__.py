"""The ``tickwork`` command: one module per command group, wired in :mod:`tickwork.cli._main`."""

from tickwork.cli._main import cli as cli
from tickwork.cli._main import main as main
