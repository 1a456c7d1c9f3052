"""The ``matchcast`` command line."""

from matchcast.cli.main import main

__all__ = ["main"]
