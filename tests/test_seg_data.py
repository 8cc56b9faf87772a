"""runner.seg data side: synthetic volumes, the header-only profiler, k-fold splits, `ops data`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from ops.cli.data_cmds import data_group
from ops.errors import ConflictError, NotFoundError, OpsError, UsageError
from ops.services import data
from runner import contract
from runner.seg import profile as seg_profile
from runner.seg import splits as seg_splits
from runner.seg import synth

N, SIZE = 8, 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synth.synthesize(out, n=N, size=SIZE, seed=0)
    return out


def _cases(root: Path) -> list[dict[str, Any]]:
    doc = json.loads((root / "dataset.json").read_text())
    cases: list[dict[str, Any]] = doc["ops"]["cases"]
    return cases


def _nifti(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


def _volume(root: Path, rel: str) -> np.ndarray:
    return np.asarray(_nifti(root / rel).dataobj)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- synthesis -------------------------------------------------------------------------------


def test_same_seed_writes_identical_bytes_and_another_seed_differs(
        dataset: Path, tmp_path: Path) -> None:
    synth.synthesize(tmp_path / "again", n=N, size=SIZE, seed=0)
    synth.synthesize(tmp_path / "other", n=N, size=SIZE, seed=1)
    assert _files(tmp_path / "again") == _files(dataset)
    other = _files(tmp_path / "other")
    assert other.keys() == _files(dataset).keys()
    assert other["labelsTr/vessel_000.nii"] != _files(dataset)["labelsTr/vessel_000.nii"]


def test_worker_processes_write_the_same_bytes(dataset: Path, tmp_path: Path) -> None:
    synth.synthesize(tmp_path / "parallel", n=N, size=SIZE, seed=0, workers=2)
    assert _files(tmp_path / "parallel") == _files(dataset)


def test_dataset_json_pairs_images_and_labels(dataset: Path) -> None:
    doc = json.loads((dataset / "dataset.json").read_text())
    assert doc["numTraining"] == N
    for entry in doc["training"]:
        assert (dataset / entry["image"]).is_file()
        assert (dataset / entry["label"]).is_file()
        assert entry["image"].endswith(".nii")  # uncompressed


def test_small_z_and_one_spacing_outlier_are_written_into_the_headers(dataset: Path) -> None:
    cases = _cases(dataset)
    roles = [c["role"] for c in cases]
    assert roles.count("spacing_outlier") == 1
    assert roles.count("small_z") == N // 8
    for case in cases:
        header = _nifti(dataset / f"imagesTr/{case['name']}.nii").header
        assert header.get_data_shape() == tuple(case["shape"])
        assert header.get_zooms() == pytest.approx(case["spacing"])
        assert header.get_xyzt_units()[0] == "micron"
    assert min(c["shape"][2] for c in cases) == 5
    outlier = next(c for c in cases if c["role"] == "spacing_outlier")
    assert tuple(outlier["spacing"]) == synth.OUTLIER_SPACING


def test_labels_are_binary_tubular_and_the_image_shows_them(dataset: Path) -> None:
    for case in _cases(dataset):
        label = _volume(dataset, f"labelsTr/{case['name']}.nii")
        image = _volume(dataset, f"imagesTr/{case['name']}.nii").astype(np.float64)
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        assert 0.005 < label.mean() < 0.3
        _, components = ndimage.label(label, structure=np.ones((3, 3, 3)))
        assert 1 <= components <= 8
        assert image[label == 1].mean() > image[label == 0].mean() + 200  # vessels are bright


def test_deep_volumes_are_dimmer_at_the_bottom(dataset: Path) -> None:
    deep = [c for c in _cases(dataset) if c["role"] == "typical"]
    for case in deep:
        image = _volume(dataset, f"imagesTr/{case['name']}.nii").astype(np.float64)
        assert image[:, :, :3].mean() > image[:, :, -3:].mean()


def test_refuses_a_non_empty_directory_unless_overwriting(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(synth.DatasetExists):
        synth.synthesize(tmp_path, n=2, size=16)
    synth.synthesize(tmp_path, n=2, size=16, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert len(list((tmp_path / "imagesTr").iterdir())) == 2


# --- profiling -------------------------------------------------------------------------------


def test_profile_reports_shapes_bytes_outliers_and_patch(dataset: Path) -> None:
    doc = seg_profile.profile_dataset(dataset).to_json()
    cases = {c["name"]: c for c in _cases(dataset)}
    assert doc["schema"] == "ops.data_profile/1" and doc["n"] == N
    assert doc["shape"]["min"] == [SIZE, SIZE, 5]
    voxels = sum(int(np.prod(c["shape"])) for c in cases.values())
    assert doc["bytes"]["images_cached"] == voxels * 4
    assert doc["bytes"]["labels_cached"] == voxels
    assert doc["bytes"]["images_on_disk"] == sum(
        (dataset / f"imagesTr/{n}.nii").stat().st_size for n in cases)
    flagged = {(o["name"], o["kind"]) for o in doc["outliers"]}
    expected = {(n, "spacing") for n, c in cases.items() if c["role"] == "spacing_outlier"}
    expected |= {(n, "shape") for n, c in cases.items() if c["role"] == "small_z"}
    assert flagged == expected
    assert doc["safe_patch"] == [32, 32, 8]
    assert doc["anisotropy"]["median_spacing"] == pytest.approx(5.0 / 0.99, abs=1e-3)
    assert doc["problems"] == []


def test_profile_reads_headers_only(dataset: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file cut to its 352-byte header still profiles; voxel access would fail."""
    root = tmp_path / "headers"
    shutil.copytree(dataset, root)
    for path in root.glob("*Tr/*.nii"):
        path.write_bytes(path.read_bytes()[:352])

    def no_voxels(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the profiler touched voxel data")

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", no_voxels)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__getitem__", no_voxels)
    profile = seg_profile.profile_dataset(root)
    full = seg_profile.profile_dataset(dataset)
    assert [v.shape for v in profile.volumes] == [v.shape for v in full.volumes]
    assert [v.spacing for v in profile.volumes] == [v.spacing for v in full.volumes]
    assert len(profile.problems) == 2 * N
    assert all("truncated" in p for p in profile.problems)


