"""Imports a part of its declared framework that is not installed ('partial-framework')."""

import ptycho_testfw.missing_part  # noqa: F401  (does not exist on purpose)
