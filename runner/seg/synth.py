"""Synthetic two-photon-like microvessel datasets, written as uncompressed NIfTI.

A dataset is ``imagesTr/NAME.nii`` + ``labelsTr/NAME.nii`` per case and a ``dataset.json`` in
the Medical Segmentation Decathlon layout that MONAI's ``load_decathlon_datalist`` reads. Labels
are branching tubes (``runner.seg.vessels``); the image is what a two-photon microscope would
record of them: the vessel lumen blurred by an anisotropic point-spread function, on a textured
background, dimmer with depth, with photon (Poisson) and read (Gaussian) noise, as 12-bit counts.

Everything follows from ``seed``: case ``i`` draws from ``SeedSequence(seed, spawn_key=(i,))``,
so the same seed writes identical bytes, and the dataset-level plan (which cases get a small Z,
which one gets the outlier spacing) draws from ``seed`` alone.
"""

from __future__ import annotations

import functools
import multiprocessing
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from runner import contract
from runner.seg.layout import DATASET_JSON, IMAGES_DIR, LABELS_DIR
from runner.seg.vessels import Spacing, grow_tree, rasterize

GENERATOR_VERSION = 1

TYPICAL_SPACING: Spacing = (0.99, 0.99, 5.0)  # um, X Y Z: a usual two-photon stack
OUTLIER_SPACING: Spacing = (0.5, 0.5, 2.0)  # one case is sampled twice as finely
Z_RANGE = (12, 40)  # slices of a typical case, inclusive
SMALL_Z = (5, 6, 7)  # slices of the thin cases, the first one always used


@dataclass(frozen=True)
class Optics:
    """Imaging model; lengths in um, intensities relative to a vessel at the surface."""

    psf_lateral: float = 0.6  # Gaussian sigma of the PSF in X and Y
    psf_axial: float = 2.5  # Gaussian sigma along Z (two-photon PSFs are elongated)
    attenuation_length: tuple[float, float] = (150.0, 300.0)  # exp(-depth / L), L uniform
    background: float = 0.15  # mean background level (autofluorescence, neuropil)
    texture: float = 0.05  # amplitude of the fine background texture
    peak_photons: float = 40.0  # expected photons of a surface vessel voxel
    gain: float = 60.0  # counts per photon
    offset: float = 100.0  # detector offset in counts
    read_noise: float = 20.0  # Gaussian read noise in counts
    max_count: int = 4095  # 12-bit digitizer


@dataclass(frozen=True)
class CasePlan:
    index: int
    name: str
    shape: tuple[int, int, int]
    spacing: Spacing
    role: str  # "typical", "small_z" or "spacing_outlier"


@dataclass(frozen=True)
class SynthCase:
    name: str
    image: str  # relative to the dataset root
    label: str
    shape: tuple[int, int, int]
    spacing: Spacing
    role: str
    foreground_fraction: float
    bytes: int  # image + label file sizes


@dataclass(frozen=True)
class SynthReport:
    out_dir: Path
    seed: int
    size: int
    cases: tuple[SynthCase, ...]
    seconds: float

    @property
    def total_bytes(self) -> int:
        return sum(case.bytes for case in self.cases)

    def to_json(self) -> dict[str, Any]:
        return {"schema": contract.schema_tag("synth_report"), "out_dir": str(self.out_dir),
                "seed": self.seed, "size": self.size, "n": len(self.cases),
                "total_bytes": self.total_bytes, "seconds": round(self.seconds, 3),
                "cases": [asdict(case) for case in self.cases]}

    def render_text(self) -> str:
        roles = [case.role for case in self.cases]
        depths = [case.shape[2] for case in self.cases]
        return (f"wrote {len(self.cases)} volumes ({self.total_bytes / 2**20:.1f} MiB) to "
                f"{self.out_dir} in {self.seconds:.1f} s\n"
                f"  {self.size} x {self.size} x Z with Z {min(depths)}..{max(depths)}; "
                f"{roles.count('small_z')} small-Z, {roles.count('spacing_outlier')} "
                f"spacing outlier; seed {self.seed}")


class DatasetExists(FileExistsError):
    """The output directory already holds files; synthesize refuses to mix datasets."""


