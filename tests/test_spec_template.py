"""Spec templates (ops.services.spec_template): a template filled for a run is the spec the
models build for it, for every kind of preset and host; errors and secrets behave as without
a template; templates are kept under the config cache's rules (issue 14)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ops.config import cache
from ops.config.loader import LoadedConfig, ResolvedPreset, load_config, resolve_preset
from ops.errors import UsageError
from ops.hosts.local import LocalHost
from ops.services import launcher, spec_template, submit
from ops.services.runs import Target
from ops.services.spec import HostPaths, build_spec, cache_env, secret_values

from .conftest import REPO, Project, _preset

RUN_ID = "case-20260101T000000-ab12"
PARENT = "parent-20251231T235959-cd34"
CODE = {"dir": "/srv/code/" + "c" * 40, "commit": "c" * 40, "ref": "main", "branch": "main",
        "dirty": False, "base_commit": "c" * 40}
SECRETS = {"HF_TOKEN": "hf-value", "OPS_TEST_TOKEN": "token-value"}


class NamedHost(LocalHost):
    """This machine under another host name (the launcher blocks depend on the name only)."""

    def __init__(self, name: str) -> None:
        self.name = name


def project_doc(wandb: str) -> dict[str, Any]:
    """The repository's own project.json, plus a SLURM host, a torchrun preset, a preset with
    a secret of its own, and storage paths for the workload's environment."""
    doc: dict[str, Any] = json.loads((REPO / "configs" / "ops" / "project.json").read_text())
    doc["storage"].update(hf_home="~/hf-cache", datasets_root="/data/cache",
                          wandb={"mode": wandb, "project": "demo-wandb", "entity": "lab"})
    doc["hosts"] = {"cluster": {"address": "u@cluster.invalid", "launcher": "slurm",
                                "slurm": {"partition": "gpu", "time": "02:00:00",
                                          "extra": ["--constraint=a100"]}}}
    doc["presets"]["ddp"] = {"kind": "command", "command": ["{python}", "train.py"],
                             "overrides": {"lr": 0.1}, "distributed": {"nproc_per_node": 4},
                             "resources": {"gpus": 4, "time": "01:00:00"},
                             "env": {"HF_HOME": "/preset/wins"}}
    doc["presets"]["secretive"] = {"kind": "command", "command": ["true"],
                                   "secrets_env": ["OPS_TEST_TOKEN"],
                                   "secrets_files": ["~/.token"]}
    return doc


def write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "repo" / "configs" / "ops" / "project.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


@dataclass(frozen=True)
class Case:
    preset: str
    sets: tuple[str, ...] = ()
    debug: bool = False
    host: str = "local"
    wandb: str = "disabled"
    parent: str | None = None


CASES = {
    "command": Case("smoke"),
    "command-set": Case("smoke", ("lr=0.5", "max_iters=3", "lr=0.25")),
    "stdout-metrics": Case("smoke_stdout", wandb="online"),
    "monai_seg-debug-wandb": Case("dice_ce_demo", debug=True, wandb="online"),
    "monai_seg-wandb-auto-set": Case("dice_ce_3fold", ("lr=0.01",), wandb="auto"),
    "monai_seg-data-dir": Case("dice_ce_demo", ("data_dir=/elsewhere/vessels",)),
    "eval-from": Case("dice_ce_demo_eval", parent=PARENT),
    "eval-from-wandb": Case("dice_ce_demo_eval", parent=PARENT, wandb="offline"),
    "service": Case("service_demo"),
    "torchrun-local": Case("ddp", ("lr=0.2",)),
    "torchrun-slurm": Case("ddp", host="cluster", wandb="online"),
    "command-slurm": Case("smoke", host="cluster"),
    "secrets": Case("secretive", parent=PARENT),
}


def full_build(loaded: LoadedConfig, target: Target, resolved: ResolvedPreset,
               parent: str | None) -> dict[str, Any]:
    """The spec as submit built it before templates: build_spec with the run's own fields,
    the launcher blocks, the parent's run dir, the storage paths under the preset's env."""
    spec = build_spec(loaded, resolved, RUN_ID, paths=target.paths, code=CODE,
                      secret_names=sorted(SECRETS), parent_run_id=parent)
    launcher.apply(spec, loaded, target.host.name, resolved.preset)
    if parent:
        spec["parent_run_dir"] = target.run_dir(parent)
    spec["workload"]["env"] = {**cache_env(loaded, os.path.expanduser),
                               **spec["workload"]["env"]}
    return spec


