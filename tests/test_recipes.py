"""The recipes run end to end on small settings and write consistent reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from hf_carto.experiment import RunFolderError, SettingsError, main, parse_arguments
from hf_carto.experiment.results import tradeoff_points
from hf_carto.experiment.run_folder import StageTimer, run_settings
from hf_carto.experiment.stage_training import PRUNED_FAMILY, QUADRANT_FAMILIES

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_lstm_canary_recipe_small(tmp_path):
    import numpy as np
    from transformers import HfArgumentParser

    from hf_carto.data.generated import TRUTH_NAMES

    recipe = load_recipe("lstm_canary")
    argv = [
        "--output_dir",
        str(tmp_path),
        "--seeds",
        "0",
        "1",
        "--num_documents",
        "120",
        "--num_duplicate_groups",
        "2",
        "--num_noise_documents",
        "2",
        "--num_canaries",
        "3",
        "--canary_repetitions",
        "2",
        "4",
        "--num_control_canaries",
        "3",
        "--epochs",
        "4",
        "--burn_in",
        "2",
        "--hidden_dim",
        "32",
        "--vocab_size",
        "300",
        "--snapshots_per_epoch",
        "2",
    ]
    # Every canary has its own prompt template, none shared with a control, and sits in the
    # corpus rows its sample_ids name.
    (args,) = HfArgumentParser(recipe.LstmCanaryArguments).parse_args_into_dataclasses(args=argv)
    corpus, _, canaries, controls = recipe.build_corpus(args, 0)
    template = lambda text: text.rsplit(" ", 3)[0]  # noqa: E731  "the pin of user" of "the pin of user x-1 is 123"
    assert len({template(c.text) for c in canaries}) == 3
    assert not {template(c.text) for c in canaries} & {template(c.text) for c in controls}
    truth, texts = np.asarray(corpus["truth"][:]), corpus["text"][:]
    assert (truth == TRUTH_NAMES.index("canary")).sum() == 2 + 4 + 2
    for canary in canaries:
        assert len(canary.sample_ids) == canary.repetitions
        assert all(texts[i] == canary.text for i in canary.sample_ids)
    assert not any(c.text in texts for c in controls)

    report = recipe.main(argv)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["summary"] == report["summary"]
    assert set(report["summary"]) == {"no_intervention", "gendatacarto", "random"}
    for result in report["seeds"]:
        arms = result["arms"]
        assert arms["no_intervention"]["num_pruned"] == 0
        assert arms["gendatacarto"]["num_pruned"] == arms["random"]["num_pruned"] == result["budget_cut"]["num_pruned"]
        assert result["budget_cut"]["num_pruned"] == round(0.05 * result["num_samples"])
        assert result["planted"] == {"duplicate": result["planted"]["duplicate"], "canary": 8, "noise": 2}
        assert result["planted_share"] == pytest.approx(sum(result["planted"].values()) / result["num_samples"])
        for arm in [*arms.values(), result["mapping_run"]]:
            assert 0.0 <= arm["extraction"]["success_rate"] <= 1.0 and arm["perplexity"] > 1.0
            assert arm["extraction"]["num_canaries"] == 3
            assert set(arm["extraction"]["success_rate_by_copies"]) == {"2", "4"}
            assert arm["control_extraction"]["num_canaries"] == 3
            assert [r["canary_id"] for r in arm["control_extraction"]["canaries"]] == [3, 4, 5]
        assert 0.0 <= result["planted_recovery"]["canary"]["pruned"]["recall"] <= 1.0
    assert report["summary"]["no_intervention"]["perplexity_change_mean"] == 0.0
    assert 0.0 <= report["summary"]["random"]["control_extraction_mean"] <= 1.0
    assert set(report["paired_differences"]) == {
        "gendatacarto vs random",
        "gendatacarto vs no_intervention",
        "random vs no_intervention",
    }
    for name, comparison in report["paired_differences"].items():
        control = name.split(" vs ")[1]
        extraction, ppl = comparison["extraction"], comparison["perplexity_relative"]
        assert (extraction["num_seeds"], extraction["num_units"]) == (2, 3)
        assert (ppl["num_seeds"], ppl["num_units"]) == (2, 1)
        low, high = extraction["interval"]
        assert low <= extraction["difference"] <= high
        words = {"no measurable difference", f"lower than {control}", f"higher than {control}"}
        assert extraction["verdict"] in words and ppl["verdict"] in words
    text = (tmp_path / "report.md").read_text()
    assert "| gendatacarto |" in text and "control extraction" in text
    assert "## Paired differences" in text and "| gendatacarto vs random |" in text
    manifest = json.loads((tmp_path / "seed0" / "mapping" / "carto" / "manifest.json").read_text())
    assert len(manifest["snapshots"]) == 8  # 4 epochs x 2 snapshots


@pytest.mark.slow
def test_lstm_canary_recipe_runs_its_accelerate_loop_on_two_processes(tmp_path):
    import shutil

    from launching import accelerate_launch

    from hf_carto import LossStore, load_loss_matrix

    args = ["--output_dir", str(tmp_path), "--num_documents", "80", "--num_heldout", "40", "--num_canaries", "2"]
    args += [
        "--canary_repetitions",
        "3",
        "--num_control_canaries",
        "2",
        "--num_duplicate_groups",
        "2",
        "--epochs",
        "3",
        "--burn_in",
        "1",
        "--hidden_dim",
        "16",
        "--vocab_size",
        "300",
    ]
    accelerate_launch(RECIPES / "lstm_canary.py", *args, cleanup=lambda: shutil.rmtree(tmp_path / "seed0", True))
    report = json.loads((tmp_path / "report.json").read_text())
    run = tmp_path / "seed0" / "mapping"
    assert LossStore(run).settings().world_size == 2
    matrix = load_loss_matrix(run)  # both ranks' shards: every sample once, no padding duplicate
    assert matrix.losses.shape == (report["seeds"][0]["num_samples"], 3)
    arms = report["seeds"][0]["arms"]
    assert arms["gendatacarto"]["num_pruned"] == arms["random"]["num_pruned"] > 0
    assert arms["random"]["extraction"]["num_canaries"] == arms["random"]["control_extraction"]["num_canaries"] == 2
    assert report["paired_differences"]["gendatacarto vs random"]["extraction"]["num_units"] == 2


@pytest.mark.slow
def test_lstm_canary_recipe_detector_arms_prune_as_much_and_report_detection(tmp_path):
    import numpy as np
    from transformers import HfArgumentParser

    from hf_carto import detector_scores, load_loss_matrix
    from hf_carto.core.columns import PLANTED_NAMES

    recipe = load_recipe("lstm_canary")
    argv = ["--output_dir", str(tmp_path), "--num_documents", "120", "--num_duplicate_groups", "2"]
    argv += ["--num_noise_documents", "2", "--num_canaries", "3", "--canary_repetitions", "2", "4"]
    argv += ["--num_control_canaries", "2", "--epochs", "3", "--burn_in", "1", "--hidden_dim", "16"]
    argv += ["--vocab_size", "300", "--detectors", "final_loss", "loss_std"]
    report = recipe.main(argv)
    (result,) = report["seeds"]
    arms = result["arms"]
    assert set(arms) == {"no_intervention", "gendatacarto", "random", "final_loss", "loss_std"}
    pruned = round(0.05 * result["num_samples"])
    assert [arms[a]["num_pruned"] for a in ("gendatacarto", "random", "final_loss", "loss_std")] == [pruned] * 4
    assert {"final_loss vs random", "loss_std vs no_intervention"} <= set(report["paired_differences"])

    # AP recomputed from the recorded losses and the rebuilt corpus's canary rows.
    (args,) = HfArgumentParser(recipe.LstmCanaryArguments).parse_args_into_dataclasses(args=argv)
    corpus, _, _, _ = recipe.build_corpus(args, 0)
    canary = np.asarray(corpus["truth"][:]) == PLANTED_NAMES.index("canary")
    losses = load_loss_matrix(tmp_path / "seed0" / "mapping").losses
    entry = result["detection"]["planted"]
    assert entry["num_positive"] == canary.sum() == 2 + 4 + 2
    for name in ("final_loss", "loss_std"):
        scores = detector_scores(name, losses)
        assert entry["detectors"][name]["average_precision"] == pytest.approx(
            naive_average_precision(scores, canary, np.arange(len(canary)))
        )
    assert "## Which documents the detectors find" in (tmp_path / "report.md").read_text()


def test_lstm_canary_recipe_frontier_budgets_have_their_own_random_control_and_a_figure(tmp_path):
    recipe = load_recipe("lstm_canary")
    argv = ["--output_dir", str(tmp_path), "--num_documents", "120", "--num_duplicate_groups", "2"]
    argv += ["--num_noise_documents", "2", "--num_canaries", "3", "--canary_repetitions", "2", "4"]
    argv += ["--num_control_canaries", "2", "--epochs", "3", "--burn_in", "1", "--hidden_dim", "16"]
    argv += ["--vocab_size", "300", "--detectors", "loss_std", "combined", "--frontier_fractions", "0.02", "0.1"]
    argv += ["--frontier_detectors", "combined"]
    report = recipe.main(argv)
    (result,) = report["seeds"]
    n = result["num_samples"]
    frontier = {f"{d}_prune{f:g}" for d in ("combined", "random") for f in (0.02, 0.1)}
    assert set(result["arms"]) == {"no_intervention", "gendatacarto", "random", "loss_std", "combined"} | frontier
    for name in frontier:
        assert result["arms"][name]["num_pruned"] == int(0.02 * n + 0.5 if "0.02" in name else 0.1 * n + 0.5)
    assert {"combined_prune0.1 vs random_prune0.1", "combined_prune0.02 vs no_intervention"} <= set(
        report["paired_differences"]
    )
    assert (tmp_path / "frontier_extraction.png").read_bytes().startswith(b"\x89PNG")
    assert "## Budget frontier" in (tmp_path / "report.md").read_text()
    assert report["recommendation"]["max_perplexity_cost"] == 0.01
    with pytest.raises(SettingsError, match="frontier_detectors"):
        recipe.main([*argv[:-1], "final_loss"])


def test_lstm_canary_recipe_rejects_a_bad_burn_in(tmp_path):
    recipe = load_recipe("lstm_canary")
    with pytest.raises(SettingsError, match="burn_in must be in"):
        recipe.main(["--output_dir", str(tmp_path), "--epochs", "3", "--burn_in", "3"])


# ----------------------------------------------------------------------------------------------
# recipes/gpt2_wikitext.py


def tiny_args(out: Path, *extra: str) -> list[str]:
    # The paper's policy: its arm is one of the three every run trains, so these runs train only the
    # arms they are about (test_hub_roundtrip runs the default, recommended policy end to end).
    return ["--preset", "cpu-tiny", "--output_dir", str(out), "--policy", "paper", *extra]


@pytest.fixture
def fewer_bootstrap_resamples(monkeypatch):
    """In-process runs whose evaluation draws 100 bootstrap resamples for the membership metrics'
    intervals instead of 1,000: most of the evaluation's time at cpu-tiny scale, and nothing the
    tests that use this read (the point estimates and everything else are unchanged)."""
    import dataclasses

    from hf_carto.experiment import runner

    real = runner.eval_settings

    def eval_settings(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), num_resamples=100)

    monkeypatch.setattr(runner, "eval_settings", eval_settings)


# The same for a recipe under `accelerate launch`: ``python FEWER_RESAMPLES RECIPE ARGS...`` runs
# ``RECIPE ARGS...`` as its own script, with 100 bootstrap resamples in its evaluation.
FEWER_RESAMPLES = """
import dataclasses, runpy, sys
from hf_carto.experiment import runner

