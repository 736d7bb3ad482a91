"""The generator's architecture: parameter counts, naming, activations, output regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptycho_core.architecture import C_OUTER, GENERATOR_PARAMETERS
from ptycho_core.config import ModelConfig
from ptycho_torch.model import (
    AMP_ACTIVATIONS,
    PtychoPINN,
    get_activation,
)
from ptycho_torch.training import build_network


def _network(config: ModelConfig, **kwargs) -> PtychoPINN:
    probe = np.ones((config.N, config.N), dtype=np.complex64)
    return build_network(config, probe, 988.0, **kwargs)


@pytest.mark.parametrize(("N", "gridsize"), sorted(GENERATOR_PARAMETERS))
def test_parameter_counts_match_the_table(N: int, gridsize: int) -> None:
    network = _network(ModelConfig(N=N, gridsize=gridsize, n_filters_scale=2))
    expected = GENERATOR_PARAMETERS[(N, gridsize)]
    assert network.generator_parameters() == expected
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    assert trainable == expected + 1  # the output gain comes on top


def test_final_stage_split_of_the_n64_generator() -> None:
    """§3 (n_filters_scale 2): encoder 1,144,256; decoder base 553,344; final stage 541 + 39,873."""
    network = _network(ModelConfig(N=64, gridsize=1, n_filters_scale=2))

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(network.encoder) == 1_144_256
    assert count(network.decoder_amp.blocks) == 553_344
    assert count(network.decoder_amp.head) == 541
    assert count(network.decoder_amp.outer) == 39_873
    assert count(network.decoder_phase) == count(network.decoder_amp)


def test_parameter_names_form_the_documented_hierarchy() -> None:
    state = _network(ModelConfig(N=64, gridsize=2, n_filters_scale=2)).state_dict()
    for name in (
        "encoder.blocks.0.conv0.weight",
        "encoder.blocks.2.conv1.bias",
        "decoder_amp.blocks.1.conv0.weight",
        "decoder_amp.head.weight",
        "decoder_amp.outer.up.conv1.weight",
        "decoder_amp.outer.head.bias",
        "decoder_phase.outer.head.weight",
        "log_gain",
        "probe",
    ):
        assert name in state, name
    roots = {name.split(".")[0] for name in state}
    assert roots == {"encoder", "decoder_amp", "decoder_phase", "log_gain", "probe"}
    assert state["encoder.blocks.0.conv0.weight"].shape == (64, 4, 3, 3)  # all C channels in
    assert state["decoder_amp.head.weight"].shape == (4, 60, 3, 3)  # C heads, 32n − 4 inputs
    assert state["probe"].dtype == torch.complex64
    # pad_object False: a full-field ConvUp instead of path 1 / path 2
    flat = _network(ModelConfig(N=64, pad_object=False, n_filters_scale=2)).state_dict()
    assert "decoder_amp.up.conv0.weight" in flat and "decoder_amp.outer.head.weight" not in flat
    assert flat["decoder_amp.up.conv0.weight"].shape == (64, 64, 3, 3)


def test_activation_table_and_alias() -> None:
    assert set(AMP_ACTIVATIONS) == {"sigmoid", "swish", "softplus", "relu"}
    assert get_activation("silu") is get_activation("swish")
    with pytest.raises(
        ValueError, match=r"amp_activation: expected one of .*sigmoid.*found 'tanh'"
    ):
        get_activation("tanh")
    x = torch.linspace(-3, 3, 7)
    assert torch.allclose(get_activation("swish")(x), x * torch.sigmoid(x))
    silu_config = ModelConfig(amp_activation="silu")
    assert silu_config.amp_activation == "swish"


@pytest.mark.parametrize("activation", sorted(AMP_ACTIVATIONS))
def test_amplitude_activation_is_applied(activation: str) -> None:
    torch.manual_seed(0)
    network = _network(ModelConfig(N=64, amp_activation=activation, probe_big=False))
    x = torch.rand(2, 1, 64, 64)
    amp, phase = network.generate(x)
    features = network.encoder(x)
    for block in network.decoder_amp.blocks:
        features = block(features)
    raw = network.decoder_amp.head(features[:, :-C_OUTER])
    centre = amp[..., 16:48, 16:48]
    assert torch.allclose(centre, AMP_ACTIVATIONS[activation](raw), atol=1e-6)
    assert phase.abs().max() < np.pi


def test_object_lives_in_the_central_box_and_path_two_outside() -> None:
    """Path 1 fills only the central N/2 box; the masked path 2 only the border."""
    torch.manual_seed(0)
    network = _network(ModelConfig(N=64))
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        before, _ = network.generate(x)
        for p in network.decoder_amp.outer.parameters():
            p.add_(0.5)
        after, _ = network.generate(x)
        for p in network.decoder_amp.head.parameters():
            p.add_(0.5)
        head_changed, _ = network.generate(x)
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[16:48, 16:48] = True
    assert torch.equal(before[..., inside], after[..., inside])
    assert not torch.equal(before[..., ~inside], after[..., ~inside])
    assert torch.equal(after[..., ~inside], head_changed[..., ~inside])
    assert not torch.equal(after[..., inside], head_changed[..., inside])


def test_without_probe_big_the_border_is_zero() -> None:
    network = _network(ModelConfig(N=64, probe_big=False))
    amp, phase = network.generate(torch.rand(1, 1, 64, 64))
    assert amp[..., :16, :].abs().max() == 0 and phase[..., :, 48:].abs().max() == 0
    assert not hasattr(network.decoder_amp, "border")


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(N=64, gridsize=1),
        ModelConfig(N=64, gridsize=2),
        ModelConfig(N=64, gridsize=2, object_big=False),
        ModelConfig(N=64, pad_object=False, probe_mask=True, gaussian_smoothing_sigma=0.8),
        ModelConfig(N=128, gridsize=1, amp_activation="softplus"),
    ],
    ids=["gs1", "gs2", "gs2-small-object", "full-field", "n128"],
)
def test_forward_shapes_and_finiteness(config: ModelConfig) -> None:
    torch.manual_seed(1)
    network = _network(config)
    B, C, N = 3, config.channels, config.N
    x = torch.rand(B, N, N, C).permute(0, 3, 1, 2)
    coords = (torch.rand(B, 1, 2, C) - 0.5) * 6
    out = network(x, coords)
    heads = C if config.object_big else 1
    assert out.object.shape == (B, 1, N, N) and out.object.dtype == torch.complex64
    assert out.amplitude.shape == (B, C, N, N) and out.amplitude.dtype == torch.float32
    assert out.generated_amplitude.shape == (B, heads, N, N)
    for tensor in out:
        assert torch.isfinite(torch.view_as_real(tensor) if tensor.is_complex() else tensor).all()
    assert torch.equal(network.predict_object(x, coords), out.object)


def test_log_gain_is_a_registered_parameter_that_trains() -> None:
    """TORCH-INTENSITY-SCALE-DEAD-001: the scale must be in the state dict and move."""
    torch.manual_seed(0)
    network = _network(ModelConfig(N=64))
    assert "log_gain" in network.state_dict() and network.log_gain.requires_grad
    x = torch.rand(2, 1, 64, 64)
    out = network(x, torch.zeros(2, 1, 2, 1))
    optimiser = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=1e-2)
    (out.amplitude.square().mean()).backward()
    optimiser.step()
    assert network.log_gain.item() != 0.0
    assert network.output_gain == pytest.approx(np.exp(network.log_gain.item()))

    frozen = _network(ModelConfig(N=64), intensity_scale_trainable=False)
    assert not frozen.log_gain.requires_grad and "log_gain" in frozen.state_dict()


def test_probe_trainable_makes_the_probe_a_parameter() -> None:
    network = _network(ModelConfig(N=64), probe_trainable=True)
    assert any(p is network.probe for p in network.parameters())
    fixed = _network(ModelConfig(N=64))
    assert all(p is not fixed.probe for p in fixed.parameters())


def test_bad_constructor_arguments_are_named() -> None:
    with pytest.raises(
        ValueError, match=r"probe: expected shape \(64, 64\) for N=64, found \(32, 32\)"
    ):
        PtychoPINN(ModelConfig(N=64), np.ones((32, 32), np.complex64), 1.0)
    with pytest.raises(ValueError, match="intensity_scale: expected a finite number > 0"):
        PtychoPINN(ModelConfig(N=64), np.ones((64, 64), np.complex64), float("nan"))
    with pytest.raises(ValueError, match="object_big: expected True for a 'supervised' model"):
        _network(ModelConfig(N=64, gridsize=2, object_big=False, model_type="supervised"))


def test_network_is_channels_last() -> None:
    network = _network(ModelConfig(N=64))
    weight = network.encoder.blocks[1].conv0.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
