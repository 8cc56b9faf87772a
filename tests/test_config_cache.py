"""The validated-config cache (ops.config.cache): edits are seen at once, only entries this
user wrote in a private directory are trusted, a bad config is never stored, and an ops
upgrade starts afresh (issue 14)."""

from __future__ import annotations

import json
import marshal
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest

from ops.config import cache
from ops.config.loader import LOCAL_NAME, load_config
from ops.config.models import ProjectConfig
from ops.errors import ConfigError


def _doc(name: str = "demo", **extra: Any) -> dict[str, Any]:
    return {"project": {"name": name},
            "presets": {"smoke": {"kind": "command", "command": ["python", "-c", "pass"]}},
            **extra}


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "repo" / "configs" / "ops" / "project.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_doc()))
    return path


def _entries() -> list[Path]:
    directory = cache.cache_dir()
    return sorted(directory.iterdir()) if directory.is_dir() else []


def _key(path: Path) -> str:
    local = path.with_name(LOCAL_NAME)
    return cache.key_of(path.read_bytes(), local.read_bytes() if local.exists() else None)


def _plant(path: Path, name: str) -> Path:
    """A well-formed entry under the key of ``path``'s config holding another project name:
    whether load_config returns it says whether the entry was trusted."""
    planted = ProjectConfig.model_validate(_doc(name))
    cache.store(_key(path), planted, planted.model_dump(mode="json", by_alias=True))
    return cache.cache_dir() / _key(path)


def test_the_cache_follows_xdg_cache_home_else_home(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "pod-ops"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_dir() == Path.home() / ".cache" / "pod-ops"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec: ignore it
    assert cache.cache_dir() == Path.home() / ".cache" / "pod-ops"


def test_a_valid_config_is_stored_privately_and_a_planted_entry_is_what_a_hit_returns(
        config_path: Path) -> None:
    assert load_config(config_path).config.project.name == "demo"
    entries = _entries()
    assert [p.name for p in entries] == [_key(config_path)]
    assert stat.S_IMODE(cache.cache_dir().lstat().st_mode) == 0o700
    assert stat.S_IMODE(entries[0].lstat().st_mode) == 0o600
    _plant(config_path, "planted")  # the cache is really read (the tests below mean something)
    assert load_config(config_path).config.project.name == "planted"


def test_an_edit_to_project_json_or_the_overlay_is_seen_at_once(config_path: Path) -> None:
    assert load_config(config_path).config.project.name == "demo"
    config_path.write_text(json.dumps(_doc("edited")))
    assert load_config(config_path).config.project.name == "edited"
    local = config_path.with_name(LOCAL_NAME)
    local.write_text(json.dumps({"project": {"name": "overlaid"}}))
    loaded = load_config(config_path)
    assert (loaded.config.project.name, loaded.local_path) == ("overlaid", local)
    local.write_text(json.dumps({"project": {"name": "overlaid2"}}))
    assert load_config(config_path).config.project.name == "overlaid2"
    local.unlink()
    loaded = load_config(config_path)
    assert (loaded.config.project.name, loaded.local_path) == ("edited", None)


def test_provenance_is_the_same_from_the_cache(config_path: Path) -> None:
    config_path.with_name(LOCAL_NAME).write_text(json.dumps({"tmux": {"socket": "mine"}}))
    first = load_config(config_path)
    second = load_config(config_path)  # a hit
    assert second.provenance() == first.provenance()
    assert ("tmux.socket", "mine", LOCAL_NAME) in second.provenance()


def test_a_config_that_fails_validation_is_never_cached(config_path: Path) -> None:
    config_path.write_text(json.dumps(_doc(tmux={"watch_interval_sec": -1})))
    messages = []
    for _ in range(2):
        with pytest.raises(ConfigError) as caught:
            load_config(config_path)
        messages.append((caught.value.message, caught.value.details))
    assert messages[0] == messages[1]
    assert "tmux.watch_interval_sec" in " ".join(messages[0][1])
    assert _entries() == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_a_corrupt_entry_is_ignored_and_rewritten(config_path: Path, damage: str) -> None:
    load_config(config_path)
    entry = _entries()[0]
    data = entry.read_bytes()
    entry.write_bytes({"garbage": b"\x80\x04not a pickle", "truncated": data[:-20],
                       "flipped": data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]}[damage])
    assert load_config(config_path).config.project.name == "demo"
    assert cache.load(entry.name) is not None  # rewritten whole by that load


@pytest.mark.parametrize("payload", [marshal.dumps({"not": "a config"}),
                                     pickle.dumps(({"not": "a config"}, b""))],
                         ids=["not-an-entry", "pickled-by-an-older-ops"])
def test_a_stale_entry_with_a_good_checksum_is_a_miss(config_path: Path, payload: bytes) -> None:
    entry = cache.cache_dir() / _key(config_path)
    load_config(config_path)
    entry.write_bytes(cache.MAGIC + cache._header(payload) + b"\n" + payload)
    assert load_config(config_path).config.project.name == "demo"


