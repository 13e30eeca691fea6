"""The cpu-paper preset's mapping run alone (seed 0) and its regime: training perplexity at every
snapshot, validation perplexity of the final model and of the burn-in checkpoint, their ratio.

    python results/gpt2_paper_cpu/pilot/pilot_regime.py OUT [flags that override the preset]

How the preset's dropout was chosen (about 10 minutes each on one thread; one JSON each here):
`lr1e3.json` (--learning_rate 1e-3 at dropout 0.1), `lr1e3_drop2.json` (and dropout 0.2),
`drop2.json` and `drop3.json` (dropout 0.2 / 0.3 at the preset's learning rate); each file's
`extra` holds the flags it was run with, the preset then having dropout 0.1. Dropout 0.2 is now
the preset itself. Dropout 0.1 gave ratios 1.53-1.59 in the earlier seeds' full runs.
"""

import json
import sys
import time
from pathlib import Path

from accelerate import PartialState
from transformers import AutoModelForCausalLM

from hf_carto.experiment.arguments import parse_arguments
from hf_carto.experiment.results import cartography_section
from hf_carto.experiment.stage_data import prepare_data
from hf_carto.experiment.stage_training import mapping_run, score_blocks
from hf_carto.measure.perplexity import perplexity
from hf_carto.record.store import LossStore

out = Path(sys.argv[1])
extra = sys.argv[2:]
argv = [
    "--preset",
    "cpu-paper",
    "--train_file",
    "../shared/data/wikitext-2-raw/wiki.train.raw",
    "--validation_file",
    "../shared/data/wikitext-2-raw/wiki.valid.raw",
    "--output_dir",
    str(out),
    "--seeds",
    "0",
    *extra,
]
m, d, c, t = parse_arguments(argv)
state = PartialState(cpu=True)
t0 = time.time()
data = prepare_data(m, d, out, True)
mapping = mapping_run(0, m, c, t, data.blocks, data.tokenizer, out / "seed0", state)
scored, fit = score_blocks(
    data.blocks, LossStore(out / "seed0" / "mapping"), mapping["burn_in_step"], c, out / "seed0" / "scored", seed=0
)
sec = cartography_section(scored, fit, [])
model = AutoModelForCausalLM.from_pretrained(out / "seed0" / "mapping" / "final")
val = perplexity(model, data.eval_sets["validation"], pad_token_id=data.tokenizer.pad_token_id or 0)["perplexity"]
ck = AutoModelForCausalLM.from_pretrained(mapping["checkpoint"])
val_b = perplexity(ck, data.eval_sets["validation"], pad_token_id=data.tokenizer.pad_token_id or 0)["perplexity"]
tr = sec["train_perplexity_by_snapshot"]
res = dict(
    extra=extra,
    blocks=len(data.blocks),
    train=tr,
    val_final=val,
    val_burnin=val_b,
    ratio=val / tr[-1],
    forget=sec["num_with_forget_events"],
    tau_m=sec["tau_m"],
    seconds=time.time() - t0,
)
print(json.dumps(res))
(out / "pilot.json").write_text(json.dumps(res))
