"""The built-in backends through their real entry points, in whatever environment this is.

Run in every tox environment: where a framework is installed its backend must select
and be usable; where it is missing (the `core` env has neither), selection must fail
with the documented message and install command, and listing must not import it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from ptycho_core import available_backends, select_backend
from ptycho_core.errors import BackendUnavailableError

BUILTIN = {
    "pytorch": ("PyTorch", ("torch", "lightning"), "pip install 'ptycho[torch]'", "ptycho_torch"),
    "tensorflow": ("TensorFlow", ("tensorflow", "keras"), "pip install 'ptycho[tf]'", "ptycho_tf"),
    "onnx": ("ONNX Runtime", ("onnxruntime",), "pip install 'ptycho[onnx]'", "ptycho_onnx"),
}


def installed(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_backend_selection_matches_the_environment(name: str) -> None:
    display, modules, hint, package = BUILTIN[name]
    info = {i.name: i for i in available_backends()}[name]
    assert info.distribution == "ptycho"
    if installed(modules):
        assert info.usable, info.reason
        backend = select_backend(name)
        assert backend.name == name and type(backend).__module__.startswith(package)
    else:
        assert not info.usable and hint in (info.reason or "")
        missing = next(m for m in modules if importlib.util.find_spec(m) is None)
        with pytest.raises(BackendUnavailableError) as raised:
            select_backend(name)
        message = str(raised.value)
        assert message.startswith(f"{display} backend selected but {modules[0]} module unavailable")
        assert missing in message and hint in message
        assert isinstance(raised.value, RuntimeError)


FRAMEWORK_MODULES = ("torch", "lightning", "tensorflow", "keras")
FOREIGN = {
    "pytorch": {"tensorflow", "keras"},
    "tensorflow": {"torch", "lightning"},
    "onnx": set(FRAMEWORK_MODULES),
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_listing_imports_no_framework_and_selection_only_its_own(name: str) -> None:
    script = f"""
import json, sys
from ptycho_core import available_backends, select_backend
usable = {{i.name: i.usable for i in available_backends()}}
listed = [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules]
if usable[{name!r}]:
    select_backend({name!r})
selected = [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules]
print(json.dumps({{"listed": listed, "selected": selected}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["listed"] == []
    assert not FOREIGN[name] & set(report["selected"]), report
