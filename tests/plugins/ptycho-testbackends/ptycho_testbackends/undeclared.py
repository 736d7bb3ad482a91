"""Imports a module it did not declare in ``requires`` ('undeclared-dependency')."""

import ptycho_test_undeclared_dependency  # noqa: F401  (does not exist on purpose)
