"""The budget frontier and the recommended policy, from reports built by the experiment's own code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hf_carto.curation.policy import RECOMMENDED, CurationPolicy
from hf_carto.experiment.combine import collect
from hf_carto.experiment.report_markdown import _frontier as frontier_section
from hf_carto.experiment.results import build_report
from hf_carto.measure.frontier import frontier_panels, frontier_points, parse_arm, recommend_policy

SEEDS = range(5)
NUM_CANARIES, NUM_SEQUENCES = 32, 8
# arm -> (family, pruned fraction, extraction probability, perplexity change)
ARMS = {
    "no_intervention": ("no_intervention", 0.0, 0.6, 0.0),
    "mapping_run": ("mapping run (T epochs, no intervention)", 0.0, 0.6, 0.0),
    "gendatacarto": ("gendatacarto (quadrant rules)", 0.08, 0.55, 0.02),
    "random": ("random (quadrant rules)", 0.08, 0.6, 0.021),
    "combined_prune0.01": ("combined (top pruned)", 0.01, 0.3, 0.004),
    "combined_prune0.05": ("combined (top pruned)", 0.05, 0.05, 0.03),  # cuts more, costs 3%
    "loss_std_prune0.01": ("loss_std (top pruned)", 0.01, 0.45, 0.002),
    "loss_std_prune0.05": ("loss_std (top pruned)", 0.05, 0.2, 0.02),
    "random_prune0.01": ("random (pruned)", 0.01, 0.6, 0.001),
    "random_prune0.05": ("random (pruned)", 0.05, 0.6, 0.006),
    "combined_downweight0.01": ("combined (top down-weighted)", 0.009, 0.4, 0.003),
    "random_downweight0.01": ("random (down-weighted)", 0.009, 0.6, 0.001),
}


def row(seed: int, arm: str, rng) -> dict:
    family, fraction, p_extract, cost = ARMS[arm]
    extracted = (rng.random(NUM_CANARIES) < p_extract).astype(float)
    exposure = rng.uniform(0, 13.3, NUM_CANARIES) * (0.3 + p_extract)
    recalled = (rng.random(NUM_SEQUENCES) < p_extract / 2).astype(float)
    perplexity = 200.0 * (1 + cost + rng.normal(0, 0.001))
    return {
        "seed": seed,
        "arm": arm,
        "family": family,
        "extraction_success": extracted.mean(),
        "mean_exposure": exposure.mean(),
        "contamination_recall": recalled.mean(),
        "control_recall": 0.0,
        "mia_auc": 0.6,
        "mia_tpr_at_1pct_fpr": 0.02,
        "mia_auc_all_members": 0.6,
        "planted_mia_auc": 0.9 - 0.3 * (0.6 - p_extract),
        "perplexity": perplexity,
        "units": {
            "extraction_success": extracted.tolist(),
            "mean_exposure": exposure.tolist(),
            "contamination_recall": recalled.tolist(),
        },
        "fraction_pruned": fraction,
        "perplexity_change": 0.0,
        "steps": [10, 30],
        "extraction_by_copies": {},
        "control_extraction": {},
        "exposure_methods": ["exact"] * NUM_CANARIES,
    }


def seed_rows(seed: int, arms=tuple(ARMS)) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = [row(seed, arm, rng) for arm in arms]
    base = next(r["perplexity"] for r in rows if r["arm"] == "no_intervention")
    for r in rows:
        r["perplexity_change"] = r["perplexity"] / base - 1.0
    return rows


# A real run's settings (the report's text names them), with the down-weighting weight of the frontier arms.
_SEED_0 = json.loads((Path(__file__).parents[1] / "results/gpt2_paper_cpu/seed_0/report.json").read_text())
SETTINGS = {
    **_SEED_0["settings"],
    "seeds": list(SEEDS),
    "alpha": 0.5,
    "downweight_alpha": 0.1,
}
COUNTS = _SEED_0["data_counts"]
CARTOGRAPHY = next(iter(_SEED_0["cartography"].values()))
FEW = ("no_intervention", "mapping_run", "combined_prune0.01", "random_prune0.01")


@pytest.fixture(scope="module")
def report():
    rows = [r for seed in SEEDS for r in seed_rows(seed)]
    return build_report(rows, SETTINGS, 1000, COUNTS, {})


def test_arm_names_parse_into_policy_kind_and_budget():
    assert parse_arm("reference_ratio_prune0.05") == {"policy": "reference_ratio", "kind": "prune", "fraction": 0.05}
    assert parse_arm("dedup_prune0.00312") == {"policy": "dedup", "kind": "prune", "fraction": 0.00312}
    assert parse_arm("gendatacarto_prune0.1")["policy"] == "memorization_sweep"
    assert parse_arm("gendatacarto")["kind"] == "quadrants"
    assert parse_arm("no_intervention") is None and parse_arm("mapping_run") is None


def test_points_carry_the_paired_differences_of_the_report(report):
    points = {p["arm"]: p for p in frontier_points(report)}
    assert set(points) == set(ARMS) - {"mapping_run"}
    point = points["combined_prune0.01"]
    expected = report["comparisons"]["combined_prune0.01 vs no_intervention"]["extraction_success"]
    assert point["vs_none"]["extraction_success"]["interval"] == expected["interval"]
    control = report["comparisons"]["combined_prune0.01 vs random_prune0.01"]["extraction_success"]
    assert point["vs_random"]["extraction_success"]["difference"] == control["difference"]
    assert point["vs_none"]["perplexity"]["difference"] == pytest.approx(
        np.mean([r["perplexity_change"] for r in report["rows"] if r["arm"] == "combined_prune0.01"])
    )
    assert points["no_intervention"]["vs_none"] == {}


def test_each_curated_family_gets_a_panel_beside_random_at_its_own_budgets(report):
    panels = {panel["family"]: panel for panel in frontier_panels(frontier_points(report))}
    curated = {family for family, *_ in ARMS.values() if not family.startswith(("random", "no_", "mapping"))}
    assert set(panels) == curated  # random and no intervention are drawn inside panels, not as panels
    for family, panel in panels.items():
        arms = [p["arm"] for p in panel["points"]]
        assert arms == sorted((a for a, spec in ARMS.items() if spec[0] == family), key=lambda a: ARMS[a][1])
        # naive: the random arm of each point's budget, by name
        expected = ["random" if a == "gendatacarto" else "random_" + a.split("_")[-1] for a in arms]
        assert [p["arm"] for p in panel["controls"]] == expected
    only_random = [p for p in frontier_points(report) if p["policy"] in ("random", "none")]
    assert {panel["family"] for panel in frontier_panels(only_random)} == {
        "random (quadrant rules)",
        "random (pruned)",
        "random (down-weighted)",
    }


def test_the_recommendation_is_the_largest_measured_reduction_within_the_cost(report):
    rec = report["recommendation"]
    assert rec == recommend_policy(report)
    # combined at 5% extracts least but costs 3%; of the arms within 1%, combined at 1% cuts most
    costs = {c["arm"]: c for c in rec["candidates"]}
    assert not costs["combined_prune0.05"]["within_cost"]
    within = [c for c in rec["candidates"] if c["within_cost"] and c["measured"]]
    assert max(within, key=lambda c: c["reduction"])["arm"] == "combined_prune0.01"
    assert rec["policy"] == {"detector": "combined", "kind": "prune", "budget": 0.01, "weight": 0.0}
    expected = 1 - rec["point"]["extraction_success"] / rec["no_intervention_extraction"]
    assert rec["relative_reduction"] == pytest.approx(expected)
    assert rec["meets_paper_bar"] == (expected >= 0.4)
    assert all(not c["arm"].startswith("random") for c in rec["candidates"])
    # a tighter cost leaves only the down-weighting arm and loss_std at 1%
    tight = recommend_policy(report, max_perplexity_cost=0.0035)
    assert tight["policy"]["detector"] == "combined" and tight["policy"]["kind"] == "downweight"
    assert tight["policy"]["weight"] == 0.1


def test_a_verdict_that_names_its_control_counts_as_lower(report):
    import copy

    named = copy.deepcopy(report)
    for key, metrics in named["comparisons"].items():
        control = key.split(" vs ")[1]
        for result in metrics.values():
            result["verdict"] = result["verdict"].replace("lower", f"lower than {control}", 1)
    assert recommend_policy(named)["policy"] == report["recommendation"]["policy"] is not None


def _like_no_intervention(rows: list[dict], metric: str) -> None:
    """Every arm of a seed gets the no-intervention arm's values of ``metric``."""
    for r in rows:
        base = next(x for x in rows if x["seed"] == r["seed"] and x["arm"] == "no_intervention")
        r[metric], r["units"][metric] = base[metric], list(base["units"][metric])


