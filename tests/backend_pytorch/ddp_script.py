"""Train the pytorch backend with DDP over 2 CPU processes (gloo) and save a bundle on rank 0.

Run as a script (``python tests/backend_pytorch/ddp_script.py OUT.ptycho``), never imported by
pytest: Lightning's ``strategy="ddp"`` re-launches the current command line for the
other ranks, which must be this script, not pytest.
"""

from __future__ import annotations

import json
import sys


def main(out: str) -> None:
    from ptycho_core.config import ModelConfig, TrainingConfig
    from ptycho_core.hooks import make_plugin_manager
    from ptycho_core.simulate import default_dataset
    from ptycho_core.workflows import prepare_training_data
    from ptycho_torch.backend import TorchBackend
    from ptycho_torch.training import is_global_zero

    config = TrainingConfig(
        model=ModelConfig(N=64, gridsize=1),
        backend="pytorch",
        nepochs=2,
        batch_size=8,
        n_groups=32,
        validation_split=0.25,
        early_stop_patience=5,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        seed=5,
    )
    data = prepare_training_data(default_dataset("train", N=64, n_positions=128), config)
    backend = TorchBackend()
    model = backend.train(data, config, hooks=make_plugin_manager(load_entry_points=False).hook)
    backend.save(model, out)  # writes on rank 0 only
    if is_global_zero():
        print(json.dumps({"history": model.history, "gain": model.extra["output_gain"]}))


if __name__ == "__main__":
    main(sys.argv[1])
