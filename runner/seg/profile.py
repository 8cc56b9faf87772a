"""Header-only dataset profiler: shapes, spacings, sizes, outliers and a safe patch size.

Only NIfTI headers are read (``nibabel.load`` is lazy; no voxel is touched), so profiling a
dataset of many gigabytes takes milliseconds per file. Cases come from ``dataset.json``
(Decathlon layout: ``training`` entries with ``image`` and ``label``) or, without one, from
``imagesTr/*.nii[.gz]`` matched by name with ``labelsTr/``.

Outlier rule: with three or more cases, a case is an outlier on an axis when its spacing differs
from the median spacing of that axis by more than a factor of ``SPACING_FACTOR`` (1.5), or its
shape by more than a factor of ``SHAPE_FACTOR`` (3), in either direction. Factors of the median
are robust with few cases, where a standard deviation is dominated by the outlier itself.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from runner import contract
from runner.seg.layout import DATASET_JSON, IMAGES_DIR, find_cases

SPACING_FACTOR = 1.5
SHAPE_FACTOR = 3.0
CACHE_DTYPES = {"image": "float32", "label": "uint8"}  # as the trainer holds them in memory
CACHE_ITEMSIZE = {"image": 4, "label": 1}
AXES = ("x", "y", "z")
Triple = tuple[int, int, int]


@dataclass(frozen=True)
class HeaderInfo:
    shape: Triple
    spacing: tuple[float, float, float]
    dtype: str
    unit: str  # of the spacing, from the header: "micron", "mm", "meter" or "unknown"
    file_bytes: int
    truncated: bool  # an uncompressed file shorter than its header promises


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    image: str
    label: str | None
    shape: Triple
    spacing: tuple[float, float, float]
    spacing_unit: str
    image_dtype: str
    label_dtype: str | None
    image_bytes: int
    label_bytes: int

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    @property
    def anisotropy(self) -> float:
        return max(self.spacing) / min(self.spacing)


@dataclass(frozen=True)
class Outlier:
    name: str
    kind: str  # "spacing" or "shape"
    axis: str
    value: float
    median: float

    @property
    def factor(self) -> float:
        return max(self.value / self.median, self.median / self.value)


@dataclass
class DatasetProfile:
    root: Path
    divisor: Triple
    volumes: list[VolumeInfo]
    problems: list[str] = field(default_factory=list)

    def shape_stats(self) -> dict[str, list[float]]:
        return _stats([v.shape for v in self.volumes])

    def spacing_stats(self) -> dict[str, list[float]]:
        return _stats([v.spacing for v in self.volumes])

    def outliers(self) -> list[Outlier]:
        return find_outliers(self.volumes)

    def safe_patch(self) -> Triple:
        return safe_patch([v.shape for v in self.volumes], self.divisor)

    def bytes(self) -> dict[str, int]:
        voxels = sum(v.voxels for v in self.volumes)
        return {"images_on_disk": sum(v.image_bytes for v in self.volumes),
                "labels_on_disk": sum(v.label_bytes for v in self.volumes),
                "images_cached": voxels * CACHE_ITEMSIZE["image"],
                "labels_cached": voxels * CACHE_ITEMSIZE["label"]}

    def to_json(self) -> dict[str, Any]:
        shapes, spacing = self.shape_stats(), self.spacing_stats()
        return {
            "schema": contract.schema_tag("data_profile"),
            "root": str(self.root),
            "n": len(self.volumes),
            "volumes": [{**asdict(v), "anisotropy": round(v.anisotropy, 3)}
                        for v in self.volumes],
            "shape": shapes,
            "spacing": spacing,
            "spacing_units": sorted({v.spacing_unit for v in self.volumes}),
            "anisotropy": {"median_spacing": _anisotropy(spacing["median"]),
                           "max": max((round(v.anisotropy, 3) for v in self.volumes),
                                      default=None)},
            "outliers": [{**asdict(o), "factor": round(o.factor, 3)} for o in self.outliers()],
            "outlier_rule": (f"spacing off the per-axis median by more than x{SPACING_FACTOR}, "
                             f"or shape by more than x{SHAPE_FACTOR} (needs >= 3 volumes)"),
            "bytes": self.bytes(),
            "cache_dtypes": CACHE_DTYPES,
            "divisor": list(self.divisor),
            "safe_patch": list(self.safe_patch()) if self.volumes else None,
            "problems": self.problems,
        }

    def render_text(self) -> str:
        return render_text(self.to_json())


def profile_dataset(root: Path, divisor: Sequence[int] = (16, 16, 4)) -> DatasetProfile:
    """Profile the cases under ``root`` from their headers alone."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such dataset directory: {root}")
    div = _triple(divisor)
    profile = DatasetProfile(root, div, [])
    for name, image, label in find_cases(root):
        volume = _profile_case(root, name, image, label, profile.problems)
        if volume is not None:
            profile.volumes.append(volume)
    if not profile.volumes:
        raise ValueError(f"no readable image volumes under {root} "
                         f"(expected {DATASET_JSON} or {IMAGES_DIR}/*.nii)")
    return profile


