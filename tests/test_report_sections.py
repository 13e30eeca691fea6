"""evaluate_model's membership sections: subsets of the members against the same non-members, and
planted blocks against blocks of the same construction."""

from __future__ import annotations

import numpy as np
import pytest

from hf_carto.measure.membership import membership_metrics, membership_signals
from hf_carto.measure.model_report import evaluate_model, format_report


class _Tokenizer:
    """Only what evaluate_model asks of a tokenizer when it is given token ids."""

    pad_token_id = 0
    eos_token = "<eos>"


@pytest.fixture(scope="module")
def model():
    from hf_carto.core.models import tiny_gpt2

    return tiny_gpt2(50, n_positions=32, n_embd=32, n_layer=1, n_head=2, seed=0).eval()


def sequences(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 50, size=(n, 16)).tolist()


def test_member_subsets_are_scored_against_the_same_non_members(model):
    members, non_members = sequences(40, 0), sequences(30, 1)
    mask = np.arange(40) % 3 != 0
    report = evaluate_model(
        model, _Tokenizer(), members=members, non_members=non_members, member_subsets={"common": mask}, seed=4
    )
    subset = report["membership_subsets"]["common"]
    scores = membership_signals(model, [m for m, keep in zip(members, mask, strict=True) if keep])
    outside = membership_signals(model, non_members)
    for signal in ("loss", "min_k"):
        direct = membership_metrics(signal, scores[signal], outside[signal], seed=4)
        assert subset[signal]["auc"] == pytest.approx(direct.auc)
        assert subset[signal]["num_members"] == int(mask.sum()) and subset[signal]["num_non_members"] == 30
    assert report["membership"]["loss"]["num_members"] == 40
    with pytest.raises(ValueError, match="non-empty boolean mask over the 40 members"):
        evaluate_model(model, _Tokenizer(), members=members, non_members=non_members, member_subsets={"x": mask[:5]})


def test_planted_blocks_get_their_own_membership_test(model):
    planted, planted_out = sequences(12, 2), sequences(9, 3)
    report = evaluate_model(model, _Tokenizer(), planted_members=planted, planted_non_members=planted_out)
    section = report["planted_membership"]
    assert section["loss"]["num_members"] == 12 and section["loss"]["num_non_members"] == 9
    direct = membership_metrics(
        "loss", membership_signals(model, planted)["loss"], membership_signals(model, planted_out)["loss"]
    )
    assert section["loss"]["auc"] == pytest.approx(direct.auc)
    assert "planted blocks" in format_report(report)
    with pytest.raises(ValueError, match="needs both sets"):
        evaluate_model(model, _Tokenizer(), planted_members=planted)


# --- what a newcomer reads first: the experiment report's overview, its reading and Figure 1 ------


def _experiment_rows() -> list[dict]:
    """Rows of three seeds and six arms as the experiment evaluates them; nothing is extracted."""
    from hf_carto.measure.comparison import COMPARED, METRICS

    rng = np.random.default_rng(0)
    arms = {
        "no_intervention": 0.0,
        "gendatacarto": 0.02,
        "random": 0.02,
        "memorization_prune0.1": 0.1,
        "random_prune0.1": 0.1,
        "mapping_run": 0.0,
    }
    rows = []
    for seed in range(3):
        for arm, pruned in arms.items():
            row = {key: float(rng.uniform(0.4, 0.6)) for key, _, _ in METRICS}
            row.update(arm=arm, seed=seed, fraction_pruned=pruned, extraction_success=0.0, contamination_recall=0.0)
            row["perplexity"] = float(100 + rng.normal())
            row["units"] = {key: rng.uniform(0, 3, size=8).tolist() for key, _, unit, _ in COMPARED if unit}
            row["units"]["extraction_success"] = [0.0] * 8
            row["units"]["contamination_recall"] = [0.0] * 8
            rows.append(row)
    return rows


