"""Upstream PtychoPINN archives, written at test time the way upstream writes them.

``write_archive`` follows upstream's TensorFlow model manager step by step: a temporary
folder with ``manifest.dill`` (``{'models': [...], 'version': '1.0'}``) and per model a
folder holding ``model.keras`` (Keras' own ``model.save``), ``custom_objects.dill``,
``params.dill`` (the settings, ``intensity_scale`` and ``_version``) and ``model.h5`` (an
HDF5 file carrying only an ``intensity_scale`` attribute), zipped with ``ZIP_DEFLATED`` as
``<base>.zip``. Pickles are written with ``dill``, as upstream does.

``upstream_generator`` builds the Keras network of upstream's ``create_model_with_gridsize``
up to the two decoder outputs: the same layer classes, automatic names and creation order
(each decoder makes its two head convolutions before its blocks), the intensity scaler with
its log scale held in a plain ``tf.Variable``, slices, padding, swish and border mask. The
weight-free tail (complex combination, merge, trim, physics) is left out: it holds no
weights, and ``ptycho_core.object_patches`` computes it from the two outputs.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import dill
import h5py
import numpy as np

from ptycho_core.config import ModelConfig

UPSTREAM_DEFAULTS: dict[str, Any] = {
    "N": 64, "offset": 4, "gridsize": 1, "outer_offset_train": None, "outer_offset_test": None,
    "batch_size": 16, "nepochs": 60, "n_filters_scale": 2, "output_prefix": "outputs",
    "big_gridsize": 10, "max_position_jitter": 10, "sim_jitter_scale": 0.0,
    "default_probe_scale": 0.7, "mae_weight": 0.0, "nll_weight": 1.0, "tv_weight": 0.0,
    "realspace_mae_weight": 0.0, "realspace_weight": 0.0, "nphotons": 1e9, "nimgs_train": 9,
    "nimgs_test": 3, "data_source": "generic", "probe.trainable": False,
    "intensity_scale.trainable": True, "positions.provided": True, "object.big": True,
    "probe.big": True, "probe_scale": 4.0, "set_phi": False, "probe.mask": False,
    "pad_object": True, "model_type": "pinn", "label": "", "size": 392,
    "amp_activation": "sigmoid", "h5_path": "wts.h5", "npseed": 42, "debug": False,
    "gaussian_smoothing_sigma": 0.0, "use_xla_translate": True, "architecture": "cnn",
    "n_groups": 512, "neighbor_count": 4, "train_data_file_path": "train.npz",
    "test_data_file_path": None, "sequential_sampling": False, "bigN": 64,
    "timestamp": "2026-01-01T00:00:00",
}  # fmt: skip
"""A ``params.cfg`` snapshot as upstream's training leaves it (defaults after its config bridge)."""


def upstream_params(model: ModelConfig, **changes: Any) -> dict[str, Any]:
    """Upstream's settings for the architecture ``model`` describes, plus ``changes``."""
    params = dict(UPSTREAM_DEFAULTS)
    params.update(
        {
            "N": model.N,
            "gridsize": model.gridsize,
            "n_filters_scale": model.n_filters_scale,
            "amp_activation": model.amp_activation,
            "object.big": model.object_big,
            "probe.big": model.probe_big,
            "pad_object": model.pad_object,
            "probe_scale": model.probe_scale,
            "offset": model.offset,
            "max_position_jitter": model.max_position_jitter,
            "bigN": model.N + (model.gridsize - 1) * model.offset,
        }
    )
    params.update(changes)
    return params


def write_archive(
    base: Path,
    params: dict[str, Any],
    intensity_scale: float,
    *,
    models: dict[str, Any] | None = None,
    model_bytes: bytes = b"",
    version: str = "1.0",
    params_object: Any = None,
) -> Path:
    """Write ``<base>.zip`` as upstream's ``save_multiple_models`` does; return its path.

    ``models`` maps model names to Keras models (saved with ``model.save``); without them
    each model folder gets ``model_bytes`` as its ``model.keras`` (for archives whose
    weights the test never reaches). ``params_object``, when given, is pickled as
    ``params.dill`` instead of the settings (hostile archives).
    """
    names = list(models) if models else ["autoencoder", "diffraction_to_obj"]
    zip_path = Path(f"{base}.zip")
    with tempfile.TemporaryDirectory() as temp:
        with open(os.path.join(temp, "manifest.dill"), "wb") as handle:
            dill.dump({"models": names, "version": version}, handle)
        for name in names:
            folder = os.path.join(temp, name)
            os.makedirs(folder)
            if models:
                with warnings.catch_warnings():  # Keras' own saving, under numpy 2
                    warnings.filterwarnings(
                        "ignore", "__array__ implementation", DeprecationWarning
                    )
                    models[name].save(os.path.join(folder, "model.keras"))
            else:
                Path(folder, "model.keras").write_bytes(model_bytes)
            with open(os.path.join(folder, "custom_objects.dill"), "wb") as handle:
                dill.dump({"upstream_params": upstream_params}, handle)
            snapshot = dict(params, intensity_scale=intensity_scale, _version="1.0")
            with open(os.path.join(folder, "params.dill"), "wb") as handle:
                dill.dump(snapshot if params_object is None else params_object, handle)
            with h5py.File(os.path.join(folder, "model.h5"), "a") as handle:
                handle.attrs["intensity_scale"] = intensity_scale
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for root, _, files in os.walk(temp):
                for file in files:
                    full = os.path.join(root, file)
                    archive.write(full, os.path.relpath(full, temp))
    return zip_path