def read_header(path: Path) -> HeaderInfo:
    """Shape, spacing and dtype from the header; the voxel data is never read."""
    image = nib.load(path)
    if not isinstance(image, SpatialImage):
        raise ValueError(f"{type(image).__name__} is not a spatial image")
    shape = _shape3(image.shape)
    header = image.header
    zooms = [_float32_to_decimal(z) for z in header.get_zooms()[:3]]
    dtype = np.dtype(header.get_data_dtype())
    unit, offset = "unknown", None
    if isinstance(header, nib.Nifti1Header):  # NIfTI-2 headers are a subclass
        unit = str(header.get_xyzt_units()[0])  # type: ignore[no-untyped-call]  # untyped
        offset = int(header["vox_offset"])
    size = path.stat().st_size
    expected = (offset or 0) + math.prod(shape) * dtype.itemsize
    truncated = offset is not None and path.suffix == ".nii" and size < expected
    return HeaderInfo(shape, (zooms[0], zooms[1], zooms[2]), str(dtype), unit, size, truncated)


def _float32_to_decimal(value: float) -> float:
    """0.99 stored as float32 reads back as 0.9900000095...: keep the 7 digits it holds."""
    return float(f"{float(value):.7g}")


def _shape3(shape: Sequence[int]) -> Triple:
    dims = [int(n) for n in shape]
    if len(dims) == 4 and dims[3] == 1:
        dims = dims[:3]
    if len(dims) != 3:
        raise ValueError(f"expected a 3D volume, header says shape {tuple(dims)}")
    return dims[0], dims[1], dims[2]


def _profile_case(root: Path, name: str, image: str, label: str | None,
                  problems: list[str]) -> VolumeInfo | None:
    try:
        img = read_header(root / image)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        problems.append(f"{image}: unreadable header: {exc}")
        return None
    lab = _label_header(root, label, img, problems)
    if img.truncated:
        problems.append(f"{image}: file is shorter than its header says (truncated)")
    return VolumeInfo(name, image, label if lab else None, img.shape, img.spacing, img.unit,
                      img.dtype, lab.dtype if lab else None, img.file_bytes,
                      lab.file_bytes if lab else 0)


def _label_header(root: Path, label: str | None, img: HeaderInfo,
                  problems: list[str]) -> HeaderInfo | None:
    if label is None or not (root / label).is_file():
        problems.append(f"{label or 'label'}: missing")
        return None
    try:
        lab = read_header(root / label)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        problems.append(f"{label}: unreadable header: {exc}")
        return None
    if lab.shape != img.shape:
        problems.append(f"{label}: shape {lab.shape} differs from its image's {img.shape}")
    if any(not math.isclose(a, b, rel_tol=1e-3) for a, b in zip(lab.spacing, img.spacing,
                                                                 strict=True)):
        problems.append(f"{label}: spacing {lab.spacing} differs from its image's {img.spacing}")
    if lab.truncated:
        problems.append(f"{label}: file is shorter than its header says (truncated)")
    return lab


