"""Pilot for the leaky regime: one mapping run (seed 0) and its final model probed for leakage.

    python results/gpt2_leaky_cpu/pilot/pilot_leak.py OUT [flags over the cpu-paper preset, or --preset P ...]

Prints and writes ``OUT/pilot.json``: extraction of the inserted canaries by copy count (plain
greedy, end-of-text allowed), of the never-inserted control canaries, contamination recall,
validation and training perplexity of the final model (the same function on held-out blocks and
on 2,000 training blocks without planted material), the planted share of the blocks, and the wall
time. The arms continue from the burn-in checkpoint, so the final mapping model is what the
no-intervention arm approximates: a setting that does not leak here will not leak there.
"""

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from accelerate import PartialState
from transformers import AutoModelForCausalLM

from hf_carto.measure.perplexity import perplexity
from hf_carto.experiment.arguments import parse_arguments
from hf_carto.experiment.stage_data import prepare_data
from hf_carto.experiment.stage_training import mapping_run
from hf_carto.measure.model_report import EvalSettings, LeakageProbes, evaluate_leakage

out = Path(sys.argv[1])
extra = sys.argv[2:]
preset = [] if "--preset" in extra else ["--preset", "cpu-paper"]  # a preset given among the flags wins
argv = [
    *preset,
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
t_train = time.time() - t0
model = AutoModelForCausalLM.from_pretrained(out / "seed0" / "mapping" / "final").eval()
pad = data.tokenizer.pad_token_id or 0
kinds = np.asarray(data.blocks["truth"])
plain = np.flatnonzero(kinds == 0)
rng = np.random.default_rng(0)
sample = rng.choice(plain, size=min(2000, len(plain)), replace=False)
train_ppl = perplexity(model, [data.blocks[int(i)]["input_ids"] for i in sample], pad_token_id=pad)["perplexity"]
val_ppl = perplexity(model, data.eval_sets["validation"], pad_token_id=pad)["perplexity"]
probes = LeakageProbes(
    canaries=data.canaries,
    control_canaries=data.eval_sets["control_canaries"],
    contaminating=data.eval_sets["contaminating"],
    control=data.eval_sets["control"],
)
report = evaluate_leakage(model, data.tokenizer, probes, EvalSettings(k=d.contamination_k, batch_size=64))
by_copies: dict[int, list[float]] = defaultdict(list)
rows = {r["canary_id"]: r for r in report["canaries"]["canaries"]}
for canary in data.canaries:
    by_copies[canary.repetitions].append(float(rows[canary.canary_id]["extracted"]))
cont = report["contamination"]
res = dict(
    extra=extra,
    blocks=len(data.blocks),
    planted_blocks=int((kinds != 0).sum()),
    extraction=report["canaries"]["success_rate"],
    extraction_by_copies={k: float(np.mean(v)) for k, v in sorted(by_copies.items())},
    extraction_8plus=float(np.mean([x for k, v in by_copies.items() if k >= 8 for x in v] or [float("nan")])),
    control_extraction=report["canaries"]["control"]["success_rate"],
    mean_exposure=report["canaries"]["mean_exposure"],
    contamination_recall=cont["inserted"]["recall"],
    contamination_matched=cont["inserted"]["mean_matched_tokens"],
    control_recall=cont["control"]["recall"],
    train_ppl=train_ppl,
    val_ppl=val_ppl,
    ratio=val_ppl / train_ppl,
    train_seconds=t_train,
    seconds=time.time() - t0,
)
print(json.dumps(res))
(out / "pilot.json").write_text(json.dumps(res, indent=1))
(out / "pilot_report.json").write_text(json.dumps(report, indent=1, default=str))
