"""The ``ptycho`` command line (specs/cli.md)."""

from ptycho_core.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
