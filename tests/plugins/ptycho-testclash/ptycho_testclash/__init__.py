"""Registers the backend name 'clash', which ``ptycho-testbackends`` registers too."""

from ptycho_core.protocol import BackendSpec

CLASH = BackendSpec(
    name="clash",
    target="ptycho_testclash.never_imported:Backend",
    description="second registration of 'clash' (tests BackendConflictError)",
)