real = runner.eval_settings
runner.eval_settings = lambda *args, **kwargs: dataclasses.replace(real(*args, **kwargs), num_resamples=100)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def fewer_resamples_script(folder: Path) -> Path:
    path = folder / "fewer_resamples.py"
    path.write_text(FEWER_RESAMPLES)
    return path


@pytest.mark.slow
def test_gpt2_recipe_on_two_processes_writes_a_consistent_report_and_resumes(tmp_path):
    import math
    import shutil

    import numpy as np
    from datasets import load_dataset, load_from_disk
    from launching import accelerate_launch
    from transformers import AutoTokenizer

    from hf_carto import LossStore
    from hf_carto.data.canaries import load_registry, verify_registry

    out = tmp_path / "run"
    # The recipe itself, with fewer bootstrap resamples (nothing here reads the intervals).
    recipe = [fewer_resamples_script(tmp_path), RECIPES / "gpt2_wikitext.py"]
    accelerate_launch(
        *recipe,
        *tiny_args(out, "--seeds", "0", "1"),
        cleanup=lambda: shutil.rmtree(out, ignore_errors=True),
    )
    report = json.loads((out / "report.json").read_text())
    arms = {"no_intervention", "gendatacarto", "random", "gendatacarto_prune0.1", "random_prune0.1"}
    assert set(report["summary"]) == arms | {"mapping_run"}
    assert LossStore(out / "seed0" / "mapping").settings().world_size == 2
    n = report["num_blocks"]
    for seed in (0, 1):
        rows = {r["arm"]: r for r in report["rows"] if r["seed"] == seed}
        assert set(rows) == arms | {"mapping_run"}
        for row in rows.values():
            for key in (
                "extraction_success",
                "contamination_recall",
                "control_recall",
                "mia_auc",
                "mia_tpr_at_1pct_fpr",
            ):
                assert 0.0 <= row[key] <= 1.0, (key, row)
            assert math.isfinite(row["mean_exposure"]) and row["perplexity"] > 1.0
            evaluated = json.loads(
                (
                    out / f"seed{seed}" / ("mapping" if row["arm"] == "mapping_run" else f"arms/{row['arm']}")
                    / "eval" / "report.json"
                ).read_text()
            )  # fmt: skip
            canaries = evaluated["canaries"]
            assert row["extraction_success"] == canaries["num_extracted"] / canaries["num_canaries"]
        base = rows["no_intervention"]
        assert base["fraction_pruned"] == 0.0 and base["perplexity_change"] == 0.0
        # Every arm continues from the burn-in checkpoint and ends where the mapping run ended.
        mapping = json.loads((out / f"seed{seed}" / "mapping" / "done.json").read_text())
        assert mapping["burn_in_step"] == 1 * mapping["steps_per_epoch"]
        assert base["steps"] == [mapping["burn_in_step"], mapping["global_step"]]
        assert rows["mapping_run"]["steps"] == [0, mapping["global_step"]]
        # The random controls have exactly the budget of their GenDataCarto arm.
        assert rows["gendatacarto"]["fraction_pruned"] == pytest.approx(rows["random"]["fraction_pruned"])
        if rows["gendatacarto"]["fraction_pruned"] == 0:  # an empty hotspot quadrant: no intervention at all
            for arm in ("gendatacarto", "random"):
                assert {k: v for k, v in rows[arm].items() if k not in ("arm", "family")} == {
                    k: v for k, v in base.items() if k not in ("arm", "family")
                }
        pruned = round(0.1 * n) / n
        assert rows["gendatacarto_prune0.1"]["fraction_pruned"] == pytest.approx(pruned)
        assert rows["random_prune0.1"]["fraction_pruned"] == pytest.approx(pruned)
        cartography = report["cartography"][str(seed)]
        assert cartography["num_snapshots"] == 3 * 2 and cartography["burn_in_snapshots"] == 2
    for arm, entry in report["summary"].items():
        values = [r["perplexity"] for r in report["rows"] if r["arm"] == arm]
        assert entry["perplexity"]["mean"] == pytest.approx(np.mean(values))
        assert entry["perplexity"]["std"] == pytest.approx(np.std(values))
    assert " ± " in (out / "report.md").read_text()
    for figure in ("data_map.png", "figure1_extraction_vs_pruned.png", "figure2_perplexity_vs_pruned.png"):
        assert (out / figure).stat().st_size > 1000
    assert "gendatacarto_prune0.1" in (out / "model_card.md").read_text()

    # The registry's blocks are the ones a token search of the packed data finds.
    registry = load_registry(out / "canaries.json")
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    verify_registry(registry, load_from_disk(str(out / "data" / "train_blocks")), tokenizer)
    assert any(c.sample_ids for c in registry)

    # The curated dataset: every block labelled; the Hub layout withholds the canary blocks.
    curated = load_from_disk(str(out / "curated"))
    assert len(curated) == n and {"carto_quadrant", "carto_loss_weight", "carto_keep"} <= set(curated.column_names)
    published = load_dataset(str(out / "hub"), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(published) == n - sum(curated["is_canary"][:])
    assert not {"is_canary", "truth", "carto_canary_id"} & set(published.column_names)
    secrets = [c["secret"] for c in json.loads((out / "canaries.json").read_text())["canaries"]]
    assert not any(s in text for s in secrets for text in published["text"][:])
    assert published["sample_id"][:] == list(range(len(published)))  # no gaps where the canaries were
    # What holds canaries is marked private, and a push of it is refused.
    from hf_carto.publish.privacy import private_contents

    assert (out / "PRIVATE.md").exists() and (out / "curated" / "PRIVATE.md").exists()
    assert private_contents(out / "hub") == []
    assert any("canaries.json" in f for f in private_contents(out))

    # Row evidence, computed by both processes: the leakage columns equal one process's under the
    # mapping run's final model; the duplicate columns, the report, the card and the HTML map carry it.
    from transformers import AutoModelForCausalLM

    from hf_carto import add_leakage_columns
    from hf_carto.core.columns import DUP_COLUMNS, LEAK_COLUMNS

    assert set(LEAK_COLUMNS + DUP_COLUMNS) <= set(curated.column_names) & set(published.column_names)
    final = AutoModelForCausalLM.from_pretrained(out / "seed0" / "mapping" / "final")
    alone = add_leakage_columns(curated.select_columns(["input_ids"]), final, batch_size=16, progress=False)
    for name in LEAK_COLUMNS:
        np.testing.assert_array_equal(np.asarray(alone[name]), np.asarray(curated[name]), err_msg=name)
    evidence = report["cartography"]["0"]["row_evidence"]
    assert evidence["leakage_all"]["extractable"] == sum(curated["carto_leak_extractable"][:])
    assert evidence["leak_k_range"] == [report["settings"]["block_size"] // 2] * 2  # half a block
    hot = [q == 2 for q in curated["carto_quadrant"][:]]
    assert evidence["hotspot_duplication"]["hotspots"] == sum(hot)
    card = (out / "hub" / "README.md").read_text()
    assert "## Leakage evidence" in card and "## Duplicated or unique" in card
    assert "## Row evidence" in (out / "report.md").read_text()
    page = (out / "data_map.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and '"carto_leak_extractable"' in page

    # A rerun with the same settings reads finished stages back and redoes only what is missing;
    # a rerun on another number of processes (another global batch) is refused.
    with pytest.raises(RunFolderError, match="num_processes: earlier 2, now 1"):
        main(tiny_args(out, "--seeds", "0", "1"))
    shutil.rmtree(out / "seed1" / "arms" / "random")
    accelerate_launch(*recipe, *tiny_args(out, "--seeds", "0", "1"))
    again = json.loads((out / "report.json").read_text())
    assert (out / "seed1" / "arms" / "random" / "done.json").exists()
    # Same checkpoint, seed and processes: the retrained arm reproduces its first run exactly.
    assert again["rows"] == report["rows"]
    assert again["stage_seconds"]["mapping"] < 5.0  # read back, not retrained
    assert again["stage_seconds"]["continuation"] < report["stage_seconds"]["continuation"]


def test_gpt2_recipe_refuses_bad_input_before_training(tmp_path):
    out = tmp_path / "run"
    cases = [
        (["--preset", "cpu-huge"], "unknown preset 'cpu-huge'"),
        (tiny_args(out, "--dataset_name", "x", "--train_file", str(tmp_path / "missing.txt")), "missing.txt: no such"),
        (tiny_args(out, "--block_size", "2048"), "exceeds the model's context of 1024 tokens"),
        (tiny_args(out, "--burn_in", "3"), r"burn_in must be in \[1, num_train_epochs - 1\] = \[1, 2\]"),
        (
            tiny_args(out, "--tokenizer_name", "./no/such/tokenizer", "--train_tokenizer_vocab_size", "0"),
            "no such folder",
        ),
        (tiny_args(out, "--prune_fractions", "1.5"), r"prune_fractions must lie in \(0, 1\)"),
        (tiny_args(out, "--detectors", "final_loss", "nope"), r"--detectors: unknown detector\(s\) \['nope'\]"),
        (tiny_args(out, "--downweight_fractions", "1.5"), r"downweight_fractions must lie in \(0, 1\)"),
        (tiny_args(out, "--downweight_fractions", "0.1", "--alpha", "0"), r"needs a loss weight --alpha in \(0, 1\)"),
        (
            tiny_args(out, "--snapshot_rows", "1.5"),
            r"--snapshot_rows: snapshot rows are a fraction in \(0, 1\) or a whole number",
        ),
        (
            tiny_args(out, "--snapshot_rows", "0"),
            r"--snapshot_rows: snapshot rows are a fraction in \(0, 1\) or a whole number",
        ),
        (tiny_args(out, "--snapshot_seed", "3"), r"--snapshot_seed chooses the --snapshot_rows subset; it needs"),
    ]
    for argv, message in cases:
        with pytest.raises(SettingsError, match=message):
            main(argv)
    assert not out.exists()


def test_gpt2_recipe_refuses_an_output_folder_from_another_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("not a run")
    with pytest.raises(RunFolderError, match="holds no run_config.json"):
        main(tiny_args(out))
    (out / "notes.txt").unlink()
    parsed = parse_arguments(tiny_args(out))
    settings = run_settings(*parsed)
    settings["burn_in"] = 2
    (out / "run_config.json").write_text(json.dumps(settings))
    with pytest.raises(RunFolderError, match="burn_in: earlier 2, now 1"):
        main(tiny_args(out))
    assert sorted(p.name for p in out.iterdir()) == ["run_config.json"]  # nothing started


def test_gpt2_recipe_stage_times_add_up_and_tradeoff_points_share_a_start(tmp_path):

    path = tmp_path / "stage_times.json"
    first = StageTimer(path)
    with first("mapping"):
        pass
    first.total["mapping"] = 10.0  # as if the first invocation had trained for 10 s
    with first("scoring"):
        pass
    second = StageTimer(path)
    with second("mapping"):
        pass
    assert second.invocations == 2 and second.total["mapping"] >= 10.0
    assert second.seconds["mapping"] < 1.0 and set(second.total) == {"mapping", "scoring"}

    rows = [
        {
            "seed": seed,
            "arm": arm,
            "family": family,
            "fraction_pruned": x,
            "extraction_success": 0.0,
            "perplexity": 1.0,
        }
        for seed, budget in ((0, 0.02), (1, 0.04))
        for arm, family, x in (
            ("no_intervention", "no_intervention", 0.0),
            ("gendatacarto", QUADRANT_FAMILIES["gendatacarto"], budget),
            ("mapping_run", "mapping run", 0.0),
        )
    ]
    points = tradeoff_points(rows)
    assert not any(p["arm"] == "mapping run" for p in points)
    quadrant = [p["fraction_pruned"] for p in points if p["arm"] == QUADRANT_FAMILIES["gendatacarto"]]
    assert quadrant == [pytest.approx(0.03)] * 2
    starts = [p for p in points if p["arm"] == PRUNED_FAMILY]
    assert [(p["seed"], p["fraction_pruned"]) for p in starts] == [(0, 0.0), (1, 0.0)]


def naive_average_precision(scores, positives, ids) -> float:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], ids[i]))
    found, precisions = 0, []
    for rank, i in enumerate(order, start=1):
        if positives[i]:
            found += 1
            precisions.append(found / rank)
    return sum(precisions) / found if found else float("nan")


