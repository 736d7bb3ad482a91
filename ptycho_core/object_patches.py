"""From the generator's amplitude and phase to the object patch at each group centre, in numpy.

The inference path of the network (specs/model.md §2, steps 2 and 3): the generator's
amplitude A and phase φ form the complex patches A·exp(iφ), which are merged onto the
group's object canvas (``object_big``) or padded onto it, and the canvas's central N × N is
the object seen at the group centre. The framework backends compute this inside their
networks; a backend that runs only the generator elsewhere (an exported graph) finishes the
path here, with the same numbers: the resampling matrices are those of ``shift_matrices``
in both framework ``physics`` modules, and the merge divides by the moved centre masks plus
:data:`~ptycho_core.physics.MERGE_EPSILON`.
"""

from __future__ import annotations

import numpy as np

from ptycho_core.config import ModelConfig
from ptycho_core.physics import MERGE_EPSILON, canvas_padding, center_mask_1d

__all__ = ["group_offsets", "merge_patches", "object_patches", "shift_matrices"]


def shift_matrices(shift: np.ndarray, n_in: int, n_out: int, start: int = 0) -> np.ndarray:
    """Bilinear resampling matrices (M, n_out, n_in), one per entry of ``shift`` (M,):
    ``R[m, o, i] = max(0, 1 − |o + start − i − shift[m]|)``, in float32."""
    shift = np.asarray(shift, dtype=np.float32)
    out_idx = np.arange(n_out, dtype=np.float32) + np.float32(start)
    in_idx = np.arange(n_in, dtype=np.float32)
    distance = (out_idx[:, None] - in_idx[None, :])[None] - shift[:, None, None]
    return np.maximum(np.float32(0.0), np.float32(1.0) - np.abs(distance))


def group_offsets(coords_relative: np.ndarray) -> np.ndarray:
    """(B, 1, 2, C) positions relative to the group → (B, C, 2) [x, y] offsets from their mean."""
    offsets = np.transpose(np.asarray(coords_relative, dtype=np.float32)[:, 0], (0, 2, 1))
    return offsets - offsets.mean(axis=1, keepdims=True)


def merge_patches(patches: np.ndarray, offsets: np.ndarray, P: int) -> np.ndarray:
    """Merge (B, C, N, N) complex patches onto (B, P, P) canvases (``object_big``).

    Each patch is padded to P, moved by minus its offset (B, C, 2) and summed; the sum is
    divided by the summed moved centre masks plus ``MERGE_EPSILON``.
    """
    B, C, N, _ = patches.shape
    start = -canvas_padding(N, P)
    flat = offsets.reshape(B * C, 2)
    rows = shift_matrices(-flat[:, 1], N, P, start).reshape(B, C, P, N)
    cols = shift_matrices(-flat[:, 0], N, P, start).reshape(B, C, P, N)
    cols_t = np.swapaxes(cols, -1, -2)
    real = (rows @ patches.real.astype(np.float32) @ cols_t).sum(axis=1)
    imag = (rows @ patches.imag.astype(np.float32) @ cols_t).sum(axis=1)
    centre = center_mask_1d(N)
    weight = ((rows @ centre)[..., :, None] * (cols @ centre)[..., None, :]).sum(axis=1)
    denominator = weight + np.float32(MERGE_EPSILON)
    return (real / denominator + 1j * (imag / denominator)).astype(np.complex64)


def object_patches(
    amplitude: np.ndarray, phase: np.ndarray, coords_relative: np.ndarray, model: ModelConfig
) -> np.ndarray:
    """The (B, N, N, 1) complex64 object at the group centres from the generator's output.

    ``amplitude`` and ``phase`` are channels-last (B, N, N, H), H = C with ``object_big``
    and 1 without; ``coords_relative`` is the groups' (B, 1, 2, C).
    """
    amplitude = np.asarray(amplitude, dtype=np.float32)
    phase = np.asarray(phase, dtype=np.float32)
    patches = np.transpose(
        amplitude * np.cos(phase) + 1j * (amplitude * np.sin(phase)), (0, 3, 1, 2)
    )
    N, P = model.N, model.canvas_size
    begin = canvas_padding(N, P)
    if model.object_big and patches.shape[1] == 1:
        # one patch per group sits at offset 0: the merge divides it by its own centre mask
        mask = center_mask_1d(N)
        centre = patches[:, 0] / (mask[:, None] * mask[None, :] + np.float32(MERGE_EPSILON))
    elif model.object_big:
        canvas = merge_patches(patches, group_offsets(coords_relative), P)
        centre = canvas[:, begin : begin + N, begin : begin + N]
    else:
        # padding to the canvas and trimming it again leave the patch as it was
        centre = patches[:, 0]
    return np.ascontiguousarray(centre[..., None], dtype=np.complex64)
