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

    length_density: float = 1.6e-3  # um of centreline per um^3 of volume
    root_radius: tuple[float, float] = (2.0, 4.5)  # um, uniform
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
            _walk(pending.pop(), rng, extent, params, points, pending)
            segments += 1
    return np.asarray(points, dtype=np.float64).reshape(-1, 4)


def _root_tips(rng: np.random.Generator, extent: Extent, params: TreeParams) -> list[_Tip]:
    pos = [float(v) for v in rng.random(3) * np.asarray(extent)]
    angle = float(rng.uniform(0.0, 2 * math.pi))
    direction = _unit([math.cos(angle), math.sin(angle), float(rng.normal(0.0, 0.15))])
    radius = float(rng.uniform(*params.root_radius))
    backwards = [-d for d in direction]
    return [_Tip(pos, direction, radius), _Tip(list(pos), backwards, radius)]


def _walk(tip: _Tip, rng: np.random.Generator, extent: Extent, params: TreeParams,
          points: list[tuple[float, float, float, float]], pending: list[_Tip]) -> None:
    """Follow one vessel from ``tip``, appending its points and queueing its children."""
    max_steps = int(2 * (extent[0] + extent[1]) / params.step) + 1
    noise = (rng.normal(size=(max_steps, 3)) * params.wiggle).tolist()
    branch_draws = rng.random(max_steps).tolist()
    pos, direction, radius = list(tip.pos), list(tip.direction), tip.radius
    shrink = 1.0 - params.taper * params.step
    for step in range(max_steps):
        if radius < params.min_radius or not _inside_xy(pos, extent):
            return
        points.append((pos[0], pos[1], pos[2], radius))
        nx, ny, nz = noise[step]
        direction = _unit([direction[0] + nx, direction[1] + ny,
                           0.9 * direction[2] + nz * params.z_freedom])
        pos = [p + d * params.step for p, d in zip(pos, direction, strict=True)]
        _reflect_z(pos, direction, extent[2])
        radius *= shrink
        if branch_draws[step] < params.branch_rate * params.step:
            pending.append(_child(rng, pos, direction, radius, params))
            radius *= 0.92


def _child(rng: np.random.Generator, pos: list[float], direction: list[float],
           radius: float, params: TreeParams) -> _Tip:
    """A branch leaving at 35-80 degrees in the imaging plane, on either side."""
    angle = math.radians(float(rng.uniform(35.0, 80.0))) * (1 if rng.random() < 0.5 else -1)
    cos, sin = math.cos(angle), math.sin(angle)
    turned = [cos * direction[0] - sin * direction[1], sin * direction[0] + cos * direction[1],
              direction[2] + float(rng.normal(0.0, 0.2))]
    return _Tip(list(pos), _unit(turned), radius * float(rng.uniform(*params.child_radius)))


def _inside_xy(pos: list[float], extent: Extent) -> bool:
    return 0.0 <= pos[0] <= extent[0] and 0.0 <= pos[1] <= extent[1]


def _reflect_z(pos: list[float], direction: list[float], depth: float) -> None:
    if pos[2] < 0.0:
        pos[2], direction[2] = -pos[2], abs(direction[2])
    elif pos[2] > depth:
        pos[2], direction[2] = max(0.0, 2 * depth - pos[2]), -abs(direction[2])


def _unit(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def rasterize(points: Points, shape: tuple[int, int, int], spacing: Spacing) -> BoolVolume:
    """Voxels whose centre lies inside any ball; centreline voxels always set.

    Voxel ``i`` has its centre at ``i * spacing`` um (the affine written with it has no
    offset). Setting the centreline voxels keeps a vessel thinner than the Z spacing connected.
    """
    label = np.zeros(shape, dtype=bool)
    if not len(points):
        return label
    for x, y, z, r in _stamp_points(points):
        _stamp(label, (x, y, z), r, spacing)
    idx = np.rint(points[:, :3] / np.asarray(spacing)).astype(np.int64)
    idx = np.clip(idx, 0, np.asarray(shape) - 1)
    label[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return label


def _stamp_points(points: Points) -> list[tuple[float, float, float, float]]:
    """Every point that is at least half a radius along from the last stamped one.

    Balls half a radius apart leave a scalloped wall at most 3 % of the radius deep.
    """
    rows: list[list[float]] = points.tolist()
    kept: list[tuple[float, float, float, float]] = []
    last: list[float] | None = None
    for x, y, z, r in rows:
        if last is None or math.dist(last[:3], (x, y, z)) >= 0.5 * min(r, last[3]):
            kept.append((x, y, z, r))
            last = [x, y, z, r]
    return kept


def _stamp(label: BoolVolume, centre: tuple[float, float, float], radius: float,
           spacing: Spacing) -> None:
    lo = [max(0, math.ceil((c - radius) / s)) for c, s in zip(centre, spacing, strict=True)]
    hi = [min(n, math.floor((c + radius) / s) + 1)
          for c, s, n in zip(centre, spacing, label.shape, strict=True)]
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        return
    sq = [(np.arange(low, h) * s - c) ** 2
          for low, h, s, c in zip(lo, hi, spacing, centre, strict=True)]
    ball = sq[0][:, None, None] + sq[1][None, :, None] + sq[2][None, None, :] <= radius**2
    label[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= ball
