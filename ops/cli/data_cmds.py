"""`ops data ...`: make a synthetic dataset, profile a dataset (needs the train extra)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from ops.cli import render
from ops.services import data


@click.group("data")
def data_group() -> None:
    """Synthetic vessel datasets and header-only dataset profiles."""


@data_group.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Directory to write imagesTr/, labelsTr/ and dataset.json into.")
@click.option("--n", type=click.IntRange(min=1), default=24, show_default=True,
              help="Number of volumes.")
@click.option("--size", type=click.IntRange(min=8), default=256, show_default=True,
              help="Lateral size: volumes are SIZE x SIZE x Z.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes to use (default: up to 4 CPUs); the output does not change.")
@click.option("--force", is_flag=True, help="Replace the dataset files already in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def synth_cmd(out_dir: Path, n: int, size: int, seed: int, workers: int | None, force: bool,
              as_json: bool) -> None:
    """Write synthetic two-photon-like vessel volumes and labels as NIfTI."""
    with _volume_bar(n, enabled=not as_json) as bar:
        report = data.synth(out_dir, n=n, size=size, seed=seed, overwrite=force,
                            workers=workers, progress=bar)
    if as_json:
        render.echo_json(report.to_json())
    else:
        click.echo(report.render_text())


@data_group.command("profile")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--divisor", default="16,16,4", show_default=True, metavar="X,Y,Z",
              help="The network's stride product per axis; patches are multiples of it.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def profile_cmd(data_dir: Path, divisor: str, as_json: bool) -> None:
    """Profile a NIfTI dataset from its headers only.

    Shapes, spacing, outliers, sizes and a safe patch."""
    found = data.profile(data_dir, data.parse_divisor(divisor))
    if as_json:
        render.echo_json(found.to_json())
    else:
        click.echo(data.profile_text(found))


@contextlib.contextmanager
def _volume_bar(total: int, *, enabled: bool) -> Iterator[Callable[[int], object]]:
    """click's progress bar over the volumes, on stderr when it is a terminal; else silent."""
    if not (enabled and sys.stderr.isatty()):
        yield lambda _n: None
        return
    with click.progressbar(length=total, label="volumes", file=sys.stderr, show_pos=True,
                           show_eta=True) as bar:
        yield bar.update