def test_a_hit_unpickles_the_models_only_when_a_command_asks_for_them(
        config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_config(config_path)
    unpickled = []
    real = cache.unpickle_models
    monkeypatch.setattr(cache, "unpickle_models",
                        lambda data: unpickled.append(1) or real(data))
    loaded = load_config(config_path)  # a hit
    assert (loaded.setting("project", "name"), loaded.setting("hosts"), unpickled) == \
        ("demo", {}, [])
    assert loaded.config.project.name == "demo"
    assert loaded.config is loaded.config  # once
    assert unpickled == [1]


def test_models_that_no_longer_unpickle_are_validated_again_and_stored(
        config_path: Path) -> None:
    """A good dump beside models this pydantic cannot read (say, pickled by another build of
    it under the same version): the command still gets valid models, and the entry is
    rewritten with ones that unpickle."""
    load_config(config_path)
    key = _key(config_path)
    dumped, _ = cache.load(key) or ({}, b"")
    payload = marshal.dumps((dumped, b"\x80\x04not models"))
    (cache.cache_dir() / key).write_bytes(cache.MAGIC + cache._header(payload) + b"\n"
                                          + payload)
    loaded = load_config(config_path)
    assert loaded.setting("project", "name") == "demo"
    assert loaded.config.project.name == "demo"
    hit = cache.load(key)
    assert hit is not None and cache.unpickle_models(hit[1]) == loaded.config


def test_another_pydantic_is_a_new_key(config_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    before = _key(config_path)
    assert b"VERSION" in cache._pydantic_version()  # found on sys.path, not imported
    monkeypatch.setattr(cache, "_pydantic_version", lambda: b"VERSION = '9.9.9'\n")
    assert _key(config_path) != before


def test_an_entry_owned_by_someone_else_is_ignored(config_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _plant(config_path, "planted")
    if os.geteuid() == 0:
        os.chown(entry, 4242, 4242)
    else:  # only root can give a file away: this user becomes someone else instead
        uid = os.getuid()
        monkeypatch.setattr(cache.os, "getuid", lambda: uid + 1)
    assert load_config(config_path).config.project.name == "demo"


@pytest.mark.parametrize("mode", [0o640, 0o606, 0o620])
def test_an_entry_others_can_read_or_write_is_ignored(config_path: Path, mode: int) -> None:
    entry = _plant(config_path, "planted")
    entry.chmod(mode)
    assert load_config(config_path).config.project.name == "demo"


def test_a_symlinked_entry_is_ignored(config_path: Path, tmp_path: Path) -> None:
    entry = _plant(config_path, "planted")
    elsewhere = tmp_path / "elsewhere"
    entry.rename(elsewhere)
    entry.symlink_to(elsewhere)
    assert load_config(config_path).config.project.name == "demo"


def test_a_cache_dir_others_can_enter_is_not_used(config_path: Path) -> None:
    _plant(config_path, "planted")
    cache.cache_dir().chmod(0o755)
    assert load_config(config_path).config.project.name == "demo"
    config_path.write_text(json.dumps(_doc("edited")))
    load_config(config_path)
    assert len(_entries()) == 1  # nothing stored there either


def test_a_symlinked_cache_dir_is_not_used(config_path: Path, tmp_path: Path) -> None:
    real = tmp_path / "real-cache"
    real.mkdir(mode=0o700)
    cache.cache_dir().parent.mkdir(parents=True, exist_ok=True)
    cache.cache_dir().symlink_to(real)
    load_config(config_path)
    assert list(real.iterdir()) == []


def test_an_ops_version_bump_or_a_models_edit_is_a_new_key(config_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    _plant(config_path, "planted")
    assert load_config(config_path).config.project.name == "planted"
    monkeypatch.setattr(cache, "__version__", "99.0.0")
    assert load_config(config_path).config.project.name == "demo"
    models = tmp_path / "models.py"
    models.write_bytes(cache.VALIDATION_SOURCES[0].read_bytes() + b"\n# edited\n")
    before = _key(config_path)
    monkeypatch.setattr(cache, "VALIDATION_SOURCES", (models, *cache.VALIDATION_SOURCES[1:]))
    assert _key(config_path) != before


def test_the_cache_never_lands_in_the_repository(config_path: Path) -> None:
    load_config(config_path)
    repo = config_path.parents[2]
    assert sorted(p.name for p in repo.rglob("*")) == ["configs", "ops", "project.json"]


def test_many_configs_keep_the_newest_entries(config_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    for index in range(5):
        config_path.write_text(json.dumps(_doc(f"v{index}")))
        load_config(config_path)
    assert len(_entries()) == 3
    assert _key(config_path) in {p.name for p in _entries()}


def test_no_home_directory_means_no_cache_not_a_failure(config_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def nowhere() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(Path, "home", nowhere)
    assert load_config(config_path).config.project.name == "demo"
    assert load_config(config_path).config.project.name == "demo"


def test_a_folder_of_the_cache_is_held_to_the_same_rules(tmp_path: Path) -> None:
    """What is kept beside the configs (spec templates) goes through the same checks: its
    folder must be a private directory of ours, not a link, and an entry of another kind
    (another magic line) is not read as one of this kind."""
    cache.write_entry("entry", b"kind-a\n", b"payload", "folder")
    folder = cache.cache_dir() / "folder"
    assert stat.S_IMODE(folder.lstat().st_mode) == 0o700
    assert cache.read_entry("entry", b"kind-a\n", "folder") == b"payload"
    assert cache.read_entry("entry", b"kind-b\n", "folder") is None
    assert cache.read_entry("entry", b"kind-a\n") is None  # not in the top folder
    folder.rename(tmp_path / "real")
    folder.symlink_to(tmp_path / "real")
    assert cache.read_entry("entry", b"kind-a\n", "folder") is None
    cache.write_entry("other", b"kind-a\n", b"payload", "folder")
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["entry"]