def _experiment_report(num_blocks: int, planted_blocks: int, any_planted: int) -> dict:
    from hf_carto.measure.comparison import compare_arms, reading, summarize

    rows = _experiment_rows()
    summary = summarize([r for r in rows if r["arm"] != "mapping_run"])
    summary["mapping_run"] = summarize([r for r in rows if r["arm"] == "mapping_run"])["mapping_run"]
    comparisons = compare_arms(rows)
    quadrants = ["stable_easy", "ambiguous_hard", "hotspot_memorized", "noisy_outlier"]
    cartography = {
        "num_snapshots": 6,
        "burn_in_snapshots": 2,
        "eps": 1.0,
        "tau_d": 2.0,
        "tau_m": 0.2,
        "num_with_forget_events": 50,
        "num_samples": num_blocks,
        "quadrant_counts": dict.fromkeys(quadrants, num_blocks // 4),
        "budget_cuts": [],
        "planted_vs_quadrant": {"ordinary": dict.fromkeys(quadrants, 1), "canary": dict.fromkeys(quadrants, 1)},
    }
    settings = dict(
        block_size=32, num_train_epochs=3, snapshots_per_epoch=2, burn_in=1, eps="quantile:0.05", seeds=[0, 1, 2],
        num_canaries=8, canary_repetitions=[1, 4], secret_length=4, contamination_repetitions=4, contamination_k=8,
    )  # fmt: skip
    return {
        "settings": settings,
        "num_blocks": num_blocks,
        "data_counts": {
            "contaminating": 8,
            "control": 8,
            "heldout_documents_long_enough": 90,
            "heldout_documents": 100,
            "planted_blocks": planted_blocks,
            "planted_share": any_planted / num_blocks,
        },
        "rows": rows,
        "summary": summary,
        "comparisons": comparisons,
        "conclusion": reading(summary, comparisons),
        "extraction_by_copies": {},
        "extraction_floor": {"num_extracted": 0, "num_decoded": 48},
        "exposure_methods": "exact for all 48 canary evaluations (the whole secret space ranked)",
        "cartography": {str(seed): cartography for seed in range(3)},
        "invocations": 1,
        "stage_table": "| stage | time | share |",
        "peak_rss_mib": 900.0,
    }


def test_the_overview_gives_each_planted_count_its_own_share():
    from hf_carto.experiment.report_markdown import format_markdown

    text = " ".join(format_markdown(_experiment_report(604, planted_blocks=20, any_planted=437)).split())
    assert "20 of the 604 training blocks (3.3%) hold canary or contaminating tokens" in text
    assert "437 (72.4%) hold planted material of any kind (canaries, contaminating sequences, duplicates" in text
    assert "20 (72.4%" not in text
    # With nothing planted but canaries and contaminating sequences, the two counts are one.
    text = " ".join(format_markdown(_experiment_report(604, planted_blocks=20, any_planted=20)).split())
    assert "20 of the 604 training blocks (3.3%) hold canary or contaminating tokens" in text
    assert "of any kind" not in text


def test_the_reading_is_short_bullets_that_name_every_comparison():
    import re

    from hf_carto.experiment.report_markdown import format_markdown

    report = _experiment_report(604, planted_blocks=20, any_planted=20)
    text = format_markdown(report)
    section = text.split("**Reading:**", 1)[1].split("\n## ", 1)[0].strip("\n")
    lines = [line for line in section.splitlines() if line.strip()]
    assert len(lines) > 5
    assert all(re.match(r"( {2})*- \S", line) for line in lines), lines
    sentences = [s for line in lines for s in re.split(r"(?<=[.;:])\s+", line.lstrip(" -")) if s]
    longest = max(sentences, key=lambda s: len(s.split()))
    assert len(longest.split()) <= 30, longest
    assert any(line.startswith("- The no-intervention arm extracts no canary") for line in lines)
    for name in ("gendatacarto vs random", "memorization_prune0.1 vs random_prune0.1"):
        assert any(name in line for line in lines), name
    for label in ("canary extraction", "exposure (bits)", "validation perplexity (relative)"):
        assert sum(label in line for line in lines) == 2, label  # one line per curated arm


def _captured_figures(monkeypatch) -> dict:
    """plot_tradeoffs's figures, as drawn: title, y range and every text on the axes, by file name."""
    from pathlib import Path

    import hf_carto.core.plots as plots

    drawn = {}
    save = plots.save_figure

    def capture(fig, path):
        [ax] = fig.axes
        texts = [t.get_text() for t in ax.texts] + [t.get_text() for t in fig.texts]
        drawn[Path(path).name] = {"title": ax.get_title() or fig.get_suptitle(), "ylim": ax.get_ylim(), "texts": texts}
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", capture)
    return drawn


def _tradeoff_runs(extracted: float) -> list[dict]:
    runs = [
        {
            "arm": "no_intervention",
            "fraction_pruned": 0.0,
            "seed": s,
            "extraction_success": extracted,
            "perplexity": 10.0,
        }
        for s in (0, 1)
    ]
    runs += [
        {"arm": arm, "fraction_pruned": f, "seed": s, "extraction_success": extracted / 2, "perplexity": 10.5}
        for arm in ("gendatacarto", "random")
        for f in (0.05, 0.1)
        for s in (0, 1)
    ]
    return runs


def test_figure_1_says_when_no_arm_extracts_anything(tmp_path, monkeypatch):
    from hf_carto.measure.model_report import plot_tradeoffs

    drawn = _captured_figures(monkeypatch)
    plot_tradeoffs(_tradeoff_runs(0.0), tmp_path)
    figure1 = drawn["figure1_extraction_vs_pruned.png"]
    assert "extraction" in figure1["title"].lower()
    assert any("nothing extracted in any arm" in t for t in figure1["texts"]), figure1["texts"]
    low, high = figure1["ylim"]
    assert low <= 0 < high and high >= 0.5  # a rate axis, not a flat pile of lines on +-0.04
    assert "perplexity" in drawn["figure2_perplexity_vs_pruned.png"]["title"].lower()

    drawn.clear()
    plot_tradeoffs(_tradeoff_runs(0.5), tmp_path)
    assert not any("nothing extracted" in t for t in drawn["figure1_extraction_vs_pruned.png"]["texts"])
