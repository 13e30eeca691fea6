"""The evaluation sets of the data stage: the canaries with their never-inserted controls, the
contaminating and control sequences cut from the held-out text, the members and non-members of the
membership tests (ordinary and planted), and the perplexity blocks.

Everything here is cut from the held-out text or drawn from the packed training blocks by the
data seed, so every arm and every seed of a run is measured on the same sets."""

from __future__ import annotations

import logging

import numpy as np

from hf_carto.core.columns import PLANTED_NAMES, read_columns
from hf_carto.data.canaries import make_canaries, unused_templates
from hf_carto.experiment.arguments import DataArguments
from hf_carto.experiment.errors import InputDataError

logger = logging.getLogger(__name__)

# Planted material above this share of the training blocks makes perplexity reflect it more than
# ordinary text.
MAX_PLANTED_SHARE = 0.05


def canaries_and_controls(data_args: DataArguments, seed: int) -> tuple[list, list]:
    """The inserted canaries, and as many never-inserted ones with unused templates: the floor of
    extraction, and the planted non-members."""

    canaries = make_canaries(
        data_args.num_canaries,
        repetitions=data_args.canary_repetitions,
        secret_length=data_args.secret_length,
        seed=seed,
    )
    control_canaries = make_canaries(
        data_args.num_canaries,
        repetitions=[1],
        secret_length=data_args.secret_length,
        templates=unused_templates(canaries),
        seed=seed + 3,
        first_id=data_args.num_canaries,
    )
    return canaries, control_canaries


def contamination_windows(heldout_docs, data_args: DataArguments, rng) -> tuple[list, list, list, int]:
    """Contaminating and control sequences: 2k tokens from inside one held-out document each; and
    the held-out documents left for membership and perplexity."""
    from hf_carto.data.packing import cut_windows

    n_c, k2 = data_args.num_contaminating, 2 * data_args.contamination_k
    try:
        windows, used, usable = cut_windows([d[:-1] for d in heldout_docs], 2 * n_c, k2, rng)
    except ValueError as err:
        raise InputDataError(f"held-out text: {err}; lower --num_contaminating or --contamination_k") from None
    used = set(used)
    rest = [d for i, d in enumerate(heldout_docs) if i not in used]
    return windows[:n_c], windows[n_c:], rest, usable


def build_eval_sets(blocks, rest, planted_out, contaminating, control, data_args: DataArguments, seed: int) -> dict:
    """Membership, planted-membership, contamination and perplexity sets, with their counts."""
    from hf_carto.data.packing import pack_documents

    heldout_blocks = pack_documents(rest, data_args.block_size)["input_ids"][:] if rest else []
    n_m = data_args.num_membership_samples
    if len(heldout_blocks) < n_m + 1:
        raise InputDataError(
            f"after the contamination windows and the planted controls, the held-out text packs into "
            f"{len(heldout_blocks)} blocks of {data_args.block_size} tokens; {n_m + 1} are needed "
            f"({n_m} non-members, >= 1 for perplexity). Give more held-out text or lower --num_membership_samples"
        )
    validation = heldout_blocks[n_m:]
    if data_args.max_validation_samples is not None:
        validation = validation[: data_args.max_validation_samples]
    members, member_ids = _member_blocks(blocks, n_m, seed)
    planted = _planted_blocks(blocks)
    # Everything that is not ordinary text (the generated corpus also plants duplicates and noise).
    share = float((read_columns(blocks, ["truth"])["truth"] != 0).mean())
    if share > MAX_PLANTED_SHARE:
        logger.warning(
            "planted material fills %.1f%% of the training blocks (> %.0f%%): perplexity trade-offs then "
            "reflect the planted text more than ordinary text",
            100 * share,
            100 * MAX_PLANTED_SHARE,
        )
    return {
        "contaminating": contaminating,
        "control": control,
        "members": members,
        "member_ids": member_ids,
        "non_members": heldout_blocks[:n_m],
        "planted_members": planted["input_ids"],
        "planted_member_ids": planted["sample_id"],
        "planted_non_members": planted_out,
        "validation": validation,
        "counts": {
            "contaminating": len(contaminating),
            "control": len(control),
            "planted_blocks": len(planted["sample_id"]),
            "planted_share": share,
            "planted_non_members": len(planted_out),
        },
    }


def planted_non_members(rest, control_canaries, control, tokenizer, data_args, rng, density: float):
    """Blocks built like the planted training blocks from material that is never trained on:
    each never-inserted canary and control sequence once, inserted into held-out documents at the
    training set's density of inserted documents, packed the same way. Returns those blocks and the
    held-out documents left over."""
    from hf_carto.data.packing import insert_documents, pack_documents

    eos = tokenizer.eos_token_id
    inserted = [tokenizer(c.text)["input_ids"] + [eos] for c in control_canaries]
    inserted += [seq + [eos] for seq in control]
    num_filler = min(len(rest) // 2, max(1, round(len(inserted) / max(density, 1e-9))))
    filler, rest = rest[:num_filler], rest[num_filler:]
    kind = PLANTED_NAMES.index("canary")
    docs, kinds, _ = insert_documents(
        filler, [0] * len(filler), inserted, [kind] * len(inserted), seed=int(rng.integers(2**31))
    )
    packed = pack_documents(docs, data_args.block_size, kinds=kinds)
    planted = np.flatnonzero(np.asarray(packed["truth"][:]) != 0)
    return [packed[int(i)]["input_ids"] for i in planted], rest


def _planted_blocks(blocks) -> dict[str, list]:
    """Training blocks holding inserted material (canary or contaminating tokens)."""

    truth = read_columns(blocks, ["truth"])["truth"]
    kinds = [PLANTED_NAMES.index("canary"), PLANTED_NAMES.index("contaminated")]
    chosen = np.flatnonzero(np.isin(truth, kinds))
    subset = blocks.select(chosen)
    return {"input_ids": subset["input_ids"][:], "sample_id": subset["sample_id"][:]}


def _member_blocks(blocks, count: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Training blocks with no planted material: the members of the membership-inference test."""

    truth = read_columns(blocks, ["truth"])["truth"]
    candidates = np.flatnonzero(truth == 0)
    if len(candidates) < count:
        raise InputDataError(f"only {len(candidates)} ordinary training blocks for {count} membership samples")
    chosen = np.sort(np.random.default_rng(seed + 2).choice(candidates, size=count, replace=False))
    subset = blocks.select(chosen)
    return subset["input_ids"][:], subset["sample_id"][:]
