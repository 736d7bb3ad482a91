"""The differentiable physics of PtychoPINN in TensorFlow: translation, merge, illumination, diffraction, losses.

The TensorFlow twin of :mod:`ptycho_torch.physics`, function for function, following
``specs/model.md`` §4, §5 and §7 and the numpy references in ``ptycho_core.geometry`` /
``ptycho_core.physics``:

- :func:`translate` moves image content by ``+dx`` columns and ``+dy`` rows, bilinear with
  zero fill, exactly as :func:`ptycho_core.geometry.translate` (matched to 1e-5 in tests).
  It is two small matrix products, ``R_y · image · R_xᵀ``, whose entries are the bilinear
  ("tent") weights ``max(0, 1 − |o − shift − i|)``: exact bilinear interpolation with zero
  fill in plain TF ops (no image-transform kernel), deterministic on every device, with
  gradients, and it lets padding and cropping be folded into rectangular matrices.
- :func:`merge_patches` builds the ``object_big`` canvas
  ``Σ_c T(pad(O_c), −δ_c) / (Σ_c T(pad(m), −δ_c) + 0.001)`` (TF formula, numerator unmasked).
- :func:`extract_patches` crops the central N×N of the canvas translated by ``+δ_c``.
- :func:`diffract` gives ``A = sqrt(fftshift(|fft2 ψ|²) / N²) = fftshift(|fft2 ψ|) / N``.
- The losses use the shared convention: Poisson NLL ``mean(λ − k·log(λ + 1e-12))`` with
  ``λ = predicted²`` and ``k = (s₀·X_n)²``; MAE; supervised ``2·L1(amp) + 4·L1(phase)``.

Complex fields are carried as a pair of real tensors stacked on an axis of size 2
([real, imag]) through the real resampling matrices, and become ``complex64`` only for
the FFT. Offsets ``δ`` are per-pattern ``coords_relative`` = −(position − group centre),
in pixels, laid out (B, C, 2) with [x, y] = [column, row] order.
"""

from __future__ import annotations

from ptycho_core import physics as core_physics
from ptycho_core.physics import BACKEND_PHYSICS, MERGE_EPSILON, NLL_EPSILON, canvas_padding
from ptycho_core.physics import border_mask as border_mask  # the core one, re-exported
from ptycho_tf._keras import tf

__all__ = [*BACKEND_PHYSICS, "illuminate"]


def shift_matrices(
    shift: tf.Tensor, n_in: int, n_out: int | None = None, start: int = 0
) -> tf.Tensor:
    """Bilinear resampling matrices, shape (M, n_out, n_in), one per entry of ``shift`` (M,).

    Row ``o`` samples the input at coordinate ``o + start − shift``:
    ``R[m, o, i] = max(0, 1 − |o + start − i − shift[m]|)``. The integer part
    ``o + start − i`` is formed exactly before the shift is subtracted.
    """
    n_out = n_in if n_out is None else n_out
    shift = tf.convert_to_tensor(shift)
    dtype = shift.dtype if shift.dtype.is_floating else tf.float32
    out_idx = tf.range(n_out, dtype=dtype) + tf.cast(start, dtype)
    in_idx = tf.range(n_in, dtype=dtype)
    distance = (out_idx[:, None] - in_idx[None, :])[None] - tf.cast(shift, dtype)[:, None, None]
    return tf.maximum(1.0 - tf.abs(distance), 0.0)


