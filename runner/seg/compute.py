"""The compute profile: what this machine can give a run, and the settings derived from it.

Hardware is read where a container actually sets it: RAM and CPUs from the cgroup limits (v2
``memory.max``/``cpu.max``, v1 ``memory.limit_in_bytes``/``cpu.cfs_quota_us``, the smallest
limit on the way up the hierarchy), capped by what the kernel reports, so a pod that shows the
host's 2 TB in /proc/meminfo is still sized to its 64 GB limit. GPUs come from NVML
(``runner.gpu``), with torch as a fallback.

``resolve`` turns params + dataset profile + hardware into a ``Plan``: an explicit param always
wins; ``auto`` ones follow the profile table. Guards then refuse settings that cannot work,
with a ``GuardError`` saying what to change: a patch that does not divide by the network's
strides or is larger than every volume (all padding on some axis), a cache larger than the RAM
budget, a batch whose estimated activations exceed the GPU's memory, an AMP mode the device lacks.

Small volumes are padded, not obeyed (nnU-Net's rule): the auto patch is capped by the *median*
shape of the dataset (rounded up to the network's divisor), never by the smallest volume, so one
5-slice stack does not make every patch 5 slices thick. A volume smaller than the patch on some
axis is zero-padded (after z-scoring, so the padding reads as mean intensity and background
label) by the crop in training and by the sliding window in validation; ``Plan.padding`` lists
each such volume and how many voxels it gains per axis, and lands in derived.json.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from runner import gpu
from runner.seg.model import NetworkPlan, floor_to_divisor, parameter_count, plan_network
from runner.seg.params import TrainParams
from runner.seg.profile import DatasetProfile, VolumeInfo

Triple = tuple[int, int, int]
GIB = 1 << 30
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_UNLIMITED = 1 << 60  # v1 reports "no limit" as a huge page-aligned number
RAM_CACHE_SHARE = 0.5  # of the available RAM, for cached volumes
VRAM_BATCH_SHARE = 0.85  # of total GPU memory, for weights + activations (the guard)
VRAM_AUTO_SHARE = 0.6  # what auto batch sizing aims at, leaving room for validation
VRAM_CACHE_SHARE = 0.3  # cached volumes may live on the GPU when they fit in this share
FG_INDEX_BYTES_PER_VOXEL = 1.0  # foreground indices (int32) for up to 25% vessel voxels
ACTIVATION_TENSORS = 16  # tensors of size voxels x filters kept per level for backward
CUDA_CONTEXT_BYTES = GIB
PADDING_LISTED = 100  # padded volumes named in derived.json; n_padded counts them all


class GuardError(ValueError):
    """A setting that cannot work on this machine or dataset; the message says what to change."""


@dataclass(frozen=True)
class ProfileDefaults:
    patch: Triple
    batch: int
    filters: tuple[int, ...]


PROFILES: dict[str, ProfileDefaults] = {
    "cpu": ProfileDefaults((64, 64, 8), 4, (8, 16, 32, 64)),
    "gpu_low": ProfileDefaults((96, 96, 16), 4, (32, 64, 128, 256)),  # < 12 GiB
    "gpu_mid": ProfileDefaults((128, 128, 16), 8, (32, 64, 128, 256)),  # < 40 GiB
    "gpu_high": ProfileDefaults((128, 128, 16), 16, (32, 64, 128, 256)),
}


@dataclass(frozen=True)
class Hardware:
    cpus: float
    ram_total: int
    ram_available: int
    ram_source: str  # "cgroup v2", "cgroup v1" or "host"
    gpu_name: str | None = None
    vram_total: int = 0
    bf16: bool = False

    @property
    def profile_name(self) -> str:
        if not self.vram_total:
            return "cpu"
        if self.vram_total < 12 * GIB:
            return "gpu_low"
        return "gpu_mid" if self.vram_total < 40 * GIB else "gpu_high"


@dataclass
class Plan:
    """Every derived setting of a run; ``to_json`` is what lands in derived.json."""

    profile: str
    device: str
    amp: str
    batch_size: int
    num_samples: int
    patch_size: Triple
    network: NetworkPlan
    cache_rate: float
    cache_device: str
    num_threads: int
    hardware: Hardware
    estimates: dict[str, float] = field(default_factory=dict)
    padding: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        hw = self.hardware
        return {"compute_profile": self.profile, "device": self.device, "amp": self.amp,
                "batch_size": self.batch_size, "num_samples": self.num_samples,
                "patch_size": list(self.patch_size), "network": self.network.to_json(),
                "cache_rate": self.cache_rate, "cache_device": self.cache_device,
                "num_threads": self.num_threads,
                "hardware": {"cpus": hw.cpus, "ram_total_bytes": hw.ram_total,
                             "ram_available_bytes": hw.ram_available,
                             "ram_source": hw.ram_source, "gpu": hw.gpu_name,
                             "vram_total_bytes": hw.vram_total, "bf16": hw.bf16},
                "estimates": {k: round(v, 3) for k, v in self.estimates.items()},
                "padding": self.padding}


# -- hardware ---------------------------------------------------------------------------------
def detect_hardware(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup"),
                    with_gpu: bool = True) -> Hardware:
    memory_max, memory_used, cpu_quota, source = cgroup_limits(root, proc_cgroup)
    vm = psutil.virtual_memory()
    total = min(vm.total, memory_max) if memory_max else vm.total
    available = vm.available
    if memory_max:
        available = min(available, max(0, memory_max - memory_used))
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    if cpu_quota:
        cpus = min(cpus, cpu_quota)
    name, vram, bf16 = _gpu() if with_gpu else (None, 0, False)
    return Hardware(cpus, total, available, source if memory_max or cpu_quota else "host",
                    name, vram, bf16)


def _gpu() -> tuple[str | None, int, bool]:
    try:
        import torch
    except ImportError:
        return None, 0, False
    if not torch.cuda.is_available():
        return None, 0, False
    found = gpu.devices()
    if found:
        name, vram = str(found[0]["name"]), int(found[0]["memory_total_bytes"])
    else:
        props = torch.cuda.get_device_properties(0)
        name, vram = props.name, int(props.total_memory)
    return name, vram, bool(torch.cuda.is_bf16_supported())


def cgroup_limits(root: Path, proc_cgroup: Path) -> tuple[int | None, int, float | None, str]:
    """(memory limit, memory in use, CPU quota, which cgroup version) of this process."""
    paths = _cgroup_paths(proc_cgroup)
    if (root / "cgroup.controllers").exists():
        chain = _chain(root, paths.get("", "/"))
        memory = _min_limit(_read_int(d / "memory.max") for d in chain)
        used = _first_int(d / "memory.current" for d in chain)
        cpu = _min_quota(_cpu_max(d / "cpu.max") for d in chain)
        return memory, used, cpu, "cgroup v2"
    mem_chain = _chain(root / "memory", paths.get("memory", "/"))
    memory = _min_limit(_read_int(d / "memory.limit_in_bytes") for d in mem_chain)
    used = _first_int(d / "memory.usage_in_bytes" for d in mem_chain)
    cpu_dir = root / "cpu" if (root / "cpu").exists() else root / "cpu,cpuacct"
    cpu_chain = _chain(cpu_dir, paths.get("cpu", paths.get("cpu,cpuacct", "/")))
    cpu = _min_quota(_cfs_quota(d) for d in cpu_chain)
    return memory, used, cpu, "cgroup v1"


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """controller -> path from /proc/self/cgroup ("" is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    return paths


def _chain(base: Path, relative: str) -> list[Path]:
    """The cgroup dir of this process and its ancestors, deepest first (existing ones only)."""
    parts = [p for p in relative.split("/") if p]
    dirs = [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _first_int(paths: Any) -> int:
    return next((v for v in map(_read_int, paths) if v is not None), 0)


def _min_limit(values: Any) -> int | None:
    limits = [v for v in values if v is not None and v < CGROUP_UNLIMITED]
    return min(limits) if limits else None


def _cpu_max(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _cfs_quota(directory: Path) -> float | None:
    quota, period = (_read_int(directory / "cpu.cfs_quota_us"),
                     _read_int(directory / "cpu.cfs_period_us"))
    return quota / period if quota and period else None  # -1 (no limit) does not parse


def _min_quota(values: Any) -> float | None:
    quotas = [v for v in values if v]
    return min(quotas) if quotas else None


# -- resolving params into a plan -------------------------------------------------------------
def resolve(params: TrainParams, profile: DatasetProfile, hw: Hardware) -> Plan:
    """Explicit params win; auto ones come from the hardware profile; then the guards run."""
    defaults = PROFILES[hw.profile_name]
    device = _device(params.device, hw)
    if device == "cpu" and hw.vram_total:
        defaults = PROFILES["cpu"]
    filters = params.filters or defaults.filters
    spacing = profile.spacing_stats()["median"]
    shapes = [v.shape for v in profile.volumes]
    patch, network = _patch_and_network(params, defaults.patch, spacing, shapes, filters)
    amp = _amp(params.amp, device, hw)
    batch = params.batch_size or _auto_batch(defaults.batch, patch, network, amp, hw=hw,
                                                     device=device)
    cache_bytes = cached_bytes(profile)
    cache_rate = params.cache_rate if params.cache_rate is not None \
        else auto_cache_rate(cache_bytes, hw)
    plan = Plan(hw.profile_name if device == "cuda" else "cpu", device, amp, batch,
                math.gcd(batch, params.num_samples), patch, network, cache_rate,
                _cache_device(params.cache_device, device, cache_bytes * cache_rate, hw),
                params.num_threads or max(1, int(hw.cpus)), hw)
    plan.estimates = {"cache_gib": cache_bytes * cache_rate / GIB,
                      "dataset_cached_gib": cache_bytes / GIB,
                      "ram_budget_gib": ram_budget(hw) / GIB,
                      "vram_batch_gib": vram_estimate(batch, patch, network, amp) / GIB}
    plan.padding = padding_report(patch, profile.volumes)
    check_guards(plan, params, profile)
    return plan


def _device(requested: str, hw: Hardware) -> str:
    if requested == "cuda" and not hw.vram_total:
        raise GuardError("device=cuda but no CUDA GPU is visible; use device=auto or cpu")
    if requested == "auto":
        return "cuda" if hw.vram_total else "cpu"
    return requested


def _patch_and_network(params: TrainParams, target: Triple, spacing: list[float],
                       shapes: list[Triple], filters: tuple[int, ...]) -> tuple[Triple,
                                                                                NetworkPlan]:
    if params.patch_size is not None:  # explicit: plan for it; the guards judge it
        return params.patch_size, plan_network(spacing, params.patch_size, filters)
    network = plan_network(spacing, target, filters)
    patch = _capped(target, shapes, network.divisor)
    network = plan_network(spacing, patch, filters)  # a smaller patch may need fewer strides
    return _capped(patch, shapes, network.divisor), network


def _capped(patch: Triple, shapes: list[Triple], divisor: Triple) -> Triple:
    cap = median_cap(shapes, divisor)
    return floor_to_divisor([min(p, c) for p, c in zip(patch, cap, strict=True)], divisor)


def median_cap(shapes: list[Triple], divisor: Triple) -> Triple:
    """Per axis: the median shape rounded up to the divisor, the largest auto patch."""
    cap = [math.ceil(statistics.median(s[axis] for s in shapes) / d) * d
           for axis, d in enumerate(divisor)]
    return cap[0], cap[1], cap[2]


def shape_ceiling(shapes: list[Triple], divisor: Triple) -> Triple:
    """Per axis: the largest shape rounded up to the divisor; beyond it a patch is all padding
    on that axis for every volume."""
    top = [math.ceil(max(s[axis] for s in shapes) / d) * d for axis, d in enumerate(divisor)]
    return top[0], top[1], top[2]


def padding_report(patch: Triple, volumes: list[VolumeInfo]) -> dict[str, Any]:
    """Which volumes are smaller than the patch, and the voxels each gains per axis."""
    padded = [{"name": v.name, "shape": list(v.shape),
               "pad": [max(0, p - n) for p, n in zip(patch, v.shape, strict=True)]}
              for v in volumes if any(n < p for p, n in zip(patch, v.shape, strict=True))]
    return {"mode": "zero-pad to the patch after z-scoring (label: background)",
            "n_padded": len(padded), "n_volumes": len(volumes),
            "volumes": padded[:PADDING_LISTED]}


def _amp(requested: str, device: str, hw: Hardware) -> str:
    if requested == "auto":
        if device == "cpu":
            return "none"
        return "bf16" if hw.bf16 else "fp16"
    if requested == "fp16" and device == "cpu":
        raise GuardError("amp=fp16 needs a CUDA GPU (a GradScaler on fp16 activations); "
                         "use amp=none (or bf16) on CPU")
    if requested == "bf16" and device == "cuda" and not hw.bf16:
        raise GuardError(f"amp=bf16 is not supported by {hw.gpu_name}; use amp=fp16 or auto")
    return requested


def vram_estimate(batch: int, patch: Triple, network: NetworkPlan, amp: str) -> float:
    """Bytes of GPU memory for training one batch: weights, AdamW state, activations."""
    act_bytes = 4 if amp == "none" else 3  # half-precision convs, float32 norms and softmax
    voxels = math.prod(patch)
    per_sample = 0.0
    for level, filters in enumerate(network.filters):
        scale = math.prod(math.prod(s) for s in network.strides[:level + 1])
        per_sample += ACTIVATION_TENSORS * voxels / scale * filters * act_bytes
    weights = parameter_count(network) * 16  # weights, grads, two AdamW moments (float32)
    return CUDA_CONTEXT_BYTES + weights + batch * per_sample


def _auto_batch(largest: int, patch: Triple, network: NetworkPlan, amp: str, *, hw: Hardware,
                device: str) -> int:
    if device == "cpu":
        return largest
    batch = largest
    while batch > 1 and vram_estimate(batch, patch, network, amp) > VRAM_AUTO_SHARE * \
            hw.vram_total:
        batch //= 2
    return batch


def cached_bytes(profile: DatasetProfile) -> int:
    """RAM the volume cache needs at cache_rate=1: float32 images, uint8 labels, fg indices."""
    sizes = profile.bytes()
    voxels = sum(v.voxels for v in profile.volumes)
    return int(sizes["images_cached"] + sizes["labels_cached"]
               + FG_INDEX_BYTES_PER_VOXEL * voxels)


def ram_budget(hw: Hardware) -> float:
    return RAM_CACHE_SHARE * hw.ram_available


def auto_cache_rate(needed: int, hw: Hardware) -> float:
    if needed <= 0:
        return 1.0
    return max(0.0, min(1.0, math.floor(100 * ram_budget(hw) / needed) / 100))


def _cache_device(requested: str, device: str, cache_bytes: float, hw: Hardware) -> str:
    if requested == "cuda" and device != "cuda":
        raise GuardError("cache_device=cuda needs device=cuda; use cache_device=auto")
    if requested != "auto":
        return requested
    fits = device == "cuda" and cache_bytes <= VRAM_CACHE_SHARE * hw.vram_total
    return "cuda" if fits else "cpu"


# -- guards -----------------------------------------------------------------------------------
def check_guards(plan: Plan, params: TrainParams, profile: DatasetProfile) -> None:
    check_patch(plan.patch_size, plan.network, [v.shape for v in profile.volumes])
    check_cache(plan.cache_rate, cached_bytes(profile), plan.hardware)
    if plan.device == "cuda":
        check_batch(plan, params)


def check_patch(patch: Triple, network: NetworkPlan, shapes: list[Triple]) -> None:
    divisor = network.divisor
    bad = [f"{axis}={p} (divisor {d})" for axis, p, d in zip("xyz", patch, divisor, strict=True)
           if p % d]
    if bad:
        fixed = "x".join(map(str, floor_to_divisor(patch, divisor)))
        raise GuardError(f"patch_size {_fmt(patch)} does not divide by the network's stride "
                         f"product {_fmt(divisor)}: {', '.join(bad)}; use patch_size={fixed} "
                         "or patch_size=auto")
    limit = shape_ceiling(shapes, divisor)
    if any(p > s for p, s in zip(patch, limit, strict=True)):
        fixed = "x".join(str(min(p, s)) for p, s in zip(patch, limit, strict=True))
        raise GuardError(f"patch_size {_fmt(patch)} is larger than every volume: the largest, "
                         f"padded to the divisor, is {_fmt(limit)}; use patch_size={fixed} or "
                         "patch_size=auto")


def check_cache(cache_rate: float, needed: int, hw: Hardware) -> None:
    want, budget = cache_rate * needed, ram_budget(hw)
    if want > budget:
        fit = math.floor(100 * budget / needed) / 100 if needed else 1.0
        raise GuardError(f"cache_rate={cache_rate:g} needs {_size(want)} of RAM for the volume "
                         f"cache but the budget is {_size(budget)} ({RAM_CACHE_SHARE:.0%} of "
                         f"{_size(hw.ram_available)} available, {hw.ram_source}); use "
                         f"cache_rate={fit:g} or cache_rate=auto")


def check_batch(plan: Plan, params: TrainParams) -> None:
    need = vram_estimate(plan.batch_size, plan.patch_size, plan.network, plan.amp)
    limit = VRAM_BATCH_SHARE * plan.hardware.vram_total
    if need <= limit:
        return
    fit = plan.batch_size
    while fit > 1 and vram_estimate(fit, plan.patch_size, plan.network, plan.amp) > limit:
        fit //= 2
    what = "batch_size" if params.batch_size else "the auto batch at this patch size"
    raise GuardError(f"{what} ({plan.batch_size} x {_fmt(plan.patch_size)}) needs about "
                     f"{_size(need)} of GPU memory (estimate) but {plan.hardware.gpu_name} has "
                     f"{_size(plan.hardware.vram_total)}; use batch_size={fit}, a "
                     "smaller patch_size or fewer filters")


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


def _fmt(values: Triple) -> str:
    return "x".join(map(str, values))
