"""What the 'ptycho.backends' entry points of this distribution resolve to.

Cheap on purpose: only ``ptycho_core.protocol`` is imported; each target module is
imported by the selector when (and only when) its backend is selected.
"""

from ptycho_core.protocol import BackendSpec

NUMPY_GAIN = BackendSpec(
    name="numpy-gain",
    target="ptycho_testbackends.gain:NumpyGainBackend",
    requires=("numpy",),
    display_name="NumPy gain",
    install_hint="pip install numpy",
    description="test backend: fits one complex constant object with numpy",
)

OBJECT_ECHO = BackendSpec(
    name="object-echo",
    target="ptycho_testbackends.echo:ObjectEchoBackend",
    requires=("numpy",),
    description="test backend: numpy-gain whose infer_from returns the initial object it gets",
)

NEEDS_MISSING = BackendSpec(
    name="needs-missing",
    target="ptycho_testbackends.never_imported:Backend",
    requires=("ptycho_test_missing_framework",),
    display_name="MissingFramework",
    install_hint="pip install 'ptycho-test-missing-framework>=1'",
    description="test backend whose framework is not installed",
)

BROKEN_IMPORT = BackendSpec(
    name="broken-import",
    target="ptycho_testbackends.broken:Backend",
    requires=("numpy",),
    description="test backend whose module raises at import",
)

PARTIAL_FRAMEWORK = BackendSpec(
    name="partial-framework",
    target="ptycho_testbackends.partial:Backend",
    requires=("ptycho_testfw",),
    display_name="TestFW",
    install_hint="pip install --force-reinstall ptycho-testfw",
    description="test backend whose installed framework lacks a submodule",
)

UNDECLARED_DEPENDENCY = BackendSpec(
    name="undeclared-dependency",
    target="ptycho_testbackends.undeclared:Backend",
    requires=("numpy",),
    description="test backend importing a module it did not declare",
)

ZERO_FACTORY = BackendSpec(
    name="zero-factory",
    target="ptycho_testbackends.direct:make_zero_factory_backend",
    description="test backend built by a zero-argument factory",
)

WRONG_NAME = BackendSpec(
    name="some-other-name",
    target="ptycho_testbackends.direct:ZeroBackend",
    description="test spec whose name differs from its entry point's",
)

CLASH = BackendSpec(
    name="clash",
    target="ptycho_testbackends.never_imported:Backend",
    description="first registration of 'clash' (tests BackendConflictError)",
)


def not_a_backend() -> int:
    """What the 'not-a-backend' entry point resolves to: a function returning an int."""
    return 42