@pytest.mark.slow
def test_gpt2_recipe_detector_arms_share_budget_steps_and_report_detection(tmp_path, fewer_bootstrap_resamples):

    import numpy as np

    from hf_carto import detector_scores, select_top_memorized
    from hf_carto.core.columns import PLANTED_NAMES, loss_columns, read_columns
    from hf_carto.score.scored_io import load_scored

    out = tmp_path / "run"
    report = main(
        tiny_args(
            out,
            "--detectors",
            "final_loss",
            "memorization",
            "--downweight_fractions",
            "0.1",
            "--report_to",
            "tensorboard",
        )
    )
    n, alpha = report["num_blocks"], 0.5
    k = round(0.1 * n)
    rows = {r["arm"]: r for r in report["rows"]}
    mapping = json.loads((out / "seed0" / "mapping" / "done.json").read_text())
    detectors = ("final_loss", "memorization", "random")
    for kind in ("prune", "downweight"):
        names = [f"{d}_{kind}0.1" for d in detectors]
        budgets = [json.loads((out / "seed0" / "arms" / name / "done.json").read_text())["budget"] for name in names]
        # Equal budgets: exactly k blocks treated by the same weight in every arm of the budget.
        counted = "num_removed" if kind == "prune" else "num_down_weighted"
        assert [b[counted] for b in budgets] == [k] * 3
        expected = k / n if kind == "prune" else k * (1 - alpha) / n
        assert [rows[name]["fraction_pruned"] for name in names] == [pytest.approx(expected)] * 3
        # Identical steps: the same checkpoint, the same kept blocks, the same number of steps.
        assert len({tuple(rows[name]["steps"]) for name in names}) == 1
        assert rows[names[0]]["steps"][0] == mapping["burn_in_step"]
        assert f"final_loss_{kind}0.1 vs random_{kind}0.1" in report["comparisons"]
        assert f"memorization_{kind}0.1 vs random_{kind}0.1" in report["comparisons"]
    assert "gendatacarto_prune0.1" not in rows and {"gendatacarto", "random", "no_intervention"} <= set(rows)

    # Detection metrics recomputed from the scored dataset, with a naive ranking.
    scored, fit = load_scored(out / "seed0" / "scored")
    columns = loss_columns(scored.column_names)
    cols = read_columns(
        scored, [*columns, "sample_id", "truth", "carto_canary_id", "carto_memorization", "carto_difficulty"]
    )
    losses = np.column_stack([cols[c].astype(np.float64) for c in columns])
    ids = cols["sample_id"]
    planted = np.isin(cols["truth"], [PLANTED_NAMES.index("canary"), PLANTED_NAMES.index("contaminated")])
    targets = {"planted": planted, "whole_canary": cols["carto_canary_id"] >= 0}
    detection = report["cartography"]["0"]["detection"]
    for target, positives in targets.items():
        entry = detection["targets"][target]
        assert entry["num_positive"] == positives.sum()
        for name in ("final_loss", "memorization", "loss_std", "random"):
            scores = detector_scores(name, losses, eps=fit.eps, burn_in=fit.burn_in, seed=0)
            got = entry["detectors"][name]
            want = naive_average_precision(scores, positives, ids)
            assert got["average_precision"] == pytest.approx(want, nan_ok=True)
            top = sorted(range(n), key=lambda i: (-scores[i], ids[i]))[:k]
            (at,) = got["at_budget"]
            assert (at["num_selected"], at["num_found"]) == (k, int(positives[top].sum()))
    (tie,) = detection["memorization_tie_breaks"]
    paper = select_top_memorized(cols["carto_memorization"], 0.1, difficulty=cols["carto_difficulty"], sample_ids=ids)
    assert (tie["tied_at_cut"], tie["num_selected"]) == (paper.n_tied_at_cut, k)
    assert tie["decided_by_tie_break"] == (paper.n_tied_selected if paper.n_tied_selected < paper.n_tied_at_cut else 0)
    assert {r["snapshots_per_epoch"] for r in detection["sensitivity"]} == {1, 2}
    for figure in detection["figures"]:
        assert (out / figure).stat().st_size > 1000
    text = (out / "report.md").read_text()
    assert "## Which blocks the detectors find" in text and "| final_loss_prune0.1 |" in text
    assert "| reference_ratio |" in text
    check_tensorboard_events(out, report)


