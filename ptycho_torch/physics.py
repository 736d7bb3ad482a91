"""The differentiable physics of PtychoPINN in torch: translation, merge, illumination, diffraction, losses.

Everything here follows ``specs/model.md`` §4, §5 and §7 and the numpy references in
``ptycho_core.geometry`` / ``ptycho_core.physics``:

- :func:`translate` moves image content by ``+dx`` columns and ``+dy`` rows, bilinear with
  zero fill, exactly as :func:`ptycho_core.geometry.translate` (matched to 1e-5 in tests).
  It is written as two small matrix products, ``R_y · image · R_xᵀ``, whose entries are the
  bilinear ("tent") weights ``max(0, 1 − |o − shift − i|)``. That is exact bilinear
  interpolation, deterministic on every device (``grid_sample``'s CUDA backward is not) and
  lets padding and cropping be folded into rectangular matrices.
- :func:`merge_patches` builds the ``object_big`` canvas
  ``Σ_c T(pad(O_c), −δ_c) / (Σ_c T(pad(m), −δ_c) + 0.001)`` (TF formula, numerator unmasked).
- :func:`extract_patches` crops the central N×N of the canvas translated by ``+δ_c``.
- :func:`diffract` gives ``A = sqrt(fftshift(|fft2 ψ|²) / N²)`` as ``|fft2(ψ, 'ortho')|``.
- The losses use the shared convention: Poisson NLL ``mean(λ − k·log(λ + 1e-12))`` with
  ``λ = predicted²`` and ``k = (s₀·X_n)²``; MAE; supervised ``2·L1(amp) + 4·L1(phase)``.

Offsets ``δ`` are per-pattern ``coords_relative`` = −(position − group centre), in pixels,
laid out (B, C, 2) with [x, y] = [column, row] order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ptycho_core import physics as core_physics
from ptycho_core.physics import BACKEND_PHYSICS, MERGE_EPSILON, NLL_EPSILON, canvas_padding

__all__ = list(BACKEND_PHYSICS)


def shift_matrices(
    shift: torch.Tensor, n_in: int, n_out: int | None = None, start: int = 0
) -> torch.Tensor:
    """Bilinear resampling matrices, shape (M, n_out, n_in), one per entry of ``shift`` (M,).

    Row ``o`` samples the input at coordinate ``o + start − shift``:
    ``R[m, o, i] = max(0, 1 − |o + start − i − shift[m]|)``. The integer part
    ``o + start − i`` is formed exactly before the shift is subtracted, so the weights keep
    full float precision however large the image.
    """
    n_out = n_in if n_out is None else n_out
    dtype = shift.dtype if shift.is_floating_point() else torch.float32
    out_idx = torch.arange(n_out, device=shift.device, dtype=dtype) + start
    in_idx = torch.arange(n_in, device=shift.device, dtype=dtype)
    distance = (out_idx[:, None] - in_idx[None, :])[None] - shift.to(dtype)[:, None, None]
    return torch.clamp(1.0 - distance.abs(), min=0.0)


def _resample(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ images @ colsᵀ`` per leading index; complex images are done part by part."""
    if images.is_complex():
        return torch.complex(_resample(images.real, rows, cols), _resample(images.imag, rows, cols))
    return rows @ images @ cols.transpose(-1, -2)