def test_where_extraction_shows_no_reduction_the_largest_measured_exposure_reduction_is_recommended():
    rows = [r for seed in SEEDS for r in seed_rows(seed, FEW)]
    _like_no_intervention(rows, "extraction_success")
    same = build_report(rows, SETTINGS, 1000, COUNTS, {})["recommendation"]
    assert same["basis"] == "exposure" and "lowers extraction measurably" in same["reason"]
    # combined at 1% lowers exposure in these rows (its secrets rank lower); random is never chosen
    exposure = {c["arm"]: c for c in same["exposure_candidates"]}
    assert exposure["combined_prune0.01"]["measured"] and "random_prune0.01" not in exposure
    assert same["policy"] == {"detector": "combined", "kind": "prune", "budget": 0.01, "weight": 0.0}
    assert same["point"]["arm"] == "combined_prune0.01"
    assert same["relative_reduction"] == pytest.approx(0.0) and not same["meets_paper_bar"]
    # nothing extracted at all: exposure still decides, and the reason says why
    for r in rows:
        r["extraction_success"] = 0.0
        r["units"]["extraction_success"] = [0.0] * NUM_CANARIES
    silent = build_report(rows, SETTINGS, 1000, COUNTS, {})["recommendation"]
    assert silent["basis"] == "exposure" and "extracts nothing" in silent["reason"]
    assert silent["policy"] == same["policy"] and math.isnan(silent["relative_reduction"])
    text = "\n".join(frontier_section(build_report(rows, SETTINGS, 1000, COUNTS, {})))
    assert "Chosen by exposure" in text and "`combined`, prune at 0.01" in text