def test_profile_without_dataset_json_finds_pairs_and_missing_labels(dataset: Path,
                                                                      tmp_path: Path) -> None:
    root = tmp_path / "bare"
    shutil.copytree(dataset, root)
    (root / "dataset.json").unlink()
    (root / "labelsTr/vessel_001.nii").unlink()
    profile = seg_profile.profile_dataset(root)
    assert len(profile.volumes) == N
    assert profile.problems == ["labelsTr/vessel_001.nii: missing"]


def _volume_info(name: str, shape: tuple[int, int, int],
                 spacing: tuple[float, float, float]) -> seg_profile.VolumeInfo:
    return seg_profile.VolumeInfo(name, f"imagesTr/{name}.nii", None, shape, spacing, "micron",
                                  "uint16", None, 0, 0)


def test_outlier_rule_is_a_factor_of_the_per_axis_median() -> None:
    typical = [_volume_info(f"c{i}", (512, 512, 20 + i), (1.0, 1.0, 5.0)) for i in range(5)]
    odd = [_volume_info("fine", (512, 512, 22), (1.0, 1.0, 3.2)),  # 5 / 3.2 = 1.56 > 1.5
           _volume_info("near", (512, 512, 22), (1.0, 1.0, 3.5)),  # 1.43: not an outlier
           _volume_info("thin", (512, 512, 7), (1.0, 1.0, 5.0))]  # 22 / 7 = 3.1 > 3
    found = seg_profile.find_outliers(typical + odd)
    assert [(o.name, o.kind, o.axis) for o in found] == [("fine", "spacing", "z"),
                                                         ("thin", "shape", "z")]
    assert seg_profile.find_outliers(odd[:2]) == []  # fewer than 3 volumes: no median to trust