def plain(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the runner reads it (JSON), created_at aside."""
    doc: dict[str, Any] = json.loads(json.dumps(spec))
    assert isinstance(doc.pop("created_at"), str)
    return doc


def target_for(host: str) -> Target:
    return Target(LocalHost() if host == "local" else NamedHost(host),
                  HostPaths("/srv/runs/pod-ops-demo", "/home/u/.pod-ops"))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_stored_template_filled_for_a_run_is_the_full_build(tmp_path: Path,
                                                              case: Case) -> None:
    loaded = load_config(write_config(tmp_path, project_doc(case.wandb)))
    target = target_for(case.host)
    resolved = resolve_preset(loaded.config, case.preset, case.sets, debug=case.debug)
    key = spec_template.key_of(loaded, case.host, case.preset, case.sets, case.debug)
    spec_template.store(key, spec_template.make(loaded, case.host, resolved))
    template = spec_template.load(key)  # read back from the file: JSON, no models
    assert template is not None
    filled = template.fill(loaded, target, RUN_ID, secret_names=list(SECRETS), code=CODE,
                           parent=case.parent)
    expected = plain(full_build(loaded, target, resolved, case.parent))
    assert plain(filled) == expected
    # the path every other submit takes (sweeps, grids, resume, --from, --dry-run)
    assert plain(submit._spec(loaded, target, resolved, RUN_ID, secrets=SECRETS, code=CODE,
                              parent=case.parent)) == expected
    assert filled["secrets"]["store"] == f"/home/u/.pod-ops/secrets/{RUN_ID}.json"
    assert filled["wandb"]["run_id"] == (None if case.wandb == "disabled" else RUN_ID)
    assert filled["workload"]["env"]["OPS_DATASETS_ROOT"] == "/data/cache"


def test_the_cases_cover_every_preset_kind_of_the_repository() -> None:
    presets = project_doc("disabled")["presets"]
    kinds = {presets[case.preset]["kind"] for case in CASES.values()}
    assert kinds | {"sweep"} == {p["kind"] for p in presets.values()}


def test_a_template_holds_no_per_run_value_and_the_storage_paths_come_with_the_run(
        tmp_path: Path) -> None:
    loaded = load_config(write_config(tmp_path, project_doc("online")))
    resolved = resolve_preset(loaded.config, "ddp", ["lr=0.3"])
    template = spec_template.make(loaded, "cluster", resolved)
    spec = template.spec
    assert [spec[k] for k in ("run_id", "created_at", "parent_run_id", "code")] == [None] * 4
    assert (spec["secrets"]["env_names"], spec["secrets"]["store"], spec["wandb"]["run_id"]) \
        == (None, None, None)
    assert "parent_run_dir" not in spec
    assert spec["workload"]["env"] == {"HF_HOME": "/preset/wins"}
    assert "spec-template" not in json.dumps(spec)  # build_spec's stand-in values are all gone
    filled = template.fill(loaded, target_for("cluster"), RUN_ID, secret_names=[], code=CODE)
    assert filled["workload"]["env"] == {"HF_HOME": "/preset/wins",
                                         "OPS_DATASETS_ROOT": "/data/cache",
                                         "HF_DATASETS_CACHE": "/data/cache"}
    assert (filled["launcher"], filled["slurm"]["options"]["gpus"],
            filled["workload"]["distributed"]) == ("slurm", 4, {"nproc_per_node": 4})


# -- what a submit reads from a template ---------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> tuple[Path, Target]:
    """The demo config and host local (no git: the code block is all None)."""
    path = write_config(tmp_path, project_doc("disabled"))
    return path, Target(LocalHost(), HostPaths(str(tmp_path / "runs"), str(tmp_path / "home")))


def _templates() -> list[Path]:
    folder = cache.cache_dir() / spec_template.FOLDER
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on a template must come from the cache: making one fails the test."""
    def refuse(*_: Any) -> None:
        raise AssertionError("a template was made again")

    monkeypatch.setattr(spec_template, "make", refuse)


@pytest.mark.parametrize(("preset", "environ", "message"), [
    ("dice_ce_demo_eval", {}, "is an eval: it needs the run to evaluate"),
    ("secretive", {"HF_TOKEN": "x"}, "needs OPS_TEST_TOKEN in the environment"),
], ids=["eval-without-from", "missing-secret"])
def test_a_submit_refused_without_a_template_is_refused_the_same_with_one(
        local: tuple[Path, Target], monkeypatch: pytest.MonkeyPatch, preset: str,
        environ: dict[str, str], message: str) -> None:
    path, target = local
    errors = []
    for attempt in range(2):
        if attempt:
            _no_models(monkeypatch)
        with pytest.raises(UsageError) as caught:
            submit.submit(load_config(path), target, preset, environ=environ,
                          check_preflight=True)
        errors.append((caught.value.message, caught.value.hint))
    assert errors[0] == errors[1] and message in errors[0][0]
    assert len(_templates()) == 1


def test_the_template_gives_the_secret_values_and_preflight_the_models_give(
        local: tuple[Path, Target]) -> None:
    from ops.services.preflight import preflight_args

    path, target = local
    loaded = load_config(path)
    environ = {"OPS_TEST_TOKEN": "t", "HF_TOKEN": "h", "WANDB_API_KEY": ""}
    for preset in ("secretive", "smoke", "dice_ce_demo_eval"):
        template = spec_template.make(loaded, "local", resolve_preset(loaded.config, preset))
        assert template.secret_values(environ) == secret_values(
            loaded, resolve_preset(loaded.config, preset), environ)
        assert template.preflight_args(loaded, target) == preflight_args(loaded, target, preset)
    smoke = spec_template.make(loaded, "local", resolve_preset(loaded.config, "smoke"))
    assert ["--dataset", str(path.parents[2] / "examples" / "data")] == \
        smoke.preflight_args(loaded, target)[4:6]  # {code_dir}: the local repository


def test_a_sweep_or_a_grid_keeps_no_template(local: tuple[Path, Target],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path, target = local
    sent = []
    for name in ("submit_sweep", "submit_grid"):  # what would launch: noted, not launched
        monkeypatch.setattr(submit, name, lambda *_, name=name, **__: sent.append(name) or name)
    for preset, sets in (("loss_sweep", ()), ("smoke", ("lr=0.1,0.2",))):
        submit.submit(load_config(path), target, preset, sets, check_preflight=True)
    assert sent == ["submit_sweep", "submit_grid"] and _templates() == []


def test_the_key_follows_the_config_the_code_and_what_is_asked(
        local: tuple[Path, Target], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path, _ = local
    loaded = load_config(path)

    def key(preset: str = "smoke", sets: tuple[str, ...] = ("lr=0.1", "sleep=0"),
            debug: bool = False, host: str = "local") -> str | None:
        return spec_template.key_of(loaded, host, preset, sets, debug)

    asked = {key(), key("smoke_stdout"), key(sets=("sleep=0", "lr=0.1")), key(sets=()),
             key(debug=True), key(host="cluster")}
    assert len(asked) == 6 and key() == key()
    edited = tmp_path / "spec.py"
    edited.write_bytes(spec_template.SPEC_SOURCES[1].read_bytes() + b"\n# edited\n")
    before = key()
    monkeypatch.setattr(spec_template, "SPEC_SOURCES",
                        (*spec_template.SPEC_SOURCES[:1], edited,
                         *spec_template.SPEC_SOURCES[2:]))
    assert key() != before
    path.write_text(path.read_text().replace('"lr": 0.05', '"lr": 0.06'))
    loaded = load_config(path)
    assert key() != before
    assert spec_template.key_of(loaded._replace(cache_key=""), "local", "smoke", (), False) \
        is None


def test_the_key_covers_the_code_a_template_is_made_with(tmp_path: Path) -> None:
    """Every module of ops or the runner that making a template imports (the models, --set
    parsing, the trainer's defaults, ...) is one whose source is in the key, so an upgrade
    that changes how a spec is built never reuses an old template. Package files, which
    import nothing, aside."""
    path = write_config(tmp_path, project_doc("online"))
    load_config(path)  # into the config cache: the probe starts without the models
    made = [("dice_ce_demo", "local", ["data_dir=/x", "folds=4"]), ("ddp", "cluster", []),
            ("dice_ce_demo_eval", "local", []), ("service_demo", "local", [])]
    probe = (
        "import json, sys\nfrom pathlib import Path\n"
        "from ops.config.loader import load_config, resolve_preset\n"
        "from ops.services import spec_template\n"
        f"loaded = load_config(Path({str(path)!r}))\nbefore = set(sys.modules)\n"
        f"for name, host, sets in {made!r}:\n"
        "    spec_template.make(loaded, host, resolve_preset(loaded.config, name, sets))\n"
        "print(json.dumps([m.__file__ for n, m in list(sys.modules.items()) if n not in before"
        " and n.split('.')[0] in ('ops', 'runner')]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    imported = {Path(f).resolve() for f in json.loads(out) if not f.endswith("__init__.py")}
    assert (REPO / "ops" / "config" / "models.py").resolve() in imported  # not vacuous
    assert imported <= {p.resolve() for p in spec_template.SPEC_SOURCES}
    assert all(p.is_file() for p in spec_template.SPEC_SOURCES)


# -- the cache's rules ---------------------------------------------------------------------


def _stored(path: Path) -> tuple[str, Path]:
    """The key of smoke's template on host local, stored, and its file."""
    loaded = load_config(path)
    key = spec_template.key_of(loaded, "local", "smoke", (), False)
    assert key is not None
    spec_template.store(key, spec_template.make(loaded, "local",
                                                resolve_preset(loaded.config, "smoke")))
    return key, cache.cache_dir() / spec_template.FOLDER / key


def test_a_template_is_a_private_checksummed_file_and_a_planted_one_is_what_is_read(
        local: tuple[Path, Target]) -> None:
    key, entry = _stored(local[0])
    assert stat.S_IMODE(entry.parent.lstat().st_mode) == 0o700
    assert stat.S_IMODE(entry.lstat().st_mode) == 0o600
    template = spec_template.load(key)
    assert template is not None and template.spec["preset"] == "smoke"
    spec_template.store(key, template._replace(spec={**template.spec, "preset": "planted"}))
    found = spec_template.load(key)
    assert found is not None and found.spec["preset"] == "planted"


def _damage(entry: Path, how: str, tmp_path: Path) -> None:
    if how == "others-read":
        entry.chmod(0o644)
    elif how == "folder-open":
        entry.parent.chmod(0o755)
    elif how == "symlink":
        moved = tmp_path / "moved"
        entry.rename(moved)
        entry.symlink_to(moved)
    elif how == "flipped":
        data = entry.read_bytes()
        entry.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    else:  # a good checksum over a document that is not a template
        payload = json.dumps({"preset": "smoke", "spec": []}).encode()
        entry.write_bytes(spec_template.MAGIC + cache._header(payload) + b"\n" + payload)


@pytest.mark.parametrize("how", ["others-read", "folder-open", "symlink", "flipped",
                                 "wrong-shape"])
def test_an_odd_template_entry_is_a_miss_and_a_submit_builds_the_spec_again(
        local: tuple[Path, Target], tmp_path: Path, how: str) -> None:
    key, entry = _stored(local[0])
    _damage(entry, how, tmp_path)
    assert spec_template.load(key) is None
    with pytest.raises(UsageError, match="needs OPS_TEST_TOKEN"):  # built with the models
        submit.submit(load_config(local[0]), local[1], "secretive", environ={})


def test_the_number_of_templates_is_bounded(local: tuple[Path, Target],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_template, "MAX_TEMPLATES", 3)
    loaded = load_config(local[0])
    resolved = resolve_preset(loaded.config, "smoke")
    template = spec_template.make(loaded, "local", resolved)
    keys = [spec_template.key_of(loaded, "local", "smoke", (f"lr={i}",), False)
            for i in range(5)]
    for key in keys:
        spec_template.store(key, template)
    assert len(_templates()) == 3 and keys[-1] in {p.name for p in _templates()}
    assert load_config(local[0]).cache_key in {p.name for p in cache.cache_dir().iterdir()}


# -- secret values never reach the disk ----------------------------------------------------

CANARY = "canary-6a1f0e93c2d4b857"


def test_no_secret_value_is_in_any_cache_file(project: Project) -> None:
    """Two real submits of a preset with a secret of its own and the project's optional
    ones, all set to a planted value: the second finds the first's template, and no file of
    the cache holds the value."""
    doc = json.loads(project.config_path.read_text())
    doc["secrets"] = {"env": ["OPS_CANARY_OPTIONAL"]}
    doc["presets"]["secretive"] = _preset(["true"], secrets_env=["OPS_CANARY_TOKEN"])
    project.write_config(doc)
    env = {"OPS_CANARY_TOKEN": CANARY, "OPS_CANARY_OPTIONAL": CANARY + "-optional"}
    for run_id in ("canary-1", "canary-2"):
        done = project.ops("run", "submit", "secretive", "--run-id", run_id, "--json", env=env)
        assert done.exit_code == 0, done.stderr
        project.wait_for((project.run_dir(run_id) / "summary.json").exists)
    spec = json.loads((project.run_dir("canary-2") / "spec.json").read_text())
    assert spec["secrets"]["env_names"] == ["OPS_CANARY_OPTIONAL", "OPS_CANARY_TOKEN"]
    files = [p for p in cache.cache_dir().rglob("*") if p.is_file()]
    assert len(_templates()) == 1 and len(files) == 2  # the config and the template
    assert not [p for p in files if CANARY.encode() in p.read_bytes()]
