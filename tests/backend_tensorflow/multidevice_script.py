"""Train on two logical CPU devices (MirroredStrategy) and save a bundle: run by test_tf_multidevice.

Usage: python multidevice_script.py BUNDLE REPORT.json. The CPU must be split into logical
devices before TensorFlow initialises its runtime, which is why this runs in its own process.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from ptycho_core.config import ModelConfig, TrainingConfig  # noqa: E402
from ptycho_core.hooks import make_plugin_manager  # noqa: E402
from ptycho_core.simulate import default_dataset  # noqa: E402
from ptycho_core.workflows import prepare_training_data  # noqa: E402
from ptycho_tf.backend import TensorFlowBackend  # noqa: E402
from ptycho_tf.training import _strategy  # noqa: E402


def main(bundle: str, report: str) -> None:
    config = TrainingConfig(
        model=ModelConfig(N=64, gridsize=1),
        backend="tensorflow",
        nepochs=2,
        batch_size=16,
        n_groups=32,
        validation_split=0.25,
        accelerator="cpu",
        devices=2,
        seed=5,
    )
    strategy, device = _strategy(config)
    data = prepare_training_data(default_dataset("train", n_positions=64, seed=2), config)
    backend = TensorFlowBackend()
    model = backend.train(data, config, hooks=make_plugin_manager(load_entry_points=False).hook)
    backend.save(model, bundle)
    with open(report, "w") as handle:
        json.dump(
            {
                "strategy": type(strategy).__name__,
                "replicas": strategy.num_replicas_in_sync,
                "devices": list(strategy.extended.worker_devices),
                "single_device": device,
                "history": model.history,
            },
            handle,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