def plan_cases(n: int, size: int, seed: int) -> list[CasePlan]:
    """Shapes, spacings and roles of ``n`` cases; one spacing outlier and n//8 thin cases."""
    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8 (got n={n}, size={size})")
    rng = np.random.default_rng(seed)
    depths = rng.integers(Z_RANGE[0], Z_RANGE[1] + 1, size=n).tolist()
    order = rng.permutation(n).tolist()
    outlier = order[0] if n >= 2 else None
    thin = order[1:1 + max(1, n // 8)] if n >= 3 else []
    plans = []
    for index in range(n):
        depth, spacing, role = depths[index], TYPICAL_SPACING, "typical"
        if index == outlier:
            spacing, role = OUTLIER_SPACING, "spacing_outlier"
        elif index in thin:
            depth, role = SMALL_Z[thin.index(index) % len(SMALL_Z)], "small_z"
        plans.append(CasePlan(index, f"vessel_{index:03d}", (size, size, depth), spacing, role))
    return plans


def synthesize(out_dir: Path, n: int = 24, size: int = 256, seed: int = 0, *,
               overwrite: bool = False, workers: int = 1,
               optics: Optics = Optics(),
               progress: Callable[[int], object] | None = None) -> SynthReport:
    """Write ``n`` cases of ``size`` x ``size`` x Z and a dataset.json under ``out_dir``.

    ``workers`` > 1 makes cases in that many spawned processes; the bytes are the same.
    ``progress`` is called with 1 as each case is written, in order.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    plans = plan_cases(n, size, seed)
    _prepare(out_dir, overwrite)
    write = functools.partial(_write_case, out_dir, seed=seed, optics=optics)
    if workers > 1 and n > 1:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        with ProcessPoolExecutor(min(workers, n), mp_context=context) as pool:
            cases = tuple(_counted(pool.map(write, plans), progress))
    else:
        cases = tuple(_counted(map(write, plans), progress))
    contract.atomic_write_json(out_dir / DATASET_JSON, dataset_json(cases, seed, size))
    return SynthReport(out_dir, seed, size, cases, time.perf_counter() - started)


def _counted(cases: Iterable[SynthCase],
             progress: Callable[[int], object] | None) -> Iterator[SynthCase]:
    for case in cases:
        if progress is not None:
            progress(1)
        yield case


def _prepare(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise DatasetExists(f"{out_dir} is not empty")
        (out_dir / DATASET_JSON).unlink(missing_ok=True)
        for sub in (IMAGES_DIR, LABELS_DIR):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    for sub in (IMAGES_DIR, LABELS_DIR):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)


def _write_case(out_dir: Path, plan: CasePlan, *, seed: int, optics: Optics) -> SynthCase:
    label, image = make_case(plan, seed, optics)
    image_rel, label_rel = f"{IMAGES_DIR}/{plan.name}.nii", f"{LABELS_DIR}/{plan.name}.nii"
    written = write_nifti(out_dir / image_rel, image, plan.spacing)
    written += write_nifti(out_dir / label_rel, label, plan.spacing)
    return SynthCase(plan.name, image_rel, label_rel, plan.shape, plan.spacing, plan.role,
                     round(float(label.mean()), 6), written)


def make_case(plan: CasePlan, seed: int,
              optics: Optics = Optics()) -> tuple[NDArray[np.uint8], NDArray[np.uint16]]:
    """The label (0/1, uint8) and the image (12-bit counts, uint16) of one case."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(plan.index,)))
    extent = tuple((n - 1) * s for n, s in zip(plan.shape, plan.spacing, strict=True))
    points = grow_tree(rng, (extent[0], extent[1], extent[2]))
    label = rasterize(points, plan.shape, plan.spacing)
    return label.astype(np.uint8), render_image(label, plan.spacing, rng, optics)


def render_image(label: NDArray[np.bool_], spacing: Spacing, rng: np.random.Generator,
                 optics: Optics = Optics()) -> NDArray[np.uint16]:
    """What the microscope records of ``label``: blur, background, attenuation, noise."""
    shape = label.shape
    vessel = label.astype(np.float32) * smooth_field(rng, shape, spacing,
                                                      cell_um=40.0, low=0.7, high=1.3)
    sigma = (optics.psf_lateral / spacing[0], optics.psf_lateral / spacing[1],
             optics.psf_axial / spacing[2])
    signal = ndimage.gaussian_filter(vessel, sigma, mode="nearest", truncate=3.0)
    signal += optics.background * smooth_field(rng, shape, spacing, cell_um=60.0,
                                                     low=0.5, high=1.5)
    fine = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.0)
    signal += optics.texture * fine / max(float(fine.std()), 1e-6)
    depth_um = np.arange(shape[2], dtype=np.float32) * spacing[2]
    length = rng.uniform(*optics.attenuation_length)
    signal *= np.exp(-depth_um / length)[None, None, :]
    photons = rng.poisson(np.clip(signal, 0.0, None) * optics.peak_photons).astype(np.float32)
    counts = photons * np.float32(optics.gain) + np.float32(optics.offset)
    counts += rng.standard_normal(shape, dtype=np.float32) * np.float32(optics.read_noise)
    image: NDArray[np.uint16] = np.clip(np.rint(counts), 0, optics.max_count).astype(np.uint16)
    return image


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], spacing: Spacing, *,
                 cell_um: float, low: float, high: float) -> NDArray[np.float32]:
    """A random field between ``low`` and ``high`` varying over about ``cell_um``.

    Uniform values on a coarse grid, interpolated linearly one axis at a time.
    """
    coarse_shape = [max(2, round(n * s / cell_um) + 1) for n, s in zip(shape, spacing, strict=True)]
    coarse = rng.uniform(low, high, size=coarse_shape).astype(np.float32)
    wx, wy, wz = (_linear_weights(n, c) for n, c in zip(shape, coarse_shape, strict=True))
    field = np.einsum("yb,xbc->xyc", wy, np.tensordot(wx, coarse, axes=1))
    out: NDArray[np.float32] = (field.reshape(-1, coarse_shape[2]) @ wz.T).reshape(shape)
    return out


