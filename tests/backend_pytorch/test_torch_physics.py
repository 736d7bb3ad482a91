"""The torch physics against the numpy references of ptycho_core (geometry and physics)."""

from __future__ import annotations

from framework_suites.physics import PhysicsSuite


class TestPhysics(PhysicsSuite):
    """The shared physics suite (framework_suites/physics.py) on PyTorch."""
