"""A backend's generator: parameter counts, naming, activations, output regions, forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from framework_suites.framework import Framework
from ptycho_core.architecture import GENERATOR_PARAMETERS
from ptycho_core.config import AMP_ACTIVATIONS, ModelConfig


def network(fw: Framework, config: ModelConfig, **kwargs: Any) -> Any:
    """A network with a flat probe and s₀ = 988."""
    probe = np.ones((config.N, config.N), dtype=np.complex64)
    return fw.build_network(config, probe, 988.0, **kwargs)


def random_batch(B: int, N: int, C: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-looking diffraction (B, N, N, C) and coords_relative (B, 1, 2, C)."""
    rng = np.random.default_rng(seed)
    diffraction = rng.random((B, N, N, C), dtype=np.float32)
    coords = (rng.random((B, 1, 2, C), dtype=np.float32) - 0.5) * (8.0 if C > 1 else 0.0)
    return diffraction, coords.astype(np.float32)


class ModelSuite:
    """The network of the backend ``fw`` (specs/model.md §3)."""

    @pytest.mark.parametrize(("N", "gridsize"), sorted(GENERATOR_PARAMETERS))
    def test_parameter_counts_match_the_table(self, fw: Framework, N: int, gridsize: int) -> None:
        config = ModelConfig(N=N, gridsize=gridsize, n_filters_scale=2)
        expected = GENERATOR_PARAMETERS[(N, gridsize)]
        built = network(fw, config)
        assert built.generator_parameters() == expected
        assert fw.trainable_parameters(built) == expected + 1  # the output gain comes on top
        frozen = network(fw, config, intensity_scale_trainable=False)
        assert fw.trainable_parameters(frozen) == expected

    def test_final_stage_split_of_the_n64_generator(self, fw: Framework) -> None:
        """§3 (n_filters_scale 2): encoder 1,144,256; decoder base 553,344; final stage 541 + 39,873."""
        built = network(fw, ModelConfig(N=64, gridsize=1, n_filters_scale=2))
        assert fw.count(built.encoder) == 1_144_256
        assert fw.count(*built.decoder_amp.blocks) == 553_344
        assert fw.count(built.decoder_amp.head) == 541
        assert fw.count(built.decoder_amp.outer) == 39_873
        assert fw.count(built.decoder_phase) == fw.count(built.decoder_amp)

    def test_weight_names_form_the_documented_hierarchy(self, fw: Framework) -> None:
        kernel = fw.kernel
        weights = fw.weights(network(fw, ModelConfig(N=64, gridsize=2, n_filters_scale=2)))
        for name in (
            f"encoder.blocks.0.conv0.{kernel}",
            "encoder.blocks.2.conv1.bias",
            f"decoder_amp.blocks.1.conv0.{kernel}",
            f"decoder_amp.head.{kernel}",
            f"decoder_amp.outer.up.conv1.{kernel}",
            "decoder_amp.outer.head.bias",
            f"decoder_phase.outer.head.{kernel}",
            "log_gain",
            *fw.probe_weights,
        ):
            assert name in weights, name
        roots = {name.split(".")[0] for name in weights}
        assert roots == {"encoder", "decoder_amp", "decoder_phase", "log_gain", "probe"}
        # all C channels in; C heads from 32n − 4 inputs
        assert weights[f"encoder.blocks.0.conv0.{kernel}"].shape == fw.conv_shape(4, 64)
        assert weights[f"decoder_amp.head.{kernel}"].shape == fw.conv_shape(60, 4)
        assert weights["log_gain"].shape == ()
        # pad_object False: a full-field ConvUp instead of path 1 / path 2
        flat = fw.weights(network(fw, ModelConfig(N=64, pad_object=False, n_filters_scale=2)))
        assert f"decoder_amp.up.conv0.{kernel}" in flat
        assert f"decoder_amp.outer.head.{kernel}" not in flat
        assert flat[f"decoder_amp.up.conv0.{kernel}"].shape == fw.conv_shape(64, 64)

    def test_initial_weights_depend_only_on_the_seed(self, fw: Framework) -> None:
        a = fw.weights(network(fw, ModelConfig(N=64), seed=5))
        b = fw.weights(network(fw, ModelConfig(N=64), seed=5))
        c = fw.weights(network(fw, ModelConfig(N=64), seed=6))
        name = f"decoder_phase.blocks.1.conv1.{fw.kernel}"
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
        # distinct convolutions get distinct initial kernels (no shared seed)
        first, second = (a[f"encoder.blocks.1.conv{k}.{fw.kernel}"] for k in (0, 1))
        square = fw.conv_shape(64, 64)
        assert not np.array_equal(
            first[tuple(slice(n) for n in square)], second[tuple(slice(n) for n in square)]
        )

    def test_activation_table_and_alias(self, fw: Framework) -> None:
        assert set(fw.model.AMP_ACTIVATIONS) == set(AMP_ACTIVATIONS)
        assert fw.model.get_activation("silu") is fw.model.get_activation("swish")
        with pytest.raises(
            ValueError, match=r"amp_activation: expected one of .*sigmoid.*found 'tanh'"
        ):
            fw.model.get_activation("tanh")
        x = np.linspace(-3, 3, 7, dtype=np.float32)
        np.testing.assert_allclose(fw.activate("swish", x), x / (1 + np.exp(-x)), atol=1e-6)
        assert ModelConfig(amp_activation="silu").amp_activation == "swish"

    @pytest.mark.parametrize("activation", sorted(AMP_ACTIVATIONS))
    def test_amplitude_activation_is_applied(self, fw: Framework, activation: str) -> None:
        built = network(fw, ModelConfig(N=64, amp_activation=activation, probe_big=False), seed=0)
        x, _ = random_batch(2, 64, 1)
        amp, phase = fw.generate(built, x)
        raw = fw.amplitude_head(built, x)
        np.testing.assert_allclose(amp[:, 16:48, 16:48], fw.activate(activation, raw), atol=1e-6)
        assert np.abs(phase).max() < np.pi

    def test_object_lives_in_the_central_box_and_path_two_outside(self, fw: Framework) -> None:
        """Path 1 fills only the central N/2 box; the masked path 2 only the border."""
        built = network(fw, ModelConfig(N=64), seed=0)
        x, _ = random_batch(2, 64, 1)
        before, _ = fw.generate(built, x)
        fw.add_to_weights(built.decoder_amp.outer, 0.5)
        after, _ = fw.generate(built, x)
        fw.add_to_weights(built.decoder_amp.head, 0.5)
        head_changed, _ = fw.generate(built, x)
        inside = np.zeros((64, 64), dtype=bool)
        inside[16:48, 16:48] = True
        before, after, head_changed = (a[..., 0] for a in (before, after, head_changed))
        assert np.array_equal(before[:, inside], after[:, inside])
        assert not np.array_equal(before[:, ~inside], after[:, ~inside])
        assert np.array_equal(after[:, ~inside], head_changed[:, ~inside])
        assert not np.array_equal(after[:, inside], head_changed[:, inside])

    def test_without_probe_big_the_border_is_zero(self, fw: Framework) -> None:
        built = network(fw, ModelConfig(N=64, probe_big=False))
        amp, phase = fw.generate(built, random_batch(1, 64, 1)[0])
        assert np.abs(amp[:, :16]).max() == 0 and np.abs(phase[:, :, 48:]).max() == 0
        assert built.decoder_amp.outer is None

    @pytest.mark.parametrize(
        "config",
        [
            ModelConfig(N=64, gridsize=1),
            ModelConfig(N=64, gridsize=2),
            ModelConfig(N=64, gridsize=2, object_big=False),
            ModelConfig(N=64, pad_object=False, probe_mask=True, gaussian_smoothing_sigma=0.8),
            ModelConfig(N=128, gridsize=1, amp_activation="softplus"),
        ],
        ids=["gs1", "gs2", "gs2-small-object", "full-field-masked-smoothed", "n128"],
    )
    def test_forward_shapes_and_finite_outputs(self, fw: Framework, config: ModelConfig) -> None:
        built = network(fw, config, seed=1)
        B, C, N = 3, config.channels, config.N
        x, coords = random_batch(B, N, C, seed=1)
        amplitude = fw.amplitude(built, x, coords)
        assert amplitude.shape == (B, N, N, C) and amplitude.dtype == np.float32
        assert np.all(np.isfinite(amplitude)) and np.all(amplitude >= 0)
        amp, phase = fw.generate(built, x)
        heads = C if config.object_big else 1
        assert amp.shape == phase.shape == (B, N, N, heads)
        assert np.all(np.isfinite(amp)) and np.all(np.isfinite(phase))
        obj = fw.predict_object(built, x, coords)
        assert obj.shape == (B, N, N, 1) and obj.dtype == np.complex64
        assert np.all(np.isfinite(obj))

    def test_gain_scales_the_predicted_amplitude(self, fw: Framework) -> None:
        built = network(fw, ModelConfig(N=64))
        x, coords = random_batch(2, 64, 1)
        fw.set_log_gain(built, 0.0)
        base = fw.amplitude(built, x, coords)
        fw.set_log_gain(built, np.log(2.0))
        np.testing.assert_allclose(fw.amplitude(built, x, coords), 2.0 * base, rtol=1e-5)
        assert built.output_gain == pytest.approx(2.0)

    def test_bad_constructor_arguments_are_named(self, fw: Framework) -> None:
        PtychoPINN = fw.model.PtychoPINN
        with pytest.raises(
            ValueError, match=r"probe: expected shape \(64, 64\) for N=64, found \(32, 32\)"
        ):
            PtychoPINN(ModelConfig(N=64), np.ones((32, 32), np.complex64), 1.0)
        with pytest.raises(ValueError, match="intensity_scale: expected a finite number > 0"):
            PtychoPINN(ModelConfig(N=64), np.ones((64, 64), np.complex64), float("nan"))
        with pytest.raises(ValueError, match="object_big: expected True for a 'supervised' model"):
            network(fw, ModelConfig(N=64, gridsize=2, object_big=False, model_type="supervised"))