def find_outliers(volumes: Sequence[VolumeInfo]) -> list[Outlier]:
    """Cases whose spacing or shape is far from the per-axis median (see module docs)."""
    if len(volumes) < 3:
        return []
    found = []
    for kind, factor in (("spacing", SPACING_FACTOR), ("shape", SHAPE_FACTOR)):
        values = [getattr(v, kind) for v in volumes]
        for axis, name in enumerate(AXES):
            median = statistics.median(float(v[axis]) for v in values)
            found += [Outlier(vol.name, kind, name, float(val[axis]), median)
                      for vol, val in zip(volumes, values, strict=True)
                      if median > 0 and _off_by(float(val[axis]), median, factor)]
    return sorted(found, key=lambda o: (o.name, o.kind, o.axis))


def _off_by(value: float, median: float, factor: float) -> bool:
    return value <= 0 or value > median * factor or value < median / factor


def safe_patch(shapes: Sequence[Sequence[int]], divisor: Sequence[int]) -> Triple:
    """Per axis: the smallest shape rounded up to a multiple of the divisor.

    That is the largest divisor-multiple patch not larger than the padded minimum shape: the
    smallest volume needs at most ``divisor - 1`` voxels of padding on that axis, and every
    other volume at most as much, so no patch is mostly padding.
    """
    div = _triple(divisor)
    mins = [min(int(s[axis]) for s in shapes) for axis in range(3)]
    patch = [math.ceil(m / d) * d for m, d in zip(mins, div, strict=True)]
    return patch[0], patch[1], patch[2]


def render_text(doc: dict[str, Any]) -> str:
    """A short human summary of a profile's JSON."""
    mb = {k: v / 2**20 for k, v in doc["bytes"].items()}
    lines = [f"dataset  {doc['root']}  ({doc['n']} volumes)"]
    units = "/".join(doc["spacing_units"])
    for key, unit in (("shape", "voxels"), ("spacing", units)):
        for stat in ("min", "median", "max"):
            lines.append(f"{key:8} {stat:6} {' x '.join(_fmt(v) for v in doc[key][stat])}"
                         f"  ({unit})")
    lines.append(f"anisotropy (median spacing) {doc['anisotropy']['median_spacing']}, "
                 f"max {doc['anisotropy']['max']}")
    lines.append(f"on disk  images {mb['images_on_disk']:.1f} MiB, labels "
                 f"{mb['labels_on_disk']:.1f} MiB")
    lines.append(f"cached   images {mb['images_cached']:.1f} MiB (float32), labels "
                 f"{mb['labels_cached']:.1f} MiB (uint8)")
    lines.append(f"safe patch {' x '.join(map(str, doc['safe_patch']))} "
                 f"(divisor {' x '.join(map(str, doc['divisor']))})")
    lines += [f"outlier  {o['name']}: {o['kind']} {o['axis']} = {_fmt(o['value'])} "
              f"(median {_fmt(o['median'])}, x{o['factor']})" for o in doc["outliers"]]
    lines += [f"problem  {p}" for p in doc["problems"]]
    return "\n".join(lines)


def _stats(rows: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    columns = list(zip(*rows, strict=True)) if rows else [(), (), ()]
    return {"min": [min(c, default=0) for c in columns],
            "median": [statistics.median(c) if c else 0 for c in columns],
            "max": [max(c, default=0) for c in columns]}


def _anisotropy(spacing: Sequence[float]) -> float | None:
    return round(max(spacing) / min(spacing), 3) if min(spacing, default=0) > 0 else None


def _triple(values: Sequence[int]) -> Triple:
    if len(values) != 3 or any(int(v) < 1 for v in values):
        raise ValueError(f"divisor needs three positive integers, got {list(values)}")
    return int(values[0]), int(values[1]), int(values[2])


def _fmt(value: float) -> str:
    return f"{value:g}"