def test_no_recommendation_when_neither_extraction_nor_exposure_is_measurably_lower():
    rows = [r for seed in SEEDS for r in seed_rows(seed, FEW)]
    _like_no_intervention(rows, "extraction_success")
    _like_no_intervention(rows, "mean_exposure")
    nothing = build_report(rows, SETTINGS, 1000, COUNTS, {})["recommendation"]
    assert nothing["policy"] is None and nothing["basis"] is None
    assert "measurably" in nothing["reason"] and nothing["reason"].endswith("nor exposure")


def test_combine_builds_the_frontier_figures_and_table_from_per_seed_files(tmp_path, report):
    for seed in SEEDS:  # what a seed's run leaves: its settings, rows and data (combine recomputes the rest)
        seed_report = {
            "settings": dict(SETTINGS, seeds=[seed], output_dir=f"run{seed}"),
            "rows": seed_rows(seed),
            "num_blocks": 1000,
            "data_counts": COUNTS,
            "cartography": {str(seed): CARTOGRAPHY},
        }
        (tmp_path / f"run{seed}").mkdir()
        (tmp_path / f"run{seed}" / "report.json").write_text(json.dumps(seed_report))
    out = tmp_path / "combined"
    combined = collect([tmp_path / f"run{seed}" for seed in SEEDS], out)
    for name in ("frontier_extraction.png", "frontier_exposure.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert combined["recommendation"]["policy"] == report["recommendation"]["policy"]
    assert combined["recommendation"]["relative_reduction"] == report["recommendation"]["relative_reduction"]
    markdown = (out / "report.md").read_text()
    assert "## Budget frontier" in markdown and "| combined_prune0.05 |" in markdown
    assert "**Recommended policy**" in markdown and "`combined`, prune at 0.01" in markdown


def test_the_committed_leaky_frontier_is_the_presets_and_its_recommendation_recomputes():
    """results/gpt2_leaky_cpu holds seeds of the cpu-leaky preset as it is now (so the seeds still to
    run combine with them), its recommendation is what recommend_policy gives on the committed
    per-seed reports, and that recommendation is the toolkit's default policy."""
    from hf_carto.experiment import parse_arguments
    from hf_carto.experiment.combine import combine, load_seed_report

    root = Path(__file__).parents[1] / "results" / "gpt2_leaky_cpu"
    committed = json.loads((root / "report.json").read_text())
    _, data_args, carto, _ = parse_arguments(["--preset", "cpu-leaky"])
    settings = committed["settings"]
    assert settings["burn_in"] == carto.burn_in and settings["frontier_detectors"] == carto.frontier_detectors
    assert settings["canary_repetitions"] == data_args.canary_repetitions
    assert settings["max_train_samples"] == data_args.max_train_samples
    seeds = sorted(root.glob("seed_*/report.json"))
    assert seeds and committed["settings"]["seeds"] == [int(p.parent.name.split("_")[1]) for p in seeds]
    again = recommend_policy(combine([load_seed_report(p) for p in seeds]))
    policy = committed["recommendation"]["policy"]
    assert again["policy"] == policy is not None and again["basis"] == committed["recommendation"]["basis"]
    assert RECOMMENDED == CurationPolicy(policy["detector"], policy["budget"], policy["weight"])
    assert again["no_intervention_extraction"] == committed["recommendation"]["no_intervention_extraction"]
