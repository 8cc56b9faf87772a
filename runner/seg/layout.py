"""Where a segmentation dataset keeps its files (standard library only).

The layout is the Medical Segmentation Decathlon's, which MONAI's ``load_decathlon_datalist``
reads: ``imagesTr/NAME.nii[.gz]``, ``labelsTr/NAME.nii[.gz]`` and a ``dataset.json`` whose
``training`` list pairs them. A directory without ``dataset.json`` is read by file name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASET_JSON = "dataset.json"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def load_dataset_json(root: Path) -> dict[str, Any]:
    """The dataset.json of ``root`` (any Decathlon-style index, not only ours)."""
    path = Path(root) / DATASET_JSON
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return doc


def find_cases(root: Path) -> list[tuple[str, str, str | None]]:
    """(name, image, label) of every training case, paths relative to ``root``."""
    root = Path(root)
    if (root / DATASET_JSON).is_file():
        entries = load_dataset_json(root).get("training", [])
        pairs = [(_relative(e["image"]), _relative(e["label"]) if e.get("label") else None)
                 for e in entries if isinstance(e, dict) and e.get("image")]
    else:
        images = sorted(p for p in (root / IMAGES_DIR).glob("*.nii*") if case_name(p.name))
        pairs = [(f"{IMAGES_DIR}/{p.name}", f"{LABELS_DIR}/{p.name}") for p in images]
    return [(case_name(image), image, label) for image, label in pairs]


def case_name(path: str) -> str:
    """``imagesTr/vessel_000.nii.gz`` -> ``vessel_000``; empty for a non-NIfTI name."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return ""


def _relative(path: str) -> str:
    return path[2:] if path.startswith("./") else path
