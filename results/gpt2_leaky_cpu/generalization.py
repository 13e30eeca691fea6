"""The regime's generalization bound, per seed: does the mapping model still generalize?

    python results/gpt2_leaky_cpu/generalization.py RUN_DIR [RUN_DIR ...]

For each run folder of the ``cpu-leaky`` preset (what ``recipes/gpt2_wikitext.py --preset
cpu-leaky --seeds N --output_dir RUN_DIR`` leaves: its data and ``seedN/mapping/final``), the final
mapping model's validation perplexity against its perplexity on 2,000 training blocks without
planted material, with the same function on both (the measure of pilot ``L_preset``). Writes
``seed_N/generalization.json`` beside the seed's committed report and prints one line per seed.

Why not the report's own training perplexity: the recorded per-block losses of the mapping run
include the planted blocks, whose losses the model drives far down by repetition; the bound asks
whether the model overfits the ordinary text, so it reads the ordinary blocks alone.
"""

import json
import sys
from pathlib import Path

import numpy as np
from transformers import AutoModelForCausalLM

from hf_carto.experiment.arguments import parse_arguments
from hf_carto.experiment.stage_data import prepare_data
from hf_carto.measure.perplexity import perplexity

HERE = Path(__file__).resolve().parent
NUM_TRAIN_BLOCKS = 2000


def generalization(run: Path) -> dict:
    finals = sorted(run.glob("seed*/mapping/final"))
    if len(finals) != 1:
        raise SystemExit(f"{run}: expected one seed<N>/mapping/final (one seed per run folder), found {len(finals)}")
    seed = int(finals[0].parents[1].name.removeprefix("seed"))
    m, d, _, _ = parse_arguments(["--preset", "cpu-leaky", "--output_dir", str(run), "--seeds", str(seed)])
    data = prepare_data(m, d, run, True)  # the run's data, read back (its data stage is done)
    model = AutoModelForCausalLM.from_pretrained(finals[0]).eval()
    pad = data.tokenizer.pad_token_id or 0
    ordinary = np.flatnonzero(np.asarray(data.blocks["truth"]) == 0)
    sample = np.random.default_rng(0).choice(ordinary, size=min(NUM_TRAIN_BLOCKS, len(ordinary)), replace=False)
    train = perplexity(model, [data.blocks[int(i)]["input_ids"] for i in sample], pad_token_id=pad)["perplexity"]
    validation = perplexity(model, data.eval_sets["validation"], pad_token_id=pad)["perplexity"]
    return {
        "seed": seed,
        "train_perplexity_ordinary_blocks": train,
        "validation_perplexity": validation,
        "ratio": validation / train,
        "num_train_blocks": int(len(sample)),
        "bound": 1.5,
    }


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        result = generalization(Path(folder))
        out = HERE / f"seed_{result['seed']}" / "generalization.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(
            f"seed {result['seed']}: validation {result['validation_perplexity']:.1f} / training (ordinary blocks) "
            f"{result['train_perplexity_ordinary_blocks']:.1f} = {result['ratio']:.3f} (bound 1.5)"
        )
