"""Each training loss pulls the right way on a tiny volume (docs/explanation/losses.md).

The logits themselves are the parameters (no network in between), so what is tested is the
loss's gradient alone: a few Adam steps on one batch must lower the loss (the whole loss, and
each topology term on its own), and the prediction must move towards the label. For a vessel
with a gap, the topology terms must price the gap and push the gap's vessel logits up.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from runner.seg.losses import LOSSES, TopologyLoss, build_loss, critical_voxels

SHAPE = (16, 16, 8)
STEPS = 6
TOPOLOGY = [name for name in LOSSES if name != "dice_ce"]


def branching_labels() -> torch.Tensor:
    """Two (1, X, Y, Z) labels: a trunk along X with a branch along Y, and its mirror."""
    label = torch.zeros(2, 1, *SHAPE)
    label[:, :, 2:14, 6:9, 3:6] = 1
    label[:, :, 8:11, 9:15, 3:6] = 1
    label[1] = torch.flip(label[1], dims=[1])
    return label


def dice_of(logits: torch.Tensor, label: torch.Tensor) -> float:
    pred = logits.argmax(dim=1, keepdim=True).float()
    return float(2 * (pred * label).sum() / (pred.sum() + label.sum()))


def descend(objective: Callable[[torch.Tensor], torch.Tensor],
            logits: torch.Tensor) -> tuple[float, float]:
    """(first, last) value of ``objective`` over ``STEPS`` Adam steps on ``logits``."""
    logits.requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    first = float(objective(logits).detach())
    for _ in range(STEPS):
        value = objective(logits)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return first, float(objective(logits).detach())


def random_logits() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 0.5 * torch.randn(2, 2, *SHAPE, generator=generator)


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_falls_after_a_few_steps_on_one_batch(name: str) -> None:
    label, logits = branching_labels(), random_logits()
    loss = build_loss(name, 0.5)
    dice_before = dice_of(logits, label)
    first, last = descend(lambda x: loss(x, label), logits)
    assert last < 0.7 * first, (first, last)
    assert dice_of(logits.detach(), label) > dice_before + 0.3


@pytest.mark.parametrize("name", TOPOLOGY)
def test_each_topology_term_falls_on_its_own(name: str) -> None:
    """The term alone, without Dice-CE to carry it, still descends."""
    label, logits = branching_labels(), random_logits()
    loss = build_loss(name, 0.5)
    first, last = descend(lambda x: loss.term(x, label), logits)
    assert last < 0.9 * first, (first, last)


def _gap_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A straight vessel, a prediction of it with a 2-slice gap, and the gap; logits +-1."""
    label = torch.zeros(1, 1, *SHAPE)
    label[:, :, 1:15, 6:9, 2:5] = 1
    gap = torch.zeros_like(label)
    gap[:, :, 7:9, 6:9, 2:5] = 1
    sign = 2 * label * (1 - gap) - 1
    return torch.cat([-sign, sign], dim=1), label, gap


@pytest.mark.parametrize("name", TOPOLOGY)
def test_a_gap_costs_more_than_the_whole_vessel(name: str) -> None:
    logits, label, _ = _gap_case()
    term = build_loss(name, 0.5)
    assert isinstance(term, TopologyLoss)
    whole = torch.cat([-(2 * label - 1), 2 * label - 1], dim=1)
    assert float(term.term(logits, label)) > float(term.term(whole, label)) + 0.01


@pytest.mark.parametrize("name", ["dice_ce_cldice", "warp"])
def test_the_gradient_closes_the_gap(name: str) -> None:
    """Descending the term raises the vessel logit over the gap (on average, never lowers it);
    for warp the gradient lives on the critical voxels alone."""
    logits, label, gap = _gap_case()
    logits.requires_grad_(True)
    build_loss(name, 0.5).term(logits, label).backward()
    assert logits.grad is not None
    toward_vessel = -(logits.grad[:, 1:] - logits.grad[:, :1])  # what descent adds to p(vessel)
    assert float(toward_vessel[gap > 0].mean()) > 0
    assert float(toward_vessel[gap > 0].min()) >= -1e-8  # float noise, never a real push
    if name == "warp":
        critical = critical_voxels(logits.detach(), label)
        assert 0 < float(critical.sum()) <= float((critical * gap).sum())
        assert float(toward_vessel[critical == 0].abs().max()) == 0.0
