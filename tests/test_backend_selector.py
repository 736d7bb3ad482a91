"""Backend selection through real entry points (tests/plugins/ distributions).

Nothing here monkeypatches the selector: every backend comes from an installed
distribution's ``ptycho.backends`` entry point, as a third party's would.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import run_python

from ptycho_core.backend_selector import (
    INSTALL_HINT,
    BackendInfo,
    Registration,
    _unavailable_message,
    available_backends,
    backend_info,
    describe_backends,
    select_backend,
)
from ptycho_core.errors import (
    BackendConflictError,
    BackendLoadError,
    BackendUnavailableError,
    PtychoError,
    UnknownBackendError,
)
from ptycho_core.protocol import ENTRY_POINT_GROUP, BackendSpec, ReconstructionBackend

pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")

DIST = "ptycho-testbackends"
CLASH_DIST = "ptycho-testclash"


def _entry_point_names() -> set[str]:
    return {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _infos_by_name() -> dict[str, list[BackendInfo]]:
    result: dict[str, list[BackendInfo]] = {}
    for info in available_backends():
        result.setdefault(info.name, []).append(info)
    return result


# ------------------------------------------------------------------------ selection


def test_numpy_gain_is_selected_through_its_spec() -> None:
    backend = select_backend("numpy-gain")
    assert isinstance(backend, ReconstructionBackend)
    assert backend.name == "numpy-gain"
    assert type(backend).__module__ == "ptycho_testbackends.gain"
    # no caching: every selection builds a fresh object
    assert select_backend("numpy-gain") is not backend


def test_backend_info_of_numpy_gain() -> None:
    info = backend_info("numpy-gain")
    assert info == BackendInfo(
        name="numpy-gain",
        distribution=DIST,
        version=importlib.metadata.version(DIST),
        entry_point="ptycho_testbackends.specs:NUMPY_GAIN",
        usable=True,
        reason=None,
        display_name="NumPy gain",
        description="test backend: fits one complex constant object with numpy",
        requires=("numpy",),
    )


def test_backend_info_to_dict_is_json() -> None:
    info = backend_info("needs-missing")
    data = json.loads(json.dumps(info.to_dict()))
    assert data["requires"] == ["ptycho_test_missing_framework"]
    assert data["usable"] is False and "module unavailable" in data["reason"]
    assert BackendInfo(**{**data, "requires": tuple(data["requires"])}) == info


def test_direct_class_and_factory_targets_are_instantiated() -> None:
    direct = select_backend("direct-zero")
    factory = select_backend("zero-factory")
    assert type(direct).__qualname__ == "ZeroBackend" and direct.name == "direct-zero"
    assert type(factory).__qualname__ == "ZeroBackend" and factory.name == "zero-factory"


def test_unknown_name_lists_installed_backends() -> None:
    with pytest.raises(UnknownBackendError) as caught:
        select_backend("no-such-backend")
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PtychoError)
    assert "'no-such-backend'" in message
    installed = _entry_point_names()
    assert {"numpy-gain", "clash", "needs-missing"} <= installed
    for name in installed:
        assert name in message
    assert "pip install 'ptycho[torch]'" in message and "pip install 'ptycho[tf]'" in message


def test_unknown_name_suggests_a_close_match() -> None:
    with pytest.raises(UnknownBackendError, match="Did you mean 'numpy-gain'"):
        select_backend("numpy-gian")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_select_rejects_non_names(bad: object) -> None:
    with pytest.raises(UnknownBackendError, match="non-empty string"):
        select_backend(bad)  # type: ignore[arg-type]


def test_missing_framework_message_names_module_and_install_command() -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        select_backend("needs-missing")
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert message.startswith(
        "MissingFramework backend selected but ptycho_test_missing_framework module unavailable"
    )
    assert "pip install 'ptycho-test-missing-framework>=1'" in message
    assert DIST in message and "needs-missing = ptycho_testbackends.specs:NEEDS_MISSING" in message


def test_unavailable_message_format_for_a_framework_backend() -> None:
    """The exact wording users of the PyTorch backend see (torch is installed here)."""
    spec = BackendSpec(
        name="pytorch",
        target="ptycho_torch.backend:TorchBackend",
        requires=("torch", "lightning"),
        display_name="PyTorch",
        install_hint="pip install 'ptycho[torch]'",
    )
    entry_point = importlib.metadata.EntryPoint(
        name="pytorch", value="ptycho_torch.spec:SPEC", group=ENTRY_POINT_GROUP
    )
    message = _unavailable_message(
        Registration(entry_point, "ptycho", "0.1.0"), spec, "no module named 'torch'"
    )
    assert message.startswith("PyTorch backend selected but torch module unavailable")
    assert message.endswith("Install it with: pip install 'ptycho[torch]'")


def test_framework_missing_a_submodule_is_unavailable_with_cause() -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        select_backend("partial-framework")
    assert str(caught.value).startswith(
        "TestFW backend selected but ptycho_testfw module unavailable"
    )
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    assert caught.value.__cause__.name == "ptycho_testfw.missing_part"


def test_target_that_raises_at_import_is_a_load_error_with_cause() -> None:
    with pytest.raises(BackendLoadError) as caught:
        select_backend("broken-import")
    message = str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert "fails at import on purpose" in str(caught.value.__cause__)
    assert "ptycho_testbackends.broken:Backend" in message
    assert DIST in message and "broken-import = ptycho_testbackends.specs:BROKEN_IMPORT" in message
    assert "ptycho_testbackends.broken" not in sys.modules


def test_undeclared_dependency_is_a_load_error() -> None:
    with pytest.raises(BackendLoadError, match=r"not declared in BackendSpec\.requires") as caught:
        select_backend("undeclared-dependency")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_entry_point_that_fails_to_load_names_distribution_and_entry_point() -> None:
    with pytest.raises(BackendLoadError) as caught:
        select_backend("bad-entry-point")
    message = str(caught.value)
    assert "bad-entry-point = ptycho_testbackends.specs:DOES_NOT_EXIST" in message
    assert f"distribution {DIST} " in message
    assert isinstance(caught.value.__cause__, AttributeError)


def test_clash_names_both_distributions() -> None:
    with pytest.raises(BackendConflictError) as caught:
        select_backend("clash")
    message = str(caught.value)
    assert DIST in message and CLASH_DIST in message
    assert "ptycho_testclash:CLASH" in message and "ptycho_testbackends.specs:CLASH" in message
    with pytest.raises(BackendConflictError):
        backend_info("clash")


def test_not_a_backend_entry_point() -> None:
    with pytest.raises(BackendLoadError) as caught:
        select_backend("not-a-backend")
    message = str(caught.value)
    assert message.startswith(
        f"entry point not-a-backend = ptycho_testbackends.specs:not_a_backend (distribution {DIST}"
    )
    assert "resolved to function ptycho_testbackends.specs.not_a_backend" in message
    assert "which is not a ptycho backend: it has no 'name' attribute" in message


def test_wrong_method_signature_is_not_a_backend() -> None:
    with pytest.raises(BackendLoadError) as caught:
        select_backend("bad-signature")
    assert "which is not a ptycho backend: train(data" in str(caught.value)
    assert "cannot be called as train(data, config, *, hooks)" in str(caught.value)


def test_spec_name_must_equal_entry_point_name() -> None:
    with pytest.raises(BackendLoadError, match="'some-other-name' differs from the entry point"):
        select_backend("wrong-name")


def test_a_distribution_seen_twice_on_sys_path_counts_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second copy of the test distribution's metadata, spelled differently, on sys.path
    is the same distribution: no conflict, listed once."""
    site = Path(str(importlib.metadata.distribution(DIST).locate_file("")))
    (source,) = site.glob("ptycho_testbackends-*.dist-info")
    copy = tmp_path / "Ptycho.TestBackends-0.1.0.dist-info"
    shutil.copytree(source, copy)
    metadata = (copy / "METADATA").read_text()
    (copy / "METADATA").write_text(metadata.replace(f"Name: {DIST}", "Name: Ptycho.TestBackends"))
    monkeypatch.syspath_prepend(str(tmp_path))
    copies = [
        d
        for d in importlib.metadata.distributions()
        if d.metadata["Name"].lower().replace(".", "-") == DIST
    ]
    assert len(copies) == 2  # the setup really shows the distribution twice
    assert select_backend("numpy-gain").name == "numpy-gain"
    assert len(_infos_by_name()["numpy-gain"]) == 1
    with pytest.raises(BackendConflictError):  # a real second distribution still conflicts
        select_backend("clash")


