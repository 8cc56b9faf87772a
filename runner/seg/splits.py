"""Deterministic k-fold cross-validation splits, saved once and reused (standard library only).

``make_splits`` shuffles the sorted case names with ``random.Random(seed)`` and deals them
round-robin into ``k`` validation folds, so fold sizes differ by at most one and the result
depends on the set of names, ``k`` and ``seed`` only (never on listing order or platform).
``load_or_create`` writes ``splits.json`` the first time and afterwards loads it, so a resumed
run trains every fold on exactly the cases it started with; a saved split whose cases, ``k``
or ``seed`` differ from the current ones is refused rather than silently reused or replaced.

``splits.json``::

    {"schema": "ops.splits/1", "k": 3, "seed": 0, "n": 24, "cases": [...sorted...],
     "folds": [{"train": [...], "val": [...]}, ...]}
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import contract

SPLITS_JSON = "splits.json"
SCHEMA_NAME = "splits"


class SplitsMismatch(ValueError):
    """A saved splits.json does not describe the current cases, k or seed."""


@dataclass(frozen=True)
class Fold:
    train: tuple[str, ...]
    val: tuple[str, ...]


@dataclass(frozen=True)
class Splits:
    k: int
    seed: int
    cases: tuple[str, ...]  # sorted
    folds: tuple[Fold, ...]

    def to_json(self) -> dict[str, Any]:
        return {"schema": contract.schema_tag(SCHEMA_NAME), "k": self.k, "seed": self.seed,
                "n": len(self.cases), "cases": list(self.cases),
                "folds": [{"train": list(f.train), "val": list(f.val)} for f in self.folds]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Splits:
        problem = contract.check_schema_tag(doc, SCHEMA_NAME)
        if problem:
            raise SplitsMismatch(f"{SPLITS_JSON}: {problem}")
        try:
            folds = tuple(Fold(tuple(f["train"]), tuple(f["val"])) for f in doc["folds"])
            splits = cls(int(doc["k"]), int(doc["seed"]), tuple(doc["cases"]), folds)
        except (KeyError, TypeError, ValueError) as exc:
            raise SplitsMismatch(f"{SPLITS_JSON}: malformed: {exc!r}") from exc
        splits.check_consistent()
        return splits

    def check_consistent(self) -> None:
        """Every case validated exactly once; train is the complement of val in each fold."""
        vals = [name for fold in self.folds for name in fold.val]
        if len(self.folds) != self.k or sorted(vals) != list(self.cases):
            raise SplitsMismatch(f"{SPLITS_JSON}: validation folds do not partition the cases")
        for index, fold in enumerate(self.folds):
            if set(fold.train) != set(self.cases) - set(fold.val):
                raise SplitsMismatch(f"{SPLITS_JSON}: fold {index} trains on a validation case "
                                     "or leaves a case out")


def make_splits(cases: Iterable[str], k: int, seed: int) -> Splits:
    """``k`` folds over ``cases``: each case is validated in exactly one fold."""
    names = sorted(set(cases))
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if len(names) < k:
        raise ValueError(f"{len(names)} cases cannot fill {k} folds; use k <= {len(names)}")
    shuffled = list(names)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - a reproducible split, not a secret
    folds = []
    for index in range(k):
        val = set(shuffled[index::k])
        folds.append(Fold(tuple(n for n in names if n not in val), tuple(sorted(val))))
    return Splits(k, seed, tuple(names), tuple(folds))


def load_or_create(path: Path, cases: Sequence[str], k: int, seed: int) -> Splits:
    """The saved splits at ``path`` when they match; new ones, saved, when there are none."""
    path = Path(path)
    if path.exists():
        saved = Splits.from_json(contract.read_json(path))
        check_matches(saved, cases, k, seed)
        return saved
    splits = make_splits(cases, k, seed)
    contract.atomic_write_json(path, splits.to_json())
    return splits


def check_matches(saved: Splits, cases: Sequence[str], k: int, seed: int) -> None:
    """Raise SplitsMismatch saying how ``saved`` differs from the current run's inputs."""
    current = sorted(set(cases))
    problems = []
    if saved.k != k:
        problems.append(f"k is {saved.k}, the run asks for {k}")
    if saved.seed != seed:
        problems.append(f"seed is {saved.seed}, the run asks for {seed}")
    missing = sorted(set(current) - set(saved.cases))
    extra = sorted(set(saved.cases) - set(current))
    if missing:
        problems.append(f"{len(missing)} case(s) not in the saved split: {_few(missing)}")
    if extra:
        problems.append(f"{len(extra)} saved case(s) no longer in the dataset: {_few(extra)}")
    if problems:
        raise SplitsMismatch(f"saved {SPLITS_JSON} does not match this run: "
                             + "; ".join(problems))


def _few(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
