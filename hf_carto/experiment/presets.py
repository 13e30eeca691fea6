"""Defaults for the experiment: the training defaults of every run, and the presets.

The presets are data, in ``presets.json`` beside this module: each says what it is for (``about``)
and writes its settings as what it changes relative to ``cpu-base`` (the measured CPU experiments)
or to the preset it ``extends``, so the difference between the demo, the WikiText-2 runs and the
test preset can be read at a glance. Presets are defaults, not settings: a flag given on the
command line always wins.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

__all__ = ["COMMON", "GENERATED", "PRESETS", "PRESET_ABOUT"]

GENERATED = "generated"  # --dataset_name value for the embedded generated corpus

# Defaults of every run, preset or not.
COMMON: dict[str, Any] = dict(
    output_dir="outputs/gpt2_wikitext",
    num_train_epochs=3,
    report_to="none",
    save_strategy="no",
    logging_steps=50,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=16,  # the eval-mode loss snapshots
    learning_rate=5e-4,
    warmup_steps=0.02,
    weight_decay=0.01,
)

_BASE = "cpu-base"


def _load(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every preset's full settings (base, then what it extends, then its own) and its description."""
    entries = json.loads(path.read_text())
    base = entries.pop(_BASE)["settings"]

    def settings(name: str) -> dict[str, Any]:
        entry = entries[name]
        parent = settings(entry["extends"]) if "extends" in entry else base
        return {**parent, **entry["settings"]}

    presets = {name: copy.deepcopy(settings(name)) for name in entries}
    return presets, {name: entry["about"] for name, entry in entries.items()}


#: Each preset's settings, by name; :data:`PRESET_ABOUT` says what each is for.
PRESETS, PRESET_ABOUT = _load(Path(__file__).with_name("presets.json"))