# -------------------------------------------------------------------------- listing


def test_available_backends_reports_every_registration() -> None:
    infos = available_backends()
    names = [info.name for info in infos]
    assert names == sorted(names)
    assert set(names) == _entry_point_names()
    by_name = _infos_by_name()
    for name, entries in by_name.items():
        for info in entries:
            assert info.entry_point and info.distribution and info.version, name
            assert info.usable == (info.reason is None), name
    gain = by_name["numpy-gain"][0]
    assert gain.usable and gain.version == importlib.metadata.version(DIST)
    missing = by_name["needs-missing"][0]
    assert not missing.usable and missing.reason is not None
    assert "pip install 'ptycho-test-missing-framework>=1'" in missing.reason
    assert missing.requires == ("ptycho_test_missing_framework",)
    clash = by_name["clash"]
    assert sorted(info.distribution for info in clash) == [DIST, CLASH_DIST]
    assert all(not info.usable and "conflict" in (info.reason or "") for info in clash)
    assert {info.version for info in clash} == {
        importlib.metadata.version(DIST),
        importlib.metadata.version(CLASH_DIST),
    }
    for name in ("not-a-backend", "bad-signature", "wrong-name", "bad-entry-point"):
        assert not by_name[name][0].usable, name
        assert "not a ptycho backend" in (by_name[name][0].reason or "") or (
            "failed to load" in (by_name[name][0].reason or "")
        )
    assert by_name["direct-zero"][0].usable and by_name["zero-factory"][0].usable