def translate(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Move the content of ``images`` (M, H, W) by ``dx`` (M,) columns and ``dy`` (M,) rows.

    ``out[m, r, c] = images[m](r − dy[m], c − dx[m])``, bilinear, zero outside; the torch
    twin of :func:`ptycho_core.geometry.translate`. Real or complex input.
    """
    if images.ndim != 3:
        raise ValueError(
            f"translate: expected images of shape (M, H, W), found {tuple(images.shape)}"
        )
    h, w = images.shape[-2:]
    real_dtype = images.real.dtype if images.is_complex() else images.dtype
    rows = shift_matrices(dy.to(real_dtype), h)
    cols = shift_matrices(dx.to(real_dtype), w)
    return _resample(images, rows, cols)


def center_mask_1d(N: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """:func:`ptycho_core.physics.center_mask_1d` as a tensor of ``dtype`` on ``device``."""
    return torch.tensor(core_physics.center_mask_1d(N), dtype=dtype, device=device)


def border_mask(N: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:func:`ptycho_core.physics.border_mask` (ones outside the central N/2 box) as a tensor."""
    return torch.tensor(core_physics.border_mask(N), dtype=dtype)


def pad_to_canvas(patches: torch.Tensor, P: int) -> torch.Tensor:
    """Zero-pad (..., N, N) patches to (..., P, P), the patch at :func:`canvas_padding`."""
    N = patches.shape[-1]
    before = canvas_padding(N, P)
    after = P - N - before
    if patches.is_complex():
        return torch.complex(pad_to_canvas(patches.real, P), pad_to_canvas(patches.imag, P))
    return F.pad(patches, (before, after, before, after))


def trim_canvas(canvas: torch.Tensor, N: int) -> torch.Tensor:
    """The central N×N of a (..., P, P) canvas (the inverse of :func:`pad_to_canvas`)."""
    start = canvas_padding(N, canvas.shape[-1])
    return canvas[..., start : start + N, start : start + N]


def merge_patches(patches: torch.Tensor, offsets: torch.Tensor, P: int) -> torch.Tensor:
    """Merge (B, C, N, N) complex patches into a (B, 1, P, P) canvas (``object_big``).

    Each patch is zero-padded to P, moved by ``−offsets`` (its position relative to the
    group centre) and summed; the sum is divided by the summed, moved centre masks plus
    :data:`MERGE_EPSILON`. Padding is folded into rectangular (P × N) resampling matrices.
    """
    B, C, N, _ = patches.shape
    real_dtype = patches.real.dtype
    start = -canvas_padding(N, P)
    flat = offsets.reshape(B * C, 2).to(real_dtype)
    rows = shift_matrices(-flat[:, 1], N, P, start).reshape(B, C, P, N)
    cols = shift_matrices(-flat[:, 0], N, P, start).reshape(B, C, P, N)
    parts = torch.stack((patches.real, patches.imag), dim=2)  # (B, C, 2, N, N)
    moved = rows[:, :, None] @ parts @ cols[:, :, None].transpose(-1, -2)
    numerator = moved.sum(dim=1)  # (B, 2, P, P)
    centre = center_mask_1d(N, dtype=real_dtype, device=patches.device)
    row_weight = rows @ centre  # (B, C, P)
    col_weight = cols @ centre
    denominator = (row_weight[..., :, None] * col_weight[..., None, :]).sum(dim=1)
    canvas = numerator / (denominator[:, None] + MERGE_EPSILON)
    return torch.complex(canvas[:, 0], canvas[:, 1])[:, None]


def extract_patches(canvas: torch.Tensor, offsets: torch.Tensor, N: int) -> torch.Tensor:
    """The (B, C, N, N) patches seen at each channel's position on a (B, 1, P, P) canvas.

    The canvas is moved by ``+offsets`` (bringing the pattern's position to the centre) and
    its central N×N kept; both steps are one pair of (N × P) resampling matrices.
    """
    B, C = offsets.shape[:2]
    P = canvas.shape[-1]
    real_dtype = canvas.real.dtype if canvas.is_complex() else canvas.dtype
    start = canvas_padding(N, P)
    flat = offsets.reshape(B * C, 2).to(real_dtype)
    rows = shift_matrices(flat[:, 1], P, N, start).reshape(B, C, N, P)
    cols = shift_matrices(flat[:, 0], P, N, start).reshape(B, C, N, P)
    return _resample(canvas, rows, cols)


def _reflect_pad_1(x: torch.Tensor) -> torch.Tensor:
    """One pixel of reflect padding on the last two axes, written with slices: unlike
    ``F.pad(mode='reflect')`` its gradient is deterministic on CUDA."""
    x = torch.cat((x[..., 1:2, :], x, x[..., -2:-1, :]), dim=-2)
    return torch.cat((x[..., :, 1:2], x, x[..., :, -2:-1]), dim=-1)


def gaussian_smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Complex 3×3 Gaussian smoothing of a (..., N, N) field, reflect-padded; σ = 0 is identity."""
    if sigma == 0:
        return field
    if field.is_complex():
        return torch.complex(gaussian_smooth(field.real, sigma), gaussian_smooth(field.imag, sigma))
    kernel = torch.tensor(
        core_physics.smoothing_kernel(sigma), dtype=field.dtype, device=field.device
    )
    shape = field.shape
    flat = field.reshape(-1, 1, *shape[-2:])
    smoothed = F.conv2d(_reflect_pad_1(flat), kernel[None, None])
    return smoothed.reshape(shape)


def effective_probe(
    probe: torch.Tensor, *, sigma: float = 0.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The illuminating probe: P̃, optionally Gaussian-smoothed, optionally times the disk mask."""
    probe = gaussian_smooth(probe, sigma)
    if mask is not None:
        probe = probe * mask
    return probe


def diffract(field: torch.Tensor) -> torch.Tensor:
    """Far-field amplitude ``sqrt(fftshift(|fft2 ψ|²) / N²)`` of (..., N, N) exit waves.

    Computed as ``|fft2(ψ, norm='ortho')|`` (identical, and its gradient stays finite where
    the field is zero); zero frequency lands at (N/2, N/2).
    """
    spectrum = torch.fft.fft2(field, norm="ortho")
    return torch.fft.fftshift(spectrum.abs(), dim=(-2, -1))


def poisson_nll(predicted_amplitude: torch.Tensor, target_amplitude: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of ``λ − k·log(λ + 1e-12)``, λ = predicted², k = target².

    Amplitudes are in sqrt-count units (already multiplied by s₀).
    """
    rate = predicted_amplitude.square()
    counts = target_amplitude.square()
    return (rate - counts * torch.log(rate + NLL_EPSILON)).mean()


def poisson_deviance(
    predicted_amplitude: torch.Tensor, target_amplitude: torch.Tensor
) -> torch.Tensor:
    """Mean Poisson deviance ``2·(λ − k + k·log(k/λ))``: zero at a perfect fit (for logs)."""
    rate = predicted_amplitude.square() + NLL_EPSILON
    counts = target_amplitude.square()
    log_term = torch.where(counts > 0, counts * torch.log((counts + NLL_EPSILON) / rate), 0.0)
    return (2.0 * (rate - counts + log_term)).mean()


def mae_loss(predicted_amplitude: torch.Tensor, target_amplitude: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of the amplitudes."""
    return (predicted_amplitude - target_amplitude).abs().mean()


def supervised_loss(
    amplitude: torch.Tensor, phase: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """``2·L1(amplitude, |target|) + 4·L1(phase, arg target)`` against complex object patches."""
    return (
        2.0 * (amplitude - target.abs()).abs().mean()
        + 4.0 * (phase - torch.angle(target)).abs().mean()
    )