def _resample(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """``rows @ images @ colsᵀ`` per leading index; complex images are done part by part."""
    if images.dtype.is_complex:
        return tf.complex(
            _resample(tf.math.real(images), rows, cols), _resample(tf.math.imag(images), rows, cols)
        )
    return tf.matmul(tf.matmul(rows, images), cols, transpose_b=True)


def translate(images: tf.Tensor, dx: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """Move the content of ``images`` (M, H, W) by ``dx`` (M,) columns and ``dy`` (M,) rows.

    ``out[m, r, c] = images[m](r − dy[m], c − dx[m])``, bilinear, zero outside; the TF
    twin of :func:`ptycho_core.geometry.translate`. Real or complex input.
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 3:
        raise ValueError(
            f"translate: expected images of shape (M, H, W), found {tuple(images.shape)}"
        )
    h, w = int(images.shape[-2]), int(images.shape[-1])
    real_dtype = images.dtype.real_dtype
    rows = shift_matrices(tf.cast(dy, real_dtype), h)
    cols = shift_matrices(tf.cast(dx, real_dtype), w)
    return _resample(images, rows, cols)


def center_mask_1d(N: int, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """:func:`ptycho_core.physics.center_mask_1d` as a constant of ``dtype``."""
    return tf.constant(core_physics.center_mask_1d(N), dtype=dtype)


def pad_to_canvas(parts: tf.Tensor, P: int) -> tf.Tensor:
    """Zero-pad (..., N, N) images to (..., P, P), the patch at :func:`canvas_padding`."""
    N = int(parts.shape[-1])
    before = canvas_padding(N, P)
    after = P - N - before
    rank = parts.shape.rank
    paddings = [[0, 0]] * (rank - 2) + [[before, after], [before, after]]
    return tf.pad(parts, paddings)


def trim_canvas(canvas: tf.Tensor, N: int) -> tf.Tensor:
    """The central N×N of a (..., P, P) canvas (the inverse of :func:`pad_to_canvas`)."""
    start = canvas_padding(N, int(canvas.shape[-1]))
    return canvas[..., start : start + N, start : start + N]


def merge_patches(parts: tf.Tensor, offsets: tf.Tensor, P: int) -> tf.Tensor:
    """Merge (B, C, 2, N, N) [real, imag] patches into a (B, 2, P, P) canvas (``object_big``).

    Each patch is zero-padded to P, moved by ``−offsets`` (its position relative to the
    group centre) and summed; the sum is divided by the summed, moved centre masks plus
    :data:`MERGE_EPSILON`. Padding is folded into rectangular (P × N) resampling matrices.
    """
    C, N = int(parts.shape[1]), int(parts.shape[-1])
    B = tf.shape(parts)[0]
    dtype = parts.dtype
    start = -canvas_padding(N, P)
    flat = tf.reshape(tf.cast(offsets, dtype), (-1, 2))
    rows = tf.reshape(shift_matrices(-flat[:, 1], N, P, start), (B, C, P, N))
    cols = tf.reshape(shift_matrices(-flat[:, 0], N, P, start), (B, C, P, N))
    # Real and imaginary parts side by side, then on top of each other: every product has
    # equal batch shapes (TF 2.21's oneDNN batch matmul can crash when it broadcasts).
    left = tf.matmul(rows, tf.concat([parts[:, :, 0], parts[:, :, 1]], axis=-1))  # (B, C, P, 2N)
    stacked = tf.concat([left[..., :N], left[..., N:]], axis=-2)  # (B, C, 2P, N)
    moved = tf.matmul(stacked, cols, transpose_b=True)  # (B, C, 2P, P)
    numerator = tf.reshape(tf.reduce_sum(moved, axis=1), (B, 2, P, P))
    centre = center_mask_1d(N, dtype)
    row_weight = tf.reduce_sum(rows * centre, axis=-1)  # (B, C, P)
    col_weight = tf.reduce_sum(cols * centre, axis=-1)
    denominator = tf.reduce_sum(row_weight[..., :, None] * col_weight[..., None, :], axis=1)
    return numerator / (denominator[:, None] + MERGE_EPSILON)


def extract_patches(canvas: tf.Tensor, offsets: tf.Tensor, N: int) -> tf.Tensor:
    """The (B, C, 2, N, N) patches seen at each channel's position on a (B, 2, P, P) canvas.

    The canvas is moved by ``+offsets`` (bringing the pattern's position to the centre) and
    its central N×N kept; both steps are one pair of (N × P) resampling matrices.
    """
    C = int(offsets.shape[1])
    B = tf.shape(offsets)[0]
    P = int(canvas.shape[-1])
    dtype = canvas.dtype
    start = canvas_padding(N, P)
    flat = tf.reshape(tf.cast(offsets, dtype), (-1, 2))
    rows = tf.reshape(shift_matrices(flat[:, 1], P, N, start), (B, C * N, P))
    cols = tf.reshape(shift_matrices(flat[:, 0], P, N, start), (B, C, N, P))
    side_by_side = tf.concat([canvas[:, 0], canvas[:, 1]], axis=-1)  # (B, P, 2P)
    left = tf.reshape(tf.matmul(rows, side_by_side), (B, C, N, 2 * P))
    stacked = tf.concat([left[..., :P], left[..., P:]], axis=-2)  # (B, C, 2N, P)
    moved = tf.matmul(stacked, cols, transpose_b=True)  # (B, C, 2N, N)
    return tf.reshape(moved, (B, C, 2, N, N))


def gaussian_smooth(parts: tf.Tensor, sigma: float) -> tf.Tensor:
    """3×3 Gaussian smoothing of (..., N, N) real images, reflect-padded; σ = 0 is identity.

    Applied to the real and imaginary parts of the probe separately (complex smoothing).
    """
    if sigma == 0:
        return parts
    kernel = core_physics.smoothing_kernel(sigma)
    shape = tf.shape(parts)
    n_rows, n_cols = int(parts.shape[-2]), int(parts.shape[-1])
    flat = tf.reshape(parts, (-1, n_rows, n_cols, 1))
    padded = tf.pad(flat, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    filt = tf.constant(kernel[:, :, None, None], dtype=parts.dtype)
    smoothed = tf.nn.conv2d(padded, filt, strides=1, padding="VALID")
    return tf.reshape(smoothed, shape)


def effective_probe(
    probe_parts: tf.Tensor, *, sigma: float = 0.0, mask: tf.Tensor | None = None
) -> tf.Tensor:
    """The illuminating probe (2, N, N): P̃, optionally Gaussian-smoothed, optionally masked."""
    probe_parts = gaussian_smooth(probe_parts, sigma)
    if mask is not None:
        probe_parts = probe_parts * mask
    return probe_parts


def illuminate(patches: tf.Tensor, probe_parts: tf.Tensor) -> tf.Tensor:
    """Exit waves ψ = O·P̃ as complex64 (B, C, N, N) from (B, C, 2, N, N) object parts."""
    o_re, o_im = patches[:, :, 0], patches[:, :, 1]
    p_re, p_im = probe_parts[0], probe_parts[1]
    return tf.complex(o_re * p_re - o_im * p_im, o_re * p_im + o_im * p_re)


def diffract(field: tf.Tensor) -> tf.Tensor:
    """Far-field amplitude ``sqrt(fftshift(|fft2 ψ|²) / N²)`` of (..., N, N) complex exit waves.

    Computed as ``|fft2 ψ| / N`` (TF's ``ComplexAbs`` gradient is finite where the field is
    zero); zero frequency lands at (N/2, N/2).
    """
    N = int(field.shape[-1])
    amplitude = tf.abs(tf.signal.fft2d(field)) / float(N)
    return tf.signal.fftshift(amplitude, axes=(-2, -1))


def poisson_nll(predicted_amplitude: tf.Tensor, target_amplitude: tf.Tensor) -> tf.Tensor:
    """Per-element ``λ − k·log(λ + 1e-12)``, λ = predicted², k = target² (mean it for the loss).

    Amplitudes are in sqrt-count units (already multiplied by s₀).
    """
    rate = tf.square(predicted_amplitude)
    counts = tf.square(target_amplitude)
    return rate - counts * tf.math.log(rate + NLL_EPSILON)


def poisson_deviance(predicted_amplitude: tf.Tensor, target_amplitude: tf.Tensor) -> tf.Tensor:
    """Mean Poisson deviance ``2·(λ − k + k·log(k/λ))``: zero at a perfect fit (for logs)."""
    rate = tf.square(predicted_amplitude) + NLL_EPSILON
    counts = tf.square(target_amplitude)
    log_term = tf.where(counts > 0, counts * tf.math.log((counts + NLL_EPSILON) / rate), 0.0)
    return tf.reduce_mean(2.0 * (rate - counts + log_term))


def mae_loss(predicted_amplitude: tf.Tensor, target_amplitude: tf.Tensor) -> tf.Tensor:
    """Per-element absolute error of the amplitudes (mean it for the loss)."""
    return tf.abs(predicted_amplitude - target_amplitude)


def supervised_loss(amplitude: tf.Tensor, phase: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """``2·L1(amplitude, |target|) + 4·L1(phase, arg target)`` against complex object patches."""
    return 2.0 * tf.reduce_mean(tf.abs(amplitude - tf.abs(target))) + 4.0 * tf.reduce_mean(
        tf.abs(phase - tf.math.angle(target))
    )
