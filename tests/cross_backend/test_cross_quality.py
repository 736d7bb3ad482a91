"""Both backends, trained on the same simulated data with the same config, clearly beat an
untrained model on a held-out object (the embedded 'test' object, never seen in training),
and refining the trained model on that object's own scan raises its score further.

The config is chosen to learn fast on 2 CPU cores (n_filters_scale 1, object_big False,
the default schedule with a 32-step warmup, 256 groups × 12 epochs: under a minute per
backend on a quiet machine); the untrained baseline starts at the calibrated output gain;
the numbers are reported as test properties (``pytest -rA`` or the JUnit XML).
"""

from __future__ import annotations

import pytest
from framework_suites.framework import Framework
from framework_suites.tf_framework import TENSORFLOW
from framework_suites.torch_framework import TORCH

from ptycho_core.config import InferenceConfig, ModelConfig
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.protocol import TrainedModel
from ptycho_core.results import evaluate_stitched
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data, reconstruct, refine_model

MODEL = ModelConfig(N=64, gridsize=1, n_filters_scale=1, object_big=False)
REFINE_EPOCHS = 4


@pytest.fixture(scope="module")
def datasets():
    return default_dataset("train"), default_dataset("test")


@pytest.mark.slow
@pytest.mark.parametrize("fw", [TENSORFLOW, TORCH], ids=["tensorflow", "pytorch"])
def test_training_clearly_beats_an_untrained_model(
    fw: Framework, datasets, record_property
) -> None:
    train, test = datasets
    name, backend = fw.name, fw.backend()
    config = fw.small_config(
        model=MODEL, nepochs=12, n_groups=256, lr_warmup_steps=32, validation_split=0.05
    )
    hooks = make_plugin_manager(load_entry_points=False).hook
    data = prepare_training_data(train, config)
    trained = backend.train(data, config, hooks=hooks)
    untrained = TrainedModel(
        backend=name,
        config=config,
        probe=data.probe,
        intensity_scale=data.intensity_scale,
        network=fw.build_network(MODEL, data.probe, data.intensity_scale),
    )
    inference = InferenceConfig(backend=name, accelerator="cpu")
    scores = {}
    # self-supervised refinement on the held-out scan itself (no ground truth involved)
    refined = refine_model(trained, test, epochs=REFINE_EPOCHS, hooks=hooks, backend=backend)
    models = (("trained", trained), ("untrained", untrained), ("refined", refined))
    for label, model in models:
        result = reconstruct(model, test, inference, hooks=hooks, backend=backend)
        scores[label] = evaluate_stitched(result.stitched, test)
        for metric in (
            "amplitude_ssim",
            "amplitude_psnr",
            "phase_ssim",
            "phase_ssim_upstream",
            "phase_psnr",
        ):
            record_property(f"{name}_{label}_{metric}", round(scores[label][metric], 4))
    print(
        name,
        {
            k: {m: round(v, 3) for m, v in s.items() if "ssim" in m or "psnr" in m}
            for k, s in scores.items()
        },
    )
    assert trained.history["loss"][-1] < trained.history["loss"][0]
    assert scores["trained"]["amplitude_ssim"] > scores["untrained"]["amplitude_ssim"] + 0.05
    assert scores["trained"]["amplitude_psnr"] > scores["untrained"]["amplitude_psnr"] + 2.0
    assert scores["trained"]["amplitude_mae"] < 0.85 * scores["untrained"]["amplitude_mae"]
    assert refined.history["loss"][-1] < refined.history["loss"][0]
    assert scores["refined"]["amplitude_ssim"] > scores["trained"]["amplitude_ssim"] + 0.03
