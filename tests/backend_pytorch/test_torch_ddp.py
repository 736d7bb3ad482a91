"""Multi-process training: DDP over 2 CPU processes (gloo), then load and infer here."""

from __future__ import annotations

from framework_suites.multidevice import MultiDeviceSuite


class TestMultiDevice(MultiDeviceSuite):
    """The shared multi-device suite (framework_suites/multidevice.py) on PyTorch: DDP."""
