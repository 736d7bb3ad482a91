"""Several devices through tf.distribute: two logical CPU devices train one model."""

from __future__ import annotations

from framework_suites.multidevice import MultiDeviceSuite


class TestMultiDevice(MultiDeviceSuite):
    """The shared multi-device suite (framework_suites/multidevice.py) on TensorFlow."""

    def check_device_report(self, report: dict) -> None:
        assert report["strategy"] == "MirroredStrategy" and report["replicas"] == 2
        assert [d.rsplit(":", 2)[-2:] for d in report["devices"]] == [["CPU", "0"], ["CPU", "1"]]
        assert report["single_device"] is None