def _linear_weights(fine: int, coarse: int) -> NDArray[np.float32]:
    """(fine, coarse) matrix of linear interpolation from a coarse grid spanning the axis."""
    pos = np.linspace(0.0, coarse - 1, fine)
    left = np.minimum(np.floor(pos).astype(np.int64), coarse - 2)
    frac = (pos - left).astype(np.float32)
    weights = np.zeros((fine, coarse), dtype=np.float32)
    weights[np.arange(fine), left] = 1.0 - frac
    weights[np.arange(fine), left + 1] = frac
    return weights


def write_nifti(path: Path, data: NDArray[Any], spacing: Spacing) -> int:
    """Write ``data`` as a single-file NIfTI-1 with ``spacing`` (um) in the affine."""
    # nibabel's constructors and setters are untyped
    image = nib.Nifti1Image(data, np.diag([*spacing, 1.0]))  # type: ignore[no-untyped-call]
    image.header.set_xyzt_units("micron")  # type: ignore[no-untyped-call]
    image.header["descrip"] = b"ops synthetic two-photon vessels"
    payload = image.to_bytes()
    contract.atomic_write_bytes(path, payload)
    return len(payload)


def dataset_json(cases: tuple[SynthCase, ...], seed: int, size: int) -> dict[str, Any]:
    """The Decathlon-style index, plus an ``ops`` block recording how it was made."""
    return {
        "name": "ops-synthetic-vessels",
        "description": "Synthetic two-photon-like microvessel volumes (runner.seg.synth)",
        "tensorImageSize": "3D",
        "modality": {"0": "two-photon (synthetic)"},
        "labels": {"0": "background", "1": "vessel"},
        "numTraining": len(cases),
        "numTest": 0,
        "training": [{"image": case.image, "label": case.label} for case in cases],
        "test": [],
        "ops": {"schema": contract.schema_tag("synth_dataset"),
                "generator_version": GENERATOR_VERSION, "seed": seed, "size": size,
                "spacing_unit": "um",
                "cases": [{"name": case.name, "shape": list(case.shape),
                           "spacing": list(case.spacing), "role": case.role,
                           "foreground_fraction": case.foreground_fraction}
                          for case in cases]},
    }
