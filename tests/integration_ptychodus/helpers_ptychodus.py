"""Simulated ptycho datasets as Ptychodus data, written with Ptychodus's own classes and files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ptychodus.api.assemble import AssembledDiffractionData
from ptychodus.api.geometry import PixelGeometry
from ptychodus.api.io import save_diffraction_data, save_product
from ptychodus.api.object import Object, ObjectCenter
from ptychodus.api.probe import ProbeSequence
from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence
from ptychodus.api.product import Product, ProductMetadata

from ptycho_core.data import PtychoData

ENERGY_EV = 10_000.0
DETECTOR_DISTANCE_M = 1.0
DETECTOR_PIXEL_M = 75e-6
WAVELENGTH_M = 1.239841984e-6 / ENERGY_EV
CENTER = ObjectCenter(x_m=3e-6, y_m=-2e-6)  # off the origin, so a centre mix-up shows


def object_pixel_m(N: int) -> float:
    """Ptychodus's object pixel size λz / (N · detector pixel) for this geometry."""
    return WAVELENGTH_M * DETECTOR_DISTANCE_M / (N * DETECTOR_PIXEL_M)


@dataclass(frozen=True)
class PtychodusData:
    """A simulated dataset as Ptychodus sees it."""

    assembled: AssembledDiffractionData
    product: Product
    truth: np.ndarray


def to_ptychodus(
    data: PtychoData,
    *,
    initial_object: str = "ones",
    bad_pixels: np.ndarray | None = None,
    probe_modes: np.ndarray | None = None,
    name: str = "simulated",
) -> PtychodusData:
    """Counts, metres and a ProbeSequence from a ptycho dataset (the inverse of the adapter's mapping).

    ``initial_object`` is 'ones' (a flat initial guess of the truth's shape) or 'truth'.
    Positions use x_m = centre_x + (x − W/2)·dx, the geometry the adapter reads back.
    """
    assert data.object is not None
    N = data.N
    height, width = data.object.shape
    dx = object_pixel_m(N)
    x_m = CENTER.x_m + (data.xcoords - width / 2) * dx
    y_m = CENTER.y_m + (data.ycoords - height / 2) * dx
    positions = ProbePositionSequence(
        [
            ProbePosition(index=i, x_m=float(x), y_m=float(y))
            for i, (x, y) in enumerate(zip(x_m, y_m, strict=True))
        ]
    )
    pixel = PixelGeometry(width_m=dx, height_m=dx)
    probe_array = data.probe.astype(np.complex128) if probe_modes is None else probe_modes
    probes = ProbeSequence(array=probe_array, opr_weights=None, pixel_geometry=pixel)
    if initial_object == "truth":
        start = data.object.astype(np.complex128)
    else:
        start = np.ones(data.object.shape, dtype=np.complex128)
    obj = Object(array=start, pixel_geometry=pixel, center=CENTER)
    counts = np.rint(data.diffraction.astype(np.float64) ** 2).astype(np.int32)
    metadata = ProductMetadata(
        name=name,
        comments="ptycho test data",
        detector_distance_m=DETECTOR_DISTANCE_M,
        photon_energy_eV=ENERGY_EV,
        probe_photon_count=float(counts.sum(axis=(1, 2)).mean()),
        exposure_time_s=1.0,
        mass_attenuation_m2_per_kg=0.0,
        tomography_angle_deg=0.0,
    )
    product = Product(
        metadata=metadata, probe_positions=positions, probes=probes, object_=obj, losses=[]
    )
    mask = np.zeros((N, N), dtype=bool) if bad_pixels is None else bad_pixels
    assembled = AssembledDiffractionData(
        np.arange(data.n_positions, dtype=np.int64),
        counts,
        PixelGeometry(width_m=DETECTOR_PIXEL_M, height_m=DETECTOR_PIXEL_M),
        mask,
    )
    return PtychodusData(assembled=assembled, product=product, truth=data.object)


def write_input_folder(
    folder: Path, data: PtychodusData, *, algorithm: str, settings: dict[str, object]
) -> Path:
    """A Ptychodus batch input folder: diffraction.h5, product.h5 and settings.ini."""
    folder.mkdir(parents=True, exist_ok=True)
    save_diffraction_data(folder / "diffraction.h5", data.assembled)
    save_product(folder / "product.h5", data.product)
    lines = ["[Processing]", f"Algorithm = {algorithm}", "", "[Ptycho]"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    (folder / "settings.ini").write_text("\n".join(lines) + "\n")
    return folder


class Captured(logging.Handler):
    """Collect formatted log records (what Ptychodus's processing log would show)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self, level: int = logging.DEBUG) -> str:
        return "\n".join(r.getMessage() for r in self.records if r.levelno >= level)


def ptycho_reconstructor(core, key: str = "ptycho_pinn"):
    """Select ``key`` in Ptychodus (its processing API) and return that reconstructor."""
    core.processing_core.processing_api.set_reconstructor_if_provided(key)
    return core.processing_core.algorithm_parameter.get_current_reconstructor()


def set_settings(core, **values: object) -> None:
    """Set ``[Ptycho]`` parameters through Ptychodus's settings registry (as a settings file does)."""
    group = core.settings_registry["Ptycho"]
    for name, value in values.items():
        group.parameters()[name].set_value_from_string(str(value))


def load_into(core, folder: Path, data: PtychodusData, name: str):
    """Write ``data`` with Ptychodus's file writers and load it through its workflow API."""
    folder.mkdir(parents=True, exist_ok=True)
    save_diffraction_data(folder / f"{name}-diffraction.h5", data.assembled)
    save_product(folder / f"{name}-product.h5", data.product)
    diffraction = core.workflow_api.load_assembled_diffraction_data(
        folder / f"{name}-diffraction.h5"
    )
    return core.workflow_api.load_product(folder / f"{name}-product.h5", diffraction=diffraction)


def coverage(data: PtychoData, M: int = 20) -> np.ndarray:
    """Pixels of the object covered by the stitched central M × M crops (ptycho's stitching)."""
    from ptycho_core.stitching import stitch_patches

    ones = np.ones((data.n_positions, data.N, data.N), dtype=np.float32)
    assert data.object is not None
    return stitch_patches(ones, data.xcoords, data.ycoords, M=M, shape=data.object.shape).covered