def test_listing_does_not_import_targets_so_verify_is_needed_for_import_errors() -> None:
    listed = {info.name: info for info in available_backends()}
    assert listed["broken-import"].usable  # its module was not imported to find out
    verified = {info.name: info for info in available_backends(verify=True)}
    broken = verified["broken-import"]
    assert not broken.usable and "fails at import on purpose" in (broken.reason or "")
    assert not verified["partial-framework"].usable
    assert not verified["undeclared-dependency"].usable
    assert verified["numpy-gain"].usable


def test_describe_backends_table() -> None:
    infos = available_backends()
    table = describe_backends(infos)
    lines = table.splitlines()
    assert lines[0].split() == ["backend", "usable", "distribution", "notes"]
    assert len(lines) == len(infos) + 1
    gain_line = next(line for line in lines if line.startswith("numpy-gain "))
    assert " yes " in gain_line and f"{DIST}=={importlib.metadata.version(DIST)}" in gain_line
    missing_line = next(line for line in lines if line.startswith("needs-missing "))
    assert " no " in missing_line and "module unavailable" in missing_line
    assert describe_backends([]).startswith("no ptycho backends are installed")
    assert INSTALL_HINT in describe_backends([])


_PROBE = textwrap.dedent(
    """
    import json, sys
    heavy = ["torch", "tensorflow", "keras", "lightning", "jax"]
    import ptycho_core, ptycho_core.backend_selector, ptycho_core.bundle
    report = {"after_import": [m for m in heavy if m in sys.modules]}
    from ptycho_core.backend_selector import available_backends, select_backend
    select_backend("numpy-gain")
    report["after_select"] = sorted(m for m in sys.modules if m.startswith("ptycho_test"))
    infos = available_backends()
    report["n_listed"] = len(infos)
    report["after_list"] = sorted(m for m in sys.modules if m.startswith("ptycho_test"))
    report["heavy_after_list"] = [m for m in heavy if m in sys.modules]
    print(json.dumps(report))
    """
)


def test_import_select_and_list_import_only_what_they_must(tmp_path: Path) -> None:
    """In a fresh interpreter: no framework is imported by core, listing imports no target,
    selecting one backend loads only its own entry point."""
    result = run_python("-c", _PROBE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []
    assert report["heavy_after_list"] == []
    assert report["after_select"] == [
        "ptycho_testbackends",
        "ptycho_testbackends.gain",
        "ptycho_testbackends.specs",
    ]
    assert report["n_listed"] >= len(_entry_point_names())
    after_list = set(report["after_list"])
    # listing loaded the specs and the module of the direct-class entry points ...
    assert {"ptycho_testbackends.specs", "ptycho_testbackends.direct"} <= after_list
    # ... but imported none of the spec targets
    for target in ("broken", "partial", "undeclared", "never_imported"):
        assert f"ptycho_testbackends.{target}" not in after_list
    assert "ptycho_testfw" not in after_list
