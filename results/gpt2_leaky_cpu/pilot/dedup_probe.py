"""What block-level deduplication (the toolkit's MinHash clusters, as the --dedup_arm prunes) removes
from a data stage's blocks, and how many canary and contaminating blocks it catches:

    python results/gpt2_leaky_cpu/pilot/dedup_probe.py OUT/data/train_blocks
"""

import json
import sys
import time

from datasets import load_from_disk

from hf_carto.experiment.stage_training import dedup_arms

t = time.time()
blocks = load_from_disk(sys.argv[1])
_, cut = dedup_arms(blocks.select_columns(["input_ids", "sample_id", "truth"]), seed=0)
cut["seconds"] = round(time.time() - t, 1)
print(json.dumps(cut))
