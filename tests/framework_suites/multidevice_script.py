"""Train a framework backend on two CPU devices and save a bundle: run by the multi-device suite.

Usage: ``python multidevice_script.py BACKEND BUNDLE REPORT.json``; never imported by pytest.

- ``pytorch``: Lightning DDP over 2 CPU processes (gloo). ``strategy="ddp"`` re-launches the
  current command line for the other rank, which must be this script, not pytest; rank 0
  saves the bundle and writes the report.
- ``tensorflow``: MirroredStrategy over two logical CPU devices. The CPU must be split into
  logical devices before TensorFlow initialises its runtime, hence a process of its own.
"""

from __future__ import annotations

import json
import os
import sys

STRATEGIES = {"pytorch": "ddp", "tensorflow": "auto"}


def _split_the_cpu_for_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )


def _tensorflow_devices(config) -> dict:
    from ptycho_tf.training import _strategy

    strategy, device = _strategy(config)
    return {
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "devices": list(strategy.extended.worker_devices),
        "single_device": device,
    }


def main(backend_name: str, bundle: str, report: str) -> None:
    if backend_name == "tensorflow":
        _split_the_cpu_for_tensorflow()

    from ptycho_core.config import ModelConfig, TrainingConfig
    from ptycho_core.hooks import make_plugin_manager
    from ptycho_core.simulate import default_dataset
    from ptycho_core.workflows import prepare_training_data

    config = TrainingConfig(
        model=ModelConfig(N=64, gridsize=1),
        backend=backend_name,
        nepochs=2,
        batch_size=8,
        n_groups=32,
        validation_split=0.25,
        early_stop_patience=5,
        accelerator="cpu",
        devices=2,
        strategy=STRATEGIES[backend_name],
        seed=5,
    )
    data = prepare_training_data(default_dataset("train", n_positions=64, seed=2), config)
    if backend_name == "pytorch":
        from ptycho_torch.backend import TorchBackend as Backend
    else:
        from ptycho_tf.backend import TensorFlowBackend as Backend
    backend = Backend()
    model = backend.train(data, config, hooks=make_plugin_manager(load_entry_points=False).hook)
    backend.save(model, bundle)  # writes on rank 0 only
    if backend_name == "pytorch":
        from ptycho_torch.training import is_global_zero

        if not is_global_zero():
            return
        devices = {}
    else:
        devices = _tensorflow_devices(config)
    with open(report, "w") as handle:
        json.dump({"history": model.history, "gain": model.extra["output_gain"], **devices}, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
