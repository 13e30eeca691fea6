"""The frontier's arms: budgets with fewer detectors, a down-weighting variant, deduplication as an
arm with its random control, and the recommended policy's arm, all of the sizes they promise."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from hf_carto import add_cartography, fit_cartography
from hf_carto.core.columns import KEEP, LOSS_WEIGHT, PLANTED_NAMES, loss_column
from hf_carto.experiment import SettingsError, parse_arguments
from hf_carto.experiment.arguments import check_arguments
from hf_carto.experiment.stage_training import dedup_arms, make_arms

N = 400
CANARY, CONTAMINATED = PLANTED_NAMES.index("canary"), PLANTED_NAMES.index("contaminated")


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    blocks = rng.integers(10, 5000, size=(N, 32))
    truth = np.zeros(N, dtype=np.int64)
    # 6 exact copies of one block (a canary block), 4 near copies of another (a contaminated one)
    for i in range(1, 6):
        blocks[50 + i] = blocks[50]
    truth[50:56] = CANARY
    for i in range(1, 4):
        blocks[200 + i] = blocks[200]
        blocks[200 + i, -1] = 7  # one token differs: a near duplicate
    truth[200:204] = CONTAMINATED
    truth[300] = CANARY  # a unique canary block dedup cannot see
    losses = rng.gamma(2.0, 1.0, size=(N, 6)).astype(np.float32)
    columns = {loss_column(t + 1): losses[:, t] for t in range(6)}
    data = Dataset.from_dict(
        {"input_ids": blocks.tolist(), "labels": blocks.tolist(), "sample_id": np.arange(N), "truth": truth, **columns}
    )
    fit = fit_cartography(data, burn_in=2, eps="quantile:0.2")
    return add_cartography(data, fit), fit


def carto_args(*flags):
    _, _, carto, _ = parse_arguments(["--preset", "cpu-tiny", "--output_dir", "unused", *flags])
    return carto


def test_dedup_prunes_all_but_one_copy_and_its_random_control_as_many(scored):
    data, _ = scored
    arms, cut = dedup_arms(data, seed=0)
    k = 5 + 3  # the copies beyond the first of each cluster
    assert cut["num_selected"] == k and cut["fraction"] == k / N
    assert cut["canary_blocks"] == 7 and cut["canary_blocks_removed"] == 5
    assert cut["contaminated_blocks"] == 4 and cut["contaminated_blocks_removed"] == 3
    name = f"dedup_prune{k / N:g}"
    assert set(arms) == {name, f"random_prune{k / N:g}"}
    removed = ~np.asarray(arms[name][1][KEEP])
    assert set(np.flatnonzero(removed)) == {51, 52, 53, 54, 55, 201, 202, 203}
    assert (~np.asarray(arms[f"random_prune{k / N:g}"][1][KEEP])).sum() == k
    from hf_carto.experiment.report_markdown import _cut_line  # the report's line for this cut

    assert (
        _cut_line(cut) == f"  - dedup: 8 blocks ({8 / N:.2%}) beyond the first of their cluster, 5 of 7 canary "
        "blocks, 3 of 4 contaminated blocks, 0 of 0 duplicate blocks"
    )


def test_no_duplicate_no_dedup_arm():
    rng = np.random.default_rng(1)
    blocks = rng.integers(10, 5000, size=(50, 32)).tolist()
    data = Dataset.from_dict({"input_ids": blocks, "sample_id": np.arange(50)})
    arms, cut = dedup_arms(data, seed=0)
    assert arms == {} and cut["num_selected"] == 0


def test_frontier_budgets_downweighting_dedup_and_the_policy_arm(scored):
    data, fit = scored
    carto = carto_args(
        "--detectors", "memorization", "loss_std", "combined",
        "--prune_fractions", "0.05", "--frontier_fractions", "0.01", "0.1", "--frontier_detectors", "combined",
        "--downweight_fractions", "0.05", "--downweight_detectors", "combined", "--downweight_alpha", "0.1",
        "--dedup_arm",
    )  # fmt: skip
    arms, cuts = make_arms(data, carto, seed=0, fit=fit)
    expected = {"no_intervention", "gendatacarto", "random"}
    expected |= {f"{d}_prune0.05" for d in ("memorization", "loss_std", "combined", "random")}
    expected |= {f"{d}_prune{f:g}" for d in ("combined", "random") for f in (0.01, 0.1)}
    expected |= {"combined_downweight0.05", "random_downweight0.05"}
    expected |= {f"dedup_prune{8 / N:g}", f"random_prune{8 / N:g}"}
    # the recommended policy's arm and its control (already there when the frontier holds them)
    from hf_carto import RECOMMENDED

    expected |= {RECOMMENDED.arm_name, f"random_{RECOMMENDED.kind}{RECOMMENDED.budget:g}"}
    assert set(arms) == expected
    for name, (_, arm) in arms.items():
        removed = int((~np.asarray(arm[KEEP])).sum())
        fraction = name.rsplit("prune", 1)[-1] if "_prune" in name else None
        if fraction is not None:
            assert removed == int(np.floor(float(fraction) * N + 0.5)), name
    weights = np.asarray(arms["combined_downweight0.05"][1][LOSS_WEIGHT])
    assert np.asarray(arms["combined_downweight0.05"][1][KEEP]).all()
    assert sorted(set(weights.tolist())) == pytest.approx([0.1, 1.0]) and (weights < 1).sum() == 20
    assert {c["detector"] for c in cuts if c["kind"] == "dedup"} == {"dedup"}


def test_the_paper_policy_adds_no_arm_and_bad_frontier_flags_are_refused(scored):
    data, fit = scored
    arms, _ = make_arms(data, carto_args("--policy", "paper"), seed=0, fit=fit)
    assert set(arms) == {"no_intervention", "gendatacarto", "random", "gendatacarto_prune0.1", "random_prune0.1"}
    for flags, message in (
        (["--policy", "best"], "--policy 'best'"),
        (["--detectors", "loss_std", "--frontier_fractions", "0.1"], "differ from --prune_fractions"),
        (["--detectors", "loss_std", "--frontier_detectors", "combined"], "not among --detectors"),
        (["--frontier_fractions", "0.02"], "needs --detectors"),
        (["--downweight_alpha", "1.5"], "downweight_alpha must lie in (0, 1)"),
    ):
        model_args, data_args, carto, training = parse_arguments(
            ["--preset", "cpu-tiny", "--output_dir", "unused", *flags]
        )
        with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_arguments(model_args, data_args, carto, training)


def test_the_leaky_preset_measures_every_frontier_arm_the_issue_names(scored):
    """The cpu-leaky preset's settings (not its outcome): no dropout on twice the cpu-paper text,
    burn-in 2 of 3, three pruning budgets for every detector, a down-weighting variant,
    deduplication and the recommended policy."""
    from test_data_stage_arrow import WIKITEXT

    from hf_carto import RECOMMENDED
    from hf_carto.experiment.arguments import model_config

    flags = ["--train_file", str(WIKITEXT / "wiki.train.raw"), "--validation_file", str(WIKITEXT / "wiki.valid.raw")]
    model_args, data_args, carto, training = parse_arguments(["--preset", "cpu-leaky", *flags])
    check_arguments(model_args, data_args, carto, training)
    config = model_config(model_args, vocab_size=4096)
    assert (config.n_layer, config.n_embd) == (2, 128)
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.0
    assert data_args.max_train_samples == 32000 and data_args.block_size == 32
    assert training.num_train_epochs == 3 and carto.burn_in == 2
    assert data_args.num_canaries >= 32 and max(data_args.canary_repetitions) == 128
    assert {"memorization", "loss_std", "loss_drop", "reference_ratio", "combined"} == set(carto.detectors)
    budgets = sorted([*carto.prune_fractions, *carto.frontier_fractions])
    assert len(budgets) >= 3
    assert carto.downweight_alpha == 0.1 and carto.dedup_arm and carto.policy == "recommended"

    data, fit = scored
    arms, _ = make_arms(data, carto, seed=0, fit=fit)
    for detector in ("memorization", "loss_std", "loss_drop", "reference_ratio", "combined", "random"):
        assert {f"{detector}_prune{b:g}" for b in budgets} <= set(arms)
    assert len(arms) == 24
    assert {"no_intervention", "gendatacarto", "random", "combined_downweight0.05", RECOMMENDED.arm_name} <= set(arms)
    assert any(name.startswith("dedup_prune") for name in arms)