@pytest.mark.parametrize(("shapes", "divisor", "expected"), [
    ([(256, 256, 5), (512, 300, 40)], (16, 16, 4), (256, 256, 8)),
    ([(200, 250, 33)], (16, 16, 4), (208, 256, 36)),
    ([(64, 64, 16)], (16, 16, 4), (64, 64, 16)),
    ([(7, 7, 3)], (16, 16, 4), (16, 16, 4)),
], ids=["small-z", "round-up", "exact", "smaller-than-divisor"])
def test_safe_patch_divides_and_fits_the_padded_minimum(
        shapes: list[tuple[int, int, int]], divisor: tuple[int, int, int],
        expected: tuple[int, int, int]) -> None:
    patch = seg_profile.safe_patch(shapes, divisor)
    assert patch == expected
    for axis, (size, div) in enumerate(zip(patch, divisor, strict=True)):
        smallest = min(s[axis] for s in shapes)
        assert size % div == 0
        assert size <= -(-smallest // div) * div  # not larger than the padded minimum shape
        assert size > smallest - div  # and the largest such size


# --- splits ----------------------------------------------------------------------------------

NAMES = [f"vessel_{i:03d}" for i in range(10)]


def test_splits_are_deterministic_and_partition_the_cases() -> None:
    first = seg_splits.make_splits(NAMES, k=3, seed=7)
    assert seg_splits.make_splits(reversed(NAMES), k=3, seed=7) == first
    assert seg_splits.make_splits(NAMES, k=3, seed=8) != first
    vals = [name for fold in first.folds for name in fold.val]
    assert sorted(vals) == NAMES
    assert sorted(len(f.val) for f in first.folds) == [3, 3, 4]
    for fold in first.folds:
        assert set(fold.train) | set(fold.val) == set(NAMES)
        assert not set(fold.train) & set(fold.val)


def test_saved_splits_are_reused(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    made = seg_splits.load_or_create(path, NAMES, k=3, seed=0)
    doc = contract.read_json(path)
    assert doc["schema"] == "ops.splits/1" and doc["k"] == 3 and doc["seed"] == 0
    assert doc["folds"][0] == {"train": list(made.folds[0].train),
                               "val": list(made.folds[0].val)}
    doc["folds"] = doc["folds"][::-1]  # a different but valid split with the same inputs
    contract.atomic_write_json(path, doc)
    reused = seg_splits.load_or_create(path, list(reversed(NAMES)), k=3, seed=0)
    assert reused.folds == made.folds[::-1]


@pytest.mark.parametrize(("cases", "k", "seed", "message"), [
    ([*NAMES, "vessel_999"], 3, 0, "1 case(s) not in the saved split: vessel_999"),
    (NAMES[:-1], 3, 0, "1 saved case(s) no longer in the dataset: vessel_009"),
    (NAMES, 4, 0, "k is 3, the run asks for 4"),
    (NAMES, 3, 1, "seed is 0, the run asks for 1"),
], ids=["added-case", "removed-case", "other-k", "other-seed"])
def test_a_saved_split_that_does_not_match_is_refused(
        tmp_path: Path, cases: list[str], k: int, seed: int, message: str) -> None:
    path = tmp_path / "splits.json"
    seg_splits.load_or_create(path, NAMES, k=3, seed=0)
    with pytest.raises(seg_splits.SplitsMismatch, match=message.replace("(", r"\(")
                       .replace(")", r"\)")):
        seg_splits.load_or_create(path, cases, k=k, seed=seed)


def test_a_broken_saved_split_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    seg_splits.load_or_create(path, NAMES, k=3, seed=0)
    doc = contract.read_json(path)
    doc["folds"][0]["val"].append(doc["folds"][1]["val"][0])
    contract.atomic_write_json(path, doc)
    with pytest.raises(seg_splits.SplitsMismatch, match="do not partition"):
        seg_splits.load_or_create(path, NAMES, k=3, seed=0)
    contract.atomic_write_json(path, {**doc, "schema": "ops.splits/2"})
    with pytest.raises(seg_splits.SplitsMismatch, match="unknown major version"):
        seg_splits.load_or_create(path, NAMES, k=3, seed=0)


# --- ops data (CLI and service) --------------------------------------------------------------


def test_cli_synth_then_profile_json(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "data"
    made = runner.invoke(data_group, ["synth", "--out", str(out), "--n", "4", "--size", "16",
                                      "--seed", "3", "--workers", "1"])
    assert made.exit_code == 0, made.output
    assert made.output.startswith("wrote 4 volumes (") and str(out) in made.output
    shown = runner.invoke(data_group, ["profile", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert doc["schema"] == "ops.data_profile/1" and doc["n"] == 4
    assert doc["safe_patch"] == [16, 16, 8]
    text = runner.invoke(data_group, ["profile", str(out), "--divisor", "8,8,2"])
    assert text.exit_code == 0 and "safe patch 16 x 16 x 6 (divisor 8 x 8 x 2)" in text.output


@pytest.mark.parametrize(("args", "error", "exit_code", "message"), [
    (["profile", "{tmp}/nowhere"], NotFoundError, 3, "no such dataset directory"),
    (["profile", "{tmp}/empty"], UsageError, 2, "no readable image volumes"),
    (["profile", "{tmp}/empty", "--divisor", "16,16"], UsageError, 2, "three positive"),
    (["synth", "--out", "{tmp}/full", "--n", "2", "--size", "16"], ConflictError, 4,
     "already holds files"),
], ids=["missing-dir", "no-volumes", "bad-divisor", "non-empty-out"])
def test_cli_errors_carry_exit_code_and_message(
        tmp_path: Path, args: list[str], error: type[OpsError], exit_code: int,
        message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = CliRunner().invoke(data_group, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert isinstance(result.exception, error)
    assert result.exception.exit_code == exit_code
    assert message in result.exception.message


def test_without_the_train_extra_ops_data_says_how_to_install_it(tmp_path: Path) -> None:
    """numpy blocked: the command modules import, and the service raises a UsageError."""
    probe = (
        "import sys\n"
        "sys.modules['numpy'] = None\n"
        "import ops.cli.data_cmds\n"
        "from ops.errors import UsageError\n"
        "from ops.services import data\n"
        "try:\n"
        f"    data.profile(__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "except UsageError as exc:\n"
        "    print(exc.exit_code, exc.hint)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == f"2 {data.TRAIN_EXTRA_HINT}"