def check_tensorboard_events(out, report) -> None:
    """--report_to tensorboard: the mapping run's snapshots and its scoring step beside them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "seed0" / "mapping" / "runs" / "carto"), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"carto/forget_fraction", "carto/tau_d", "carto/quadrant/hotspot_memorized"} <= set(tags["scalars"])
    assert "carto/data_map" in tags["images"] and "carto/loss" in tags["histograms"]
    snapshots = report["cartography"]["0"]["num_snapshots"]
    assert len(events.Scalars("carto/forget_fraction")) == snapshots
    logged = events.Scalars("carto/quadrant/hotspot_memorized")[-1].value
    assert logged == report["cartography"]["0"]["quadrant_counts"]["hotspot_memorized"]


def test_gpt2_recipe_records_detector_settings_only_when_given(tmp_path):
    # Runs made before --detectors existed recorded no such setting; they still resume.
    plain = run_settings(*parse_arguments(tiny_args(tmp_path)))
    assert "detectors" not in plain and "downweight_fractions" not in plain
    chosen = run_settings(
        *parse_arguments(tiny_args(tmp_path, "--detectors", "final_loss", "--downweight_fractions", "0.1"))
    )
    assert chosen["detectors"] == ["final_loss"] and chosen["downweight_fractions"] == [0.1]


@pytest.mark.slow
def test_gpt2_recipe_snapshot_rows_scores_a_seeded_subset_and_trains_the_other_blocks_unchanged(
    tmp_path, fewer_bootstrap_resamples
):
    import numpy as np
    from datasets import load_from_disk

    from hf_carto import LossStore
    from hf_carto.core.columns import read_columns
    from hf_carto.record.recorder import snapshot_subset
    from hf_carto.score.scored_io import load_scored

    out = tmp_path / "run"
    report = main(tiny_args(out, "--snapshot_rows", "0.5", "--snapshot_seed", "7", "--detectors", "final_loss"))
    n = report["num_blocks"]
    blocks = load_from_disk(str(out / "data" / "train_blocks"))
    rows = snapshot_subset(n, 0.5, seed=7)
    subset_ids = np.asarray(blocks["sample_id"])[rows]
    assert LossStore(out / "seed0" / "mapping").settings().snapshot_rows == rows.size

    # Only the snapshotted blocks are scored, and the cut is a share of them.
    scored, fit = load_scored(out / "seed0" / "scored")
    assert fit.num_samples == rows.size == len(scored) < n
    assert np.array_equal(np.asarray(scored["sample_id"]), subset_ids)
    k = round(0.1 * rows.size)
    for name in ("final_loss_prune0.1", "random_prune0.1"):
        budget = json.loads((out / "seed0" / "arms" / name / "done.json").read_text())["budget"]
        # every block trains: the unscored ones kept with weight 1, k of the scored ones removed
        assert (budget["num_samples"], budget["num_removed"]) == (n, k)
        assert budget["loss_weight_total"] == n - k
    no_intervention = json.loads((out / "seed0" / "arms" / "no_intervention" / "done.json").read_text())["budget"]
    assert (no_intervention["num_samples"], no_intervention["num_removed"]) == (n, 0)

    section = report["cartography"]["0"]
    assert section["snapshot_subset"] == {
        "scored_blocks": rows.size,
        "unscored_blocks": n - rows.size,
        "snapshot_seed": 7,
    }
    whole_copies = int((read_columns(scored, ["carto_canary_id"])["carto_canary_id"] >= 0).sum())
    assert section["detection"]["targets"]["whole_canary"]["num_positive"] == whole_copies  # among the scored
    text = (out / "report.md").read_text()
    assert f"{rows.size:,} of {n:,} blocks (50.0%) are scored" in text

    # The curated dataset holds the scored blocks, and its card says what the scores cover.
    curated = load_from_disk(str(out / "curated"))
    assert sorted(read_columns(curated, ["sample_id"])["sample_id"].tolist()) == sorted(subset_ids.tolist())
    card = (out / "hub" / "README.md").read_text()
    assert f"a fixed seeded subset of {rows.size:,} of {n:,} training rows (seed 7)" in card
    assert f"The {rows.size:,} rows of the {n:,}-row source training set that its loss snapshots covered" in card
    assert f"The other {n - rows.size:,} rows have no scores and are not in this dataset." in card
    assert "Every row of the source training set" not in card
    assert "--snapshot_rows 0.5" in (out / "model_card.md").read_text()


def test_keep_unscored_gives_every_block_the_arms_treatment_or_weight_one():
    import numpy as np
    from datasets import Dataset

    from hf_carto.experiment.stage_training import ARM_COLUMNS, keep_unscored

    blocks = Dataset.from_dict(
        {
            "input_ids": [[1, 2], [7, 8], [3, 4], [5, 6]],
            "labels": [[1, 2], [7, 8], [3, 4], [5, 6]],
            "sample_id": [5, 6, 9, 2],
            "text": ["a", "b", "c", "d"],
        }
    )
    arm = Dataset.from_dict(  # the scored blocks 9 and 5, in another order than the blocks
        {
            "input_ids": [[3, 4], [1, 2]],
            "labels": [[3, 4], [1, 2]],
            "sample_id": [9, 5],
            "carto_loss_weight": np.array([0.5, 0.0], dtype=np.float32),
            "carto_sampling_weight": np.array([1.0, 0.0], dtype=np.float32),
            "carto_keep": [True, False],
            "carto_quadrant": [0, 2],
        }
    )
    both = keep_unscored(arm, blocks)
    assert both.column_names == ARM_COLUMNS and both.features == arm.select_columns(ARM_COLUMNS).features
    assert both["sample_id"] == [5, 6, 9, 2] and both["input_ids"] == blocks["input_ids"]
    assert both["carto_loss_weight"] == [0.0, 1.0, 0.5, 1.0]
    assert both["carto_sampling_weight"] == [0.0, 1.0, 1.0, 1.0]
    assert both["carto_keep"] == [False, True, True, True]
    stranger = arm.map(lambda row: {"sample_id": 77 if row["sample_id"] == 9 else row["sample_id"]})
    with pytest.raises(ValueError, match="distinct blocks of the training set"):
        keep_unscored(stranger, blocks)
