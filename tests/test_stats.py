"""Paired differences between arms, checked against naive loops and scipy, and the reading built on them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from hf_carto.measure.comparison import compare_arms, leakage_row, reading, summarize
from hf_carto.measure.statistics import paired_difference, verdict


def naive_two_level_bootstrap(diff: np.ndarray, num_resamples: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(num_resamples):
        values = []
        for s in rng.integers(0, diff.shape[0], diff.shape[0]):
            for u in rng.integers(0, diff.shape[1], diff.shape[1]):
                values.append(diff[s, u])
        means.append(np.mean(values))
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def test_seed_level_interval_is_the_paired_t_interval():
    arm = np.array([0.71, 0.69, 0.74, 0.70, 0.72])
    control = np.array([0.66, 0.67, 0.69, 0.68, 0.65])
    out = paired_difference(arm, control)
    expected = scipy_stats.ttest_rel(arm, control).confidence_interval(0.95)
    assert out["method"] == "paired t over seeds" and out["num_units"] == 1 and out["num_seeds"] == 5
    assert out["difference"] == pytest.approx(np.mean(arm - control))
    assert out["interval"] == pytest.approx([expected.low, expected.high])
    assert verdict(out) == "higher"


def test_unit_level_bootstrap_agrees_with_a_naive_loop():
    rng = np.random.default_rng(3)
    arm = rng.random((5, 12)) < 0.3
    control = rng.random((5, 12)) < 0.6
    out = paired_difference(arm, control, num_resamples=4000, seed=1)
    naive = naive_two_level_bootstrap(arm.astype(float) - control, 4000, seed=2)
    assert out["method"] == "bootstrap over seeds and units" and out["num_units"] == 12
    assert out["interval"] == pytest.approx(naive, abs=0.03)  # two independent bootstraps of one distribution
    assert out["interval"][0] <= out["difference"] <= out["interval"][1]


def test_identical_arms_are_never_called_different_and_one_seed_has_no_t_interval():
    same = np.zeros((5, 8))
    out = paired_difference(same, same)
    assert out["interval"] == [0.0, 0.0] and verdict(out) == "no measurable difference"
    single = paired_difference([0.7], [0.6])
    assert single["interval"] is None and verdict(single) == "no interval (one seed)"
    with pytest.raises(ValueError, match="different units"):
        paired_difference(np.zeros((5, 8)), np.zeros((5, 7)))
    with pytest.raises(ValueError, match="not finite"):
        paired_difference([0.1, float("nan")], [0.1, 0.2])


def fake_report(extracted, exposures, extractable, auc, planted_auc, ppl, subset_auc=None):
    membership = {"loss": {"auc": auc, "tpr@1%fpr": 0.1}}
    report = {
        "canaries": {
            "success_rate": float(np.mean(extracted)),
            "mean_exposure": float(np.mean(exposures)),
            "canaries": [{"extracted": e, "exposure": x} for e, x in zip(extracted, exposures, strict=True)],
        },
        "contamination": {
            "inserted": {"recall": float(np.mean(extractable)), "extractable": extractable},
            "control": {"recall": 0.0},
        },
        "membership": membership,
        "planted_membership": {"loss": {"auc": planted_auc}},
        "validation": {"perplexity": ppl},
    }
    if subset_auc is not None:
        report["membership_subsets"] = {"trained_by_every_arm": {"loss": {"auc": subset_auc, "tpr@1%fpr": 0.2}}}
    return report


def rows_for(seeds, arms):
    rows = []
    for seed in seeds:
        for name, (extracted, fraction, ppl) in arms.items():
            report = fake_report(extracted, [10.0 * e for e in extracted], [0, 1], 0.9, 0.8, ppl + seed)
            row = {"seed": seed, "arm": name, "family": name, **leakage_row(report)}
            row["fraction_pruned"] = fraction + 0.01 * seed
            row["perplexity_change"] = 0.0
            rows.append(row)
    return rows


def test_membership_columns_use_the_common_members_when_the_report_has_them():
    row = leakage_row(fake_report([1], [3.0], [1], auc=0.9, planted_auc=0.8, ppl=10, subset_auc=0.95))
    assert row["mia_auc"] == 0.95 and row["mia_auc_all_members"] == 0.9 and row["planted_mia_auc"] == 0.8


def test_summary_averages_the_pruned_fraction_over_seeds():
    rows = rows_for([0, 1], {"no_intervention": ([1, 0], 0.0, 10.0), "random_prune0.1": ([1, 0], 0.10, 10.0)})
    summary = summarize(rows)
    assert summary["random_prune0.1"]["fraction_pruned"]["values"] == pytest.approx([0.10, 0.11])
    assert summary["random_prune0.1"]["fraction_pruned"]["mean"] == pytest.approx(0.105)


def test_reading_claims_lower_only_when_the_interval_excludes_zero():
    canaries_on = [1] * 16
    arms = {
        "no_intervention": (canaries_on, 0.0, 10.0),
        "mapping_run": (canaries_on, 0.0, 10.0),
        "gendatacarto_prune0.1": ([0] * 16, 0.1, 10.0),
        "random_prune0.1": (canaries_on, 0.1, 10.0),
        "gendatacarto": (canaries_on, 0.02, 10.0),
        "random": (canaries_on, 0.02, 10.0),
    }
    comparisons = compare_arms(rows_for(range(5), arms))
    assert set(comparisons) == {
        "gendatacarto_prune0.1 vs random_prune0.1",
        "gendatacarto_prune0.1 vs no_intervention",
        "random_prune0.1 vs no_intervention",
        "gendatacarto vs random",
        "gendatacarto vs no_intervention",
        "random vs no_intervention",
        "mapping_run vs no_intervention",
    }
    pruned = comparisons["gendatacarto_prune0.1 vs random_prune0.1"]["extraction_success"]
    assert pruned["difference"] == -1.0 and pruned["verdict"] == "lower"
    assert pruned["num_seeds"] == 5 and pruned["num_units"] == 16
    same = comparisons["gendatacarto vs random"]["extraction_success"]
    assert same["verdict"] == "no measurable difference"
    text = reading(summarize(rows_for(range(5), arms)), comparisons)
    assert "gendatacarto_prune0.1 vs random_prune0.1: canary extraction -100.0%" in text
    assert "(lower than random; 5 seeds x 16 canaries;" in text and "noise floor" in text
    assert "gendatacarto vs random: canary extraction +0.0% [+0.0%, +0.0%] (no measurable difference" in text


def test_bootstrap_ends_are_stable_across_seeds_and_report_their_monte_carlo_error():
    rng = np.random.default_rng(21)
    arm, control = rng.normal(0.0, 1.0, (5, 32)), rng.normal(0.25, 1.0, (5, 32))
    runs = [paired_difference(arm, control, seed=s) for s in range(6)]
    lows = np.array([r["interval"][0] for r in runs])
    highs = np.array([r["interval"][1] for r in runs])
    err_low, err_high = runs[0]["interval_mc_error"]
    assert runs[0]["num_resamples"] == 200_000 and 0 < err_low < 0.02 and 0 < err_high < 0.02
    # the ends of independent runs agree within a few Monte Carlo errors (2 standard errors each)
    assert np.ptp(lows) < 3 * err_low and np.ptp(highs) < 3 * err_high
    # and the error is the spread a naive rerun shows: 2 SE of the end over many small runs
    small = [paired_difference(arm, control, num_resamples=4000, seed=100 + s)["interval"][1] for s in range(60)]
    predicted = paired_difference(arm, control, num_resamples=4000, seed=7)["interval_mc_error"][1]
    assert 0.5 < predicted / (2 * np.std(small, ddof=1)) < 2.0


def test_an_end_within_monte_carlo_error_of_zero_is_not_called_a_difference():
    near = {"interval": [-0.508, -0.002], "interval_mc_error": [0.004, 0.003]}
    assert verdict(near).startswith("no measurable difference") and "Monte Carlo" in verdict(near)
    clear = {"interval": [-0.508, -0.01], "interval_mc_error": [0.004, 0.003]}
    assert verdict(clear) == "lower"
    assert verdict({"interval": [0.02, 0.3], "interval_mc_error": [0.001, 0.001]}) == "higher"
    assert verdict({"interval": [-0.1, 0.2]}) == "no measurable difference"
    assert verdict({"interval": [0.001, 0.2]}) == "higher"  # a t interval has no Monte Carlo error


@pytest.mark.slow
def test_a_verdict_near_zero_does_not_depend_on_the_bootstrap_seed():
    rng = np.random.default_rng(3)
    diff = rng.normal(0.0, 1.0, (4, 8))  # few units: each draw is cheap
    zeros = np.zeros_like(diff)
    precise = paired_difference(diff, zeros, num_resamples=3_200_000, max_resamples=3_200_000)
    at_200k = paired_difference(diff, zeros, max_resamples=200_000)
    # Shift the differences so that the upper end sits 1.2 Monte Carlo errors (of 200,000 draws)
    # below zero: there a fixed 200,000 draws give different verdicts for different seeds.
    shifted = diff - (precise["interval"][1] + 1.2 * at_200k["interval_mc_error"][1])

    def kind(result):  # lower / higher / no measurable difference, without the note
        return verdict(result).split(" (")[0]

    runs = [paired_difference(shifted, zeros, seed=s) for s in range(4)]
    assert any(r["num_resamples"] > 200_000 for r in runs)  # near zero, more draws were taken
    assert {kind(r) for r in runs} == {"lower"}
    capped = [paired_difference(shifted, zeros, seed=s, max_resamples=200_000) for s in range(16)]
    assert {kind(r) for r in capped} == {"lower", "no measurable difference"}
