"""Branching tubular vessel labels: random-walk centrelines with radii, drawn as balls.

Everything is in physical units (micrometres) until the last step, so a volume with coarse Z
spacing gets the same vessels as a finely sampled one, only sampled differently. A tree grows
from roots placed uniformly in the volume; each root walks both ways with a persistent,
mostly in-plane direction (two-photon stacks are thin in Z), tapers slowly, and spawns thinner
children at random; walks end at the lateral border or below the minimum radius and reflect at
the top and bottom. Roots are added until a centreline-length budget proportional to the volume
is spent, which keeps the foreground fraction similar across sizes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Extent = tuple[float, float, float]  # physical size (um) of the volume along X, Y, Z
Spacing = tuple[float, float, float]
BoolVolume = NDArray[np.bool_]
Points = NDArray[np.float64]  # (m, 4): x, y, z, radius in um


@dataclass(frozen=True)
class TreeParams:
    """Shape of the vessel network; the defaults give about 2-6 % foreground."""

    length_density: float = 2.5e-3  # um of centreline per um^3 of volume
    root_radius: tuple[float, float] = (2.0, 5.0)  # um, uniform
    min_radius: float = 1.0  # a walk ends when it tapers below this
    step: float = 1.0  # um between centreline points
    wiggle: float = 0.12  # direction noise per step
    z_freedom: float = 0.3  # out-of-plane share of the direction noise
    branch_rate: float = 1 / 60  # children per um of centreline
    child_radius: tuple[float, float] = (0.55, 0.85)  # child radius / parent radius
    taper: float = 1.5e-3  # relative radius loss per um
    max_segments: int = 600


@dataclass
class _Tip:
    """Where a walk starts: position, unit direction and radius."""

    pos: list[float]
    direction: list[float]
    radius: float


def grow_tree(rng: np.random.Generator, extent: Extent,
              params: TreeParams = TreeParams()) -> Points:
    """Centreline points with radii of a vessel network filling ``extent``."""
    budget = params.length_density * extent[0] * extent[1] * max(extent[2], params.step)
    points: list[tuple[float, float, float, float]] = []
    segments = 0
    while len(points) * params.step < budget and segments < params.max_segments:
        pending = _root_tips(rng, extent, params)
        while pending and segments < params.max_segments:
            _walk(pending.pop(), rng, extent, params, points=points, pending=pending)
            segments += 1
    return np.asarray(points, dtype=np.float64).reshape(-1, 4)


def _root_tips(rng: np.random.Generator, extent: Extent, params: TreeParams) -> list[_Tip]:
    pos = [float(v) for v in rng.random(3) * np.asarray(extent)]
    angle = float(rng.uniform(0.0, 2 * math.pi))
    direction = _unit([math.cos(angle), math.sin(angle), float(rng.normal(0.0, 0.15))])
    radius = float(rng.uniform(*params.root_radius))
    backwards = [-d for d in direction]
    return [_Tip(pos, direction, radius), _Tip(list(pos), backwards, radius)]


def _walk(tip: _Tip, rng: np.random.Generator, extent: Extent, params: TreeParams, *,
          points: list[tuple[float, float, float, float]], pending: list[_Tip]) -> None:
    """Follow one vessel from ``tip``, appending its points and queueing its children."""
    max_steps = int(2 * (extent[0] + extent[1]) / params.step) + 1
    (x, y, z), (dx, dy, dz), radius = tip.pos, tip.direction, tip.radius
    shrink, step_len = 1.0 - params.taper * params.step, params.step
    for nx, ny, nz, branch_draw in _draws(rng, max_steps, params.wiggle):
        if radius < params.min_radius or not (0 <= x <= extent[0] and 0 <= y <= extent[1]):
            return
        points.append((x, y, z, radius))
        dx, dy, dz = _unit3(dx + nx, dy + ny, 0.9 * dz + nz * params.z_freedom)
        x, y, z = x + dx * step_len, y + dy * step_len, z + dz * step_len
        z, dz = _reflect_z(z, dz, extent[2])
        radius *= shrink
        if branch_draw < params.branch_rate * step_len:
            pending.append(_child(rng, [x, y, z], [dx, dy, dz], radius, params))
            radius *= 0.92


def _draws(rng: np.random.Generator, steps: int,
           wiggle: float) -> Iterator[tuple[float, float, float, float]]:
    """Direction noise and a branch draw per step, drawn in chunks (most walks are short)."""
    for start in range(0, steps, _CHUNK):
        count = min(_CHUNK, steps - start)
        noise = rng.normal(scale=wiggle, size=(count, 3))
        rows = np.column_stack([noise, rng.random(count)]).tolist()
        yield from ((a, b, c, d) for a, b, c, d in rows)


_CHUNK = 64


def _child(rng: np.random.Generator, pos: list[float], direction: list[float],
           radius: float, params: TreeParams) -> _Tip:
    """A branch leaving at 35-80 degrees in the imaging plane, on either side."""
    angle = math.radians(float(rng.uniform(35.0, 80.0))) * (1 if rng.random() < 0.5 else -1)
    cos, sin = math.cos(angle), math.sin(angle)
    turned = [cos * direction[0] - sin * direction[1], sin * direction[0] + cos * direction[1],
              direction[2] + float(rng.normal(0.0, 0.2))]
    return _Tip(list(pos), _unit(turned), radius * float(rng.uniform(*params.child_radius)))


def _reflect_z(z: float, dz: float, depth: float) -> tuple[float, float]:
    """Bounce off the top and bottom of the stack."""
    if z < 0.0:
        return -z, abs(dz)
    if z > depth:
        return max(0.0, 2 * depth - z), -abs(dz)
    return z, dz


def _unit3(x: float, y: float, z: float) -> tuple[float, float, float]:
    norm = math.sqrt(x * x + y * y + z * z) or 1.0
    return x / norm, y / norm, z / norm


def _unit(vec: list[float]) -> list[float]:
    return list(_unit3(vec[0], vec[1], vec[2]))


def rasterize(points: Points, shape: tuple[int, int, int], spacing: Spacing) -> BoolVolume:
    """Voxels whose centre lies inside any ball; centreline voxels always set.

    Voxel ``i`` has its centre at ``i * spacing`` um (the affine written with it has no
    offset). Setting the centreline voxels keeps a vessel thinner than the Z spacing connected.
    Balls are drawn in batches of similar radius, each ball in a box of the batch's size.
    """
    label = np.zeros(shape, dtype=bool)
    if not len(points):
        return label
    stamps = _stamp_points(points)
    stamps = stamps[np.argsort(stamps[:, 3], kind="stable")]
    for start in range(0, len(stamps), _BATCH):
        _stamp_batch(label, stamps[start:start + _BATCH], spacing)
    idx = np.rint(points[:, :3] / np.asarray(spacing)).astype(np.int64)
    idx = np.clip(idx, 0, np.asarray(shape) - 1)
    label[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return label


_BATCH = 1024


def _stamp_points(points: Points) -> Points:
    """Every point at least half a radius along from the last kept one.

    Balls half a radius apart leave a scalloped wall at most 3 % of the radius deep.
    """
    rows: list[list[float]] = points.tolist()
    keep: list[int] = []
    last = rows[0]
    for index, row in enumerate(rows):
        if not keep or math.dist(last[:3], row[:3]) >= 0.5 * min(row[3], last[3]):
            keep.append(index)
            last = row
    return points[keep]


def _stamp_batch(label: BoolVolume, stamps: Points, spacing: Spacing) -> None:
    """Set every voxel whose centre is inside one of ``stamps`` (x, y, z, r rows)."""
    radius = stamps[:, 3]
    axes = []
    for axis, s in enumerate(spacing):
        half = math.ceil(float(radius.max()) / s) + 1
        nearest = np.rint(stamps[:, axis] / s).astype(np.int64)
        index = nearest[:, None] + np.arange(-half, half + 1)[None, :]
        sq = (index * s - stamps[:, axis, None]) ** 2
        sq[(index < 0) | (index >= label.shape[axis])] = np.inf
        axes.append((np.clip(index, 0, label.shape[axis] - 1), sq))
    (ix, sx), (iy, sy), (iz, sz) = axes
    dist = sx[:, :, None, None] + sy[:, None, :, None] + sz[:, None, None, :]
    k, i, j, m = np.nonzero(dist <= (radius**2)[:, None, None, None])
    label[ix[k, i], iy[k, j], iz[k, m]] = True
