"""Curation policies: which blocks to treat and how, as one named value.

A :class:`CurationPolicy` is a detector, a budget and a loss weight (0 removes): "prune the top 2%
by the combined detector". The paper's per-quadrant rules are the policy :data:`PAPER`.
:data:`RECOMMENDED` is the toolkit's default: the point of the measured budget frontier
(``results/gpt2_leaky_cpu``) with the largest extraction reduction at <= 1% perplexity cost or,
where no arm lowers extraction measurably, the largest exposure reduction at that cost, as
:func:`hf_carto.measure.frontier.recommend_policy` chooses it (a test recomputes it from the
committed per-seed reports); the README states its numbers with their intervals.

:func:`curate` labels a scored dataset (``add_cartography``'s output) with the policy's treatment
columns, the same ones the experiment's arms and the weighted trainer read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hf_carto.core.columns import SAMPLE_ID, read_columns, score_column
from hf_carto.score.detectors import add_detector_scores, detector_names, top_budget

if TYPE_CHECKING:
    from datasets import Dataset

    from hf_carto.score.cartography import CartographyFit

__all__ = ["CurationPolicy", "PAPER", "RECOMMENDED", "POLICIES", "resolve_policy", "curate"]

QUADRANTS = "quadrants"


@dataclass(frozen=True)
class CurationPolicy:
    """What to curate: the top ``budget`` fraction of blocks by ``detector`` get loss weight
    ``weight`` (``0`` removes them); ``detector = "quadrants"`` is the paper's per-quadrant rules,
    hotspots at loss weight ``weight`` (no budget).

    Example:
        >>> CurationPolicy("combined", 0.02).arm_name
        'combined_prune0.02'
    """

    detector: str
    budget: float | None = None
    weight: float = 0.0

    def __post_init__(self) -> None:

        if self.detector != QUADRANTS:
            detector_names([self.detector])
            if self.detector == "random":
                raise ValueError("random is the control of every policy, not a policy")
            if self.budget is None or not 0.0 < self.budget < 1.0:
                raise ValueError(f"a detector's policy needs a budget in (0, 1); got {self.budget!r}")
        elif self.budget is not None:
            raise ValueError("the per-quadrant rules select by quadrant, not by a budget")
        if not 0.0 <= self.weight < 1.0 and not (self.detector == QUADRANTS and self.weight == 1.0):
            raise ValueError(f"weight must lie in [0, 1); got {self.weight!r}")

    @property
    def kind(self) -> str:
        """``prune``, ``downweight`` or ``quadrants``."""
        if self.detector == QUADRANTS:
            return QUADRANTS
        return "prune" if self.weight == 0 else "downweight"

    @property
    def arm_name(self) -> str:
        """The experiment's name for this policy's arm (``gendatacarto`` for the quadrant rules)."""
        if self.detector == QUADRANTS:
            return "gendatacarto"
        return f"{self.detector}_{self.kind}{self.budget:g}"

    def describe(self) -> str:
        if self.detector == QUADRANTS:
            return f"the paper's per-quadrant rules (hotspots at loss weight {self.weight:g})"
        what = "remove" if self.weight == 0 else f"down-weight to {self.weight:g}"
        return f"{what} the top {self.budget:.0%} of blocks by {self.detector}"


#: The paper's rules: hotspots at loss weight 0.5, nothing else changed.
PAPER = CurationPolicy(QUADRANTS, None, 0.5)
#: The default: see the module docstring and the README's results for where it comes from.
RECOMMENDED = CurationPolicy("memorization", 0.02, 0.0)
POLICIES = {"recommended": RECOMMENDED, "paper": PAPER}


def resolve_policy(policy: str | CurationPolicy) -> CurationPolicy:
    """A policy by name (``recommended``, ``paper``) or as given."""
    if isinstance(policy, CurationPolicy):
        return policy
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {list(POLICIES)} or pass a CurationPolicy")
    return POLICIES[policy]


def curate(
    scored: Dataset,
    policy: str | CurationPolicy = "recommended",
    *,
    fit: CartographyFit | None = None,
    reference: np.ndarray | None = None,
    seed: int = 0,
) -> Dataset:
    """``scored`` with the treatment columns (``carto_loss_weight``, ``carto_sampling_weight``,
    ``carto_keep``) of ``policy`` and, for a detector's policy, its ``carto_score_<detector>`` column.

    Args:
        scored (`datasets.Dataset`): output of :func:`hf_carto.add_cartography` (loss columns included).
        policy: ``"recommended"`` (default), ``"paper"`` or a :class:`CurationPolicy`.
        fit (`CartographyFit`): the fit behind ``scored``; its eps and burn-in feed
            the detectors that need them (every detector of a budget policy but the plain-loss ones).
        reference (`np.ndarray`, *optional*): a reference model's per-block losses for
            ``reference_ratio`` / ``combined`` (default: the burn-in snapshot).

    Raises:
        ValueError: on an unknown policy, or a detector's policy without ``fit``.
    """
    from hf_carto.curation.arms import treated
    from hf_carto.curation.interventions import apply_interventions

    chosen = resolve_policy(policy)
    if chosen.detector == QUADRANTS:
        return apply_interventions(scored, gamma=1.0, alpha=chosen.weight, remove_noisy=False)
    if fit is None:
        raise ValueError(f"policy {chosen.describe()!r} needs the CartographyFit of the scores (fit=...)")
    with_scores = add_detector_scores(
        scored, [chosen.detector], eps=fit.eps, burn_in=fit.burn_in, reference=reference, seed=seed
    )
    ids = [SAMPLE_ID] if SAMPLE_ID in with_scores.column_names else []
    cols = read_columns(with_scores, [score_column(chosen.detector)] + ids)
    selection = top_budget(cols[score_column(chosen.detector)], chosen.budget, sample_ids=cols.get(SAMPLE_ID))
    return treated(with_scores, selection.mask(len(with_scores)), chosen.weight)