def upstream_generator(
    model: ModelConfig,
    intensity_scale: float,
    *,
    seed: int = 0,
    saved_log_scale: float | None = None,
) -> Any:
    """Upstream's Keras generator for ``model``: inputs (diffraction, positions), outputs
    (amplitude, phase), channels last. Needs TensorFlow and Keras 3.

    ``saved_log_scale`` builds the scaler of older upstream versions, whose log scale was
    a weight of the layer (saved with the model) rather than a plain variable.
    """
    import keras
    import tensorflow as tf
    from keras import layers

    keras.backend.clear_session()  # as upstream's factory: automatic names start again
    keras.utils.set_random_seed(seed)
    N, n, C = model.N, model.n_filters_scale, model.gridsize**2
    log_scale = tf.Variable(float(math.log(intensity_scale)), trainable=False)

    class IntensityScaler(layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if saved_log_scale is None:
                self.w = log_scale
            else:
                initial = keras.initializers.Constant(saved_log_scale)
                self.w = self.add_weight(shape=(), initializer=initial, trainable=False)

        def call(self, inputs: Any) -> Any:
            (x,) = inputs
            return x / tf.math.exp(self.w)

        def get_config(self) -> dict[str, Any]:
            return super().get_config()

    class ActivationLayer(layers.Layer):
        def __init__(self, activation_name: str = "sigmoid", scale: float = 1.0, **kwargs: Any):
            super().__init__(**kwargs)
            self.activation_name, self.scale = activation_name, scale

        def call(self, x: Any) -> Any:
            return self.scale * keras.activations.get(self.activation_name)(x)

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "activation_name": self.activation_name,
                "scale": self.scale,
            }

    def conv_pool(x: Any, filters: int) -> Any:
        x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(x)
        x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(x)
        return layers.MaxPool2D((2, 2), padding="same")(x)

    def conv_up(x: Any, filters: int) -> Any:
        x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(x)
        x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same")(x)
        return layers.UpSampling2D((2, 2))(x)

    levels = int(math.log2(N // 8))
    encoder = [n * 128 // 2 ** (levels - 1 - i) for i in range(levels)]
    decoder = [n * 32 * 2 ** (levels - 2 - i) for i in range(levels - 1)]
    heads = C if model.object_big else 1
    border = np.ones((N, N, 1), np.float32)
    border[N // 4 : N - N // 4, N // 4 : N - N // 4] = 0.0

    def decoder_last(x: Any, conv1: Any, conv2: Any, act: Any, name: str) -> Any:
        if model.pad_object:
            x1 = act(conv1(x[..., :-4]))
            x1 = layers.ZeroPadding2D((N // 4, N // 4), name=name + "_padded")(x1)
            if not model.probe_big:
                return x1
            x2 = keras.activations.swish(conv2(conv_up(x[..., -4:], n * 2048 // N)))
            return x1 + x2 * border
        return act(conv2(conv_up(x, n * 2048 // N)))

    def decoder_head(x: Any, activation: str, scale: float, name: str) -> Any:
        conv1 = layers.Conv2D(heads, (3, 3), padding="same")
        conv2 = layers.Conv2D(heads, (3, 3), padding="same")
        act = ActivationLayer(activation_name=activation, scale=scale, name=name)
        for filters in decoder:
            x = conv_up(x, filters)
        return decoder_last(x, conv1, conv2, act, name)

    diffraction = keras.Input(shape=(N, N, C), name="input")
    positions = keras.Input(shape=(1, 2, C), name="input_positions")
    x = IntensityScaler(name="intensity_scaler")([diffraction])
    for filters in encoder:
        x = conv_pool(x, filters)
    amplitude = decoder_head(x, model.amp_activation, 1.0, "amp")
    phase = decoder_head(x, "tanh", math.pi, "phi")
    return keras.Model([diffraction, positions], [amplitude, phase])


def generator_archive(
    base: Path, model: ModelConfig, intensity_scale: float, *, seed: int = 3, **generator: Any
) -> tuple[Path, Any]:
    """An archive of :func:`upstream_generator` (both upstream model names), saved with the
    settings upstream keeps for ``model`` and its normalised probe; (path, Keras network)."""
    import tensorflow as tf

    from ptycho_core.physics import focused_probe, normalize_probe

    network = upstream_generator(model, intensity_scale, seed=seed, **generator)
    probe = normalize_probe(focused_probe(model.N), model.probe_scale)
    params = upstream_params(model, probe=tf.constant(probe[..., None]))
    models = {"autoencoder": network, "diffraction_to_obj": network}
    return write_archive(base, params, intensity_scale, models=models), network


def upstream_patches(
    network: Any, model: ModelConfig, x: np.ndarray, coords: np.ndarray, intensity_scale: float
) -> np.ndarray:
    """The object patches of upstream's inference: callers multiply X_n by the archive's
    ``intensity_scale``; the weight-free tail is ``ptycho_core.object_patches``."""
    from ptycho_core.object_patches import object_patches

    amplitude, phase = network.predict([x * np.float32(intensity_scale), coords], verbose=0)
    return object_patches(amplitude, phase, coords, model)
