"""``report.md`` of a run (or of seeds combined): the table over seeds, paired differences against
the controls, extraction by copies, the reading, the budget frontier, the cartography of each seed,
which blocks the detectors find, time and memory. Text only: it reads the report that
:func:`hf_carto.experiment.results.build_report` built."""

from __future__ import annotations

import numpy as np

from hf_carto.experiment.results import MAPPING_RUN
from hf_carto.measure.comparison import COMPARED, METRICS, format_difference, reading_statements, units_on
from hf_carto.measure.frontier import frontier_points


def mean_std(values: list[float], fmt: str) -> str:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 1:
        return format(arr[0], fmt)
    return f"{format(arr.mean(), fmt)} ± {format(arr.std(), fmt.lstrip('+'))}"


def _overview(report: dict) -> list[str]:

    s = report["settings"]
    counts = report["data_counts"]
    lines = [
        "# GenDataCarto: GPT-2 leakage report",
        "",
        f"{report['num_blocks']:,} training blocks of {s['block_size']} tokens; T = {s['num_train_epochs']} epochs "
        f"with {s['snapshots_per_epoch']} eval-mode snapshot(s) each, burn-in T_e = {s['burn_in']} epoch(s); "
        f"eps {s['eps']}; seeds {s['seeds']}; {s['num_canaries']} canaries x {s['canary_repetitions']} copies "
        f"(secrets of {s['secret_length']} digits) and as many never-inserted control canaries; "
        f"{counts['contaminating']} held-out sequences inserted x {s['contamination_repetitions']} and "
        f"{counts['control']} never inserted (2k = {2 * s['contamination_k']} tokens from inside one document "
        f"each; {counts['heldout_documents_long_enough']} of {counts['heldout_documents']} held-out documents "
        f"were long enough). {_planted_blocks(counts, report['num_blocks'])} Values are means over seeds ± their "
        "standard deviation (population, ddof = 0); "
        "membership columns use the loss signal, on the members every arm of the seed trained on and, "
        "separately, on the planted blocks against blocks built the same way from never-trained material.",
        "",
        "| arm | pruned weight | " + " | ".join(label for _, label, _ in METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for arm, entry in report["summary"].items():
        cells = [mean_std(entry[key]["values"], fmt) for key, _, fmt in METRICS]
        pruned = mean_std(entry["fraction_pruned"]["values"], ".1%")
        lines.append(f"| {arm} | {pruned} | " + " | ".join(cells) + " |")
    floor = report["extraction_floor"]
    lines += [
        "",
        f"Never-inserted control canaries extracted: {floor['num_extracted']} of {floor['num_decoded']} "
        "decodings over every arm and seed (the floor of the extraction column). "
        f"Exposure: {report['exposure_methods']}.",
    ]
    return lines


def _planted_blocks(counts: dict, num_blocks: int) -> str:
    """The planted blocks, each count with its own share: the blocks holding canary or contaminating
    tokens (the planted-block membership test's members) and, when the corpus plants more (the
    generated one adds duplicates and noise documents), the blocks holding planted material of any kind."""
    planted = counts["planted_blocks"]
    text = (
        f"Planted blocks: {planted:,} of the {num_blocks:,} training blocks ({planted / max(num_blocks, 1):.1%}) "
        "hold canary or contaminating tokens"
    )
    # planted_share is the share of blocks holding any planted material, so its count is a whole number
    any_kind = round(counts["planted_share"] * num_blocks)
    if any_kind > planted:
        text += (
            f"; {any_kind:,} ({counts['planted_share']:.1%}) hold planted material of any kind (canaries, "
            "contaminating sequences, duplicates, noise)"
        )
    return text + "."


def format_reading(report: dict) -> list[str]:
    """The report's reading (:func:`hf_carto.measure.comparison.reading_statements`) as short bullets: what
    the no-intervention arm leaves to show, then one bullet per curated arm against its random
    control, one sub-bullet per metric."""

    preamble, arms = reading_statements(report["summary"], report["comparisons"])
    lines = ["**Reading:**", "", *(f"- {sentence}" for sentence in preamble)]
    for name, said in arms:
        lines.append(f"- {name}, the difference with its 95% interval:")
        lines += [f"  - {statement}." for statement in said]
    if not arms:
        lines.append("- No curated arm has a random control to compare with.")
    return lines


def _paired_differences(report: dict) -> list[str]:

    lines = [
        "",
        "## Paired differences",
        "",
        "Per seed, arm minus control on the same units (canaries, sequences) from the same checkpoint with "
        "the same seed; 95% intervals (unit-level metrics: bootstrap over seeds and units; seed-level: "
        "paired t over seeds). A difference is called lower or higher only when its interval excludes zero. "
        "The noise floor is the mapping run's own final model against the no-intervention arm: they differ "
        "only in the data order of the continued epochs.",
        "",
        "| comparison | " + " | ".join(label for _, label, _, _ in COMPARED) + " |",
        "|---|" + "---|" * len(COMPARED),
    ]
    for name, metrics in report["comparisons"].items():
        cells = []
        for key, _, _, fmt in COMPARED:
            if key not in metrics:
                cells.append("")
                continue
            m = metrics[key]
            cells.append(f"{format_difference(m, fmt)}, {units_on(m)}: {m['verdict']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _interval_text(diff: dict | None, fmt: str) -> str:
    if not diff:
        return ""
    text = format(diff["difference"], fmt)
    if diff.get("interval") is not None:
        low, high = diff["interval"]
        text += f" [{format(low, fmt)}, {format(high, fmt)}]"
    return text


def _frontier(report: dict) -> list[str]:
    """The budget frontier (every curated and random arm with a budget) and the recommendation."""

    if "recommendation" not in report:
        return []
    points = [p for p in frontier_points(report) if p["arm"] != "no_intervention"]
    points.sort(key=lambda p: (p["policy"], p["kind"], p["fraction"] if p["fraction"] is not None else -1))
    lines = [
        "",
        "## Budget frontier",
        "",
        "Each arm against no intervention (and against random at the same budget), paired 95% intervals; "
        "`frontier_extraction.png` and `frontier_exposure.png` draw them.",
        "",
        "| arm | pruned weight | extraction | vs none | vs random | exposure vs none | contamination vs none "
        "| planted MIA AUC vs none | ppl change |",
        "|---|---:|---:|---|---|---|---|---|---:|",
    ]
    for p in points:
        none, rand = p["vs_none"], p["vs_random"]
        lines.append(
            f"| {p['arm']} | {p['fraction_pruned']:.2%} | {p['extraction_success']:.1%} "
            f"| {_interval_text(none.get('extraction_success'), '+.1%')} "
            f"| {_interval_text(rand.get('extraction_success'), '+.1%')} "
            f"| {_interval_text(none.get('mean_exposure'), '+.2f')} "
            f"| {_interval_text(none.get('contamination_recall'), '+.1%')} "
            f"| {_interval_text(none.get('planted_mia_auc'), '+.3f')} "
            f"| {_interval_text(none.get('perplexity'), '+.2%')} |"
        )
    rec = report["recommendation"]
    cost = f"{rec['max_perplexity_cost']:.0%}"
    lines += [
        "",
        f"**Recommended policy** (largest measured extraction reduction at <= {cost} perplexity cost; where "
        "none is measured, largest measured exposure reduction): ",
    ]
    if rec["policy"] is None:
        lines[-1] += f"none. {rec['reason']}."
        return lines
    pol, point = rec["policy"], rec["point"]
    budget = f" at {pol['budget']:g}" if pol.get("budget") is not None else ""
    lines[-1] += (
        f"`{pol['detector']}`, {pol['kind']}{budget} (weight {pol['weight']:g}): extraction "
        f"{rec['no_intervention_extraction']:.1%} -> {point['extraction_success']:.1%} "
        f"({_interval_text(point['vs_none'].get('extraction_success'), '+.1%')}), exposure "
        f"{_interval_text(point['vs_none'].get('mean_exposure'), '+.2f')} bits, perplexity "
        f"{point['perplexity_change']:+.2%}. "
    )
    if rec.get("basis") == "exposure":
        lines[-1] += f"Chosen by exposure: {rec['reason']}; it does not meet the paper's bar."
    else:
        lines[-1] += (
            ("Meets" if rec["meets_paper_bar"] else "Does not meet")
            + " the paper's bar (>= 40% fewer extractions at <= 1% perplexity): "
            + f"{rec['relative_reduction']:.0%} fewer."
        )
    return lines


def _by_copies(report: dict) -> list[str]:
    by_copies = report["extraction_by_copies"]
    copies = sorted({c for arm in by_copies.values() for c in arm}, key=int)
    if not copies:
        return []
    lines = [
        "",
        "Extraction by the number of whole copies a canary had in the training blocks (the copies it can "
        "be learned from; a copy split across two blocks is in neither), means over seeds:",
        "",
        "| arm | " + " | ".join(f"{c} copies" for c in copies) + " |",
        "|---|" + "---:|" * len(copies),
    ]
    for arm, rates in by_copies.items():
        lines.append(f"| {arm} | " + " | ".join(f"{rates[c]:.1%}" if c in rates else "" for c in copies) + " |")
    return lines


def _cartography(report: dict) -> list[str]:
    lines = ["", "## Cartography", ""]
    for seed, c in report["cartography"].items():
        lines.append(
            f"- seed {seed}: {c['num_snapshots']} snapshots ({c['burn_in_snapshots']} in burn-in), eps = "
            f"{c['eps']:.4g}, tau_d = {c['tau_d']:.4g}, tau_m = {c['tau_m']:.4g}; {c['num_with_forget_events']} of "
            f"{c['num_samples']} blocks have a forget event; quadrants {c['quadrant_counts']}"
        )
        subset = c.get("snapshot_subset")
        if subset:
            scored, total = subset["scored_blocks"], subset["scored_blocks"] + subset["unscored_blocks"]
            lines.append(
                f"  - snapshots covered a fixed seeded subset (--snapshot_rows, seed {subset['snapshot_seed']}): "
                f"{scored:,} of {total:,} blocks ({scored / total:.1%}) are scored. Budgets, random controls, "
                f"detectors and the curated dataset are those blocks; the other {total - scored:,} train with "
                "weight 1 in every arm."
            )
        lines += [_cut_line(cut) for cut in c["budget_cuts"]]
    lines += _regime(report)
    first = next(iter(report["cartography"].values()))
    names = list(next(iter(first["planted_vs_quadrant"].values())))
    lines += ["", "Where planted blocks landed (first seed):", "", "| planted | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---:|" * len(names))
    for kind, row in first["planted_vs_quadrant"].items():
        lines.append(f"| {kind} | " + " | ".join(str(row[n]) for n in names) + " |")
    return lines + _row_evidence(report)


def _row_evidence(report: dict) -> list[str]:
    """Duplicated vs unique hotspots per seed, and the leakage columns by quadrant and planted kind."""
    seeds = {seed: c["row_evidence"] for seed, c in report["cartography"].items() if c.get("row_evidence")}
    if not seeds:
        return []
    lines = ["", "## Row evidence", ""]
    for seed, e in seeds.items():
        d = e["hotspot_duplication"]
        lines.append(
            f"- seed {seed}: {d['hotspots']} hotspot blocks: {d['exact_duplicates']} exact duplicates, "
            f"{d['near_duplicates_only']} near duplicates only, {d['unique']} unique text"
        )
    seed, first = next(iter(seeds.items()))
    k_range = first.get("leak_k_range")
    if k_range is None and first.get("leak_k"):  # reports written before k_range: the k values seen
        k_range = [min(first["leak_k"]), max(first["leak_k"])]
    from hf_carto.measure.leakage_columns import describe_k

    lines += [
        "",
        f"Leakage columns under the mapping run's final model (seed {seed}; {describe_k(k_range)}: "
        "greedy decoding from a "
        "block's first k tokens reproduces its next k):",
        "",
        "| blocks | count | k-extractable | mean matched tokens | mean loss | mean min-k%++ |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    groups = {
        **first["leakage_by_quadrant"],
        **first.get("leakage_by_planted", {}),
        "all blocks": first["leakage_all"],
    }
    for name, g in groups.items():
        matched = "-" if g["mean_matched_tokens"] is None else f"{g['mean_matched_tokens']:.2f}"
        loss = "-" if g["mean_loss"] is None else f"{g['mean_loss']:.3f}"
        mkpp = "-" if g["mean_min_k_plus_plus"] is None else f"{g['mean_min_k_plus_plus']:.3f}"
        lines.append(f"| {name} | {g['rows']} | {g['extractable']} of {g['tested']} | {matched} | {loss} | {mkpp} |")
    return lines


def _regime(report: dict) -> list[str]:
    """Training against validation perplexity of each mapping run: how far the run overfits."""
    lines = []
    for seed, c in report["cartography"].items():
        by_snapshot = c.get("train_perplexity_by_snapshot")
        mapping = [r for r in report["rows"] if r["arm"] == MAPPING_RUN and str(r["seed"]) == str(seed)]
        if not by_snapshot or not mapping:
            continue
        train, validation = by_snapshot[-1], mapping[0]["perplexity"]
        lines.append(
            f"- seed {seed} regime: training perplexity {train:.1f} at the last snapshot (eval mode, every scored "
            f"block), validation perplexity {validation:.1f} of the same model: ratio {validation / train:.2f}"
        )
    return lines


def _cut_line(cut: dict) -> str:
    if cut.get("kind") == "dedup":  # a natural budget, no score: what it removed of each planted kind
        caught = [
            f"{cut[f'{k}_blocks_removed']} of {cut[f'{k}_blocks']} {k} blocks"
            for k in ("canary", "contaminated", "duplicate")
            if f"{k}_blocks" in cut
        ]
        return f"  - dedup: {cut['num_selected']} blocks ({cut['fraction']:.2%}) beyond the first of their cluster" + (
            f", {', '.join(caught)}" if caught else ""
        )
    kind = "down-weight" if cut.get("kind") == "downweight" else "prune"
    detector = cut.get("detector", "gendatacarto")
    if detector == "gendatacarto":  # the paper's cut: top m, ties by difficulty
        return (
            f"  - {kind} {cut['fraction']:g}: {cut['num_selected']} blocks cut at m = {cut['cut_value']:.3g}, "
            f"{cut['tied_selected']} of {cut['tied_at_cut']} tied blocks chosen by the tie-break"
        )
    return (
        f"  - {kind} {cut['fraction']:g} by {detector}: {cut['num_selected']} blocks cut at score "
        f"{cut['cut_value']:.4g}; the sample_id tie-break decided {cut['decided_by_tie_break']} of them "
        f"({cut['tied_at_cut']} blocks share the cut score)"
    )


def _detection(report: dict) -> list[str]:
    sections = {seed: c["detection"] for seed, c in report["cartography"].items() if "detection" in c}
    if not sections:
        return []
    first_seed, first = next(iter(sections.items()))
    fractions = first["fractions"]
    lines = [
        "",
        "## Which blocks the detectors find",
        "",
        "Each detector (hf_carto.score.detectors) ranks every scored training block, higher score = curate first, "
        "equal "
        "scores by sample_id; a budget arm treats the top of its ranking. AP is the average precision over the whole "
        "ranking (a random ranking scores about the base rate); P@f and R@f are the precision and recall of the "
        "top fraction f, the cut a budget f makes. Means over seeds ± their standard deviation (ddof = 0).",
    ]
    for target, description in first["target_descriptions"].items():
        entries = [s["targets"][target] for s in sections.values()]
        positives = [e["num_positive"] for e in entries]
        base = mean_std([e["base_rate"] for e in entries], ".3f")
        header = ["AP", *(f"{m}@{f:g}" for f in fractions for m in ("P", "R"))]
        lines += [
            "",
            f"**{description}** ({'/'.join(map(str, positives))} of {entries[0]['num_samples']} blocks per seed; "
            f"base rate {base}):",
            "",
            "| detector | " + " | ".join(header) + " |",
            "|---|" + "---:|" * len(header),
        ]
        for name in first["detectors"]:
            per_seed = [e["detectors"][name] for e in entries]
            cells = [_mean_or_blank([d["average_precision"] for d in per_seed], ".3f")]
            for i in range(len(fractions)):
                for key in ("precision", "recall"):
                    cells.append(_mean_or_blank([d["at_budget"][i][key] for d in per_seed], ".2f"))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "How much of each cut by memorization m (the paper's ranking) its difficulty tie-break decided:", ""]
    for seed, section in sections.items():
        for cut in section["memorization_tie_breaks"]:
            lines.append(
                f"- seed {seed}, top {cut['fraction']:g}: {cut['num_selected']} blocks, cut at m = "
                f"{cut['cut_value']:.3g} shared by {cut['tied_at_cut']} blocks; the tie-break chose "
                f"{cut['decided_by_tie_break']} ({cut['tie_break_share']:.0%} of the cut)"
            )
    lines += [
        "",
        f"Memorization's sensitivity (seed {first_seed}): eps at quantiles of all recorded losses, and the "
        "snapshots thinned to fewer per epoch (each epoch's last one kept); AP against the blocks holding "
        "canary or contaminating tokens.",
        "",
        "| snapshots per epoch | eps quantile | eps | blocks with a forget event | forget events | AP (m, tie-break) "
        "| AP (m alone) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in first["sensitivity"]:
        lines.append(
            f"| {r['snapshots_per_epoch']} | {r['quantile']:g} | {r['eps']:.4g} | {r['num_with_forget_events']} | "
            f"{r['num_forget_events']} | {_mean_or_blank([r['average_precision']], '.3f')} | "
            f"{_mean_or_blank([r['average_precision_m_alone']], '.3f')} |"
        )
    figures = [f for s in sections.values() for f in s["figures"]]
    if figures:
        lines += ["", "Figures: " + ", ".join(f"`{f}`" for f in figures) + "."]
    return lines


def _mean_or_blank(values: list[float], fmt: str) -> str:
    finite = [v for v in values if v == v]  # NaN (no positive, empty cut) is left out
    return mean_std(finite, fmt) if finite else "n/a"


def _time_and_memory(report: dict) -> list[str]:
    resumed = report["invocations"] > 1
    return [
        "",
        "## Time and memory",
        "",
        f"Stage times summed over the {report['invocations']} invocations of this run (stages read back cost "
        "nothing again):"
        if resumed
        else "Stage times:",
        "",
        report["stage_table"],
        "",
        f"Peak resident memory of the main process: {report['peak_rss_mib']:.0f} MiB"
        + (" (in this invocation)." if resumed else "."),
    ]


def format_markdown(report: dict) -> str:
    """``report.md``: the table over seeds, paired differences, extraction by copies, the reading,
    the cartography of each seed, which blocks the detectors find, time and memory."""
    lines = _overview(report) + _paired_differences(report) + _by_copies(report)
    lines += ["", *format_reading(report)]
    lines += _frontier(report)
    lines += _cartography(report) + _detection(report) + _time_and_memory(report)
    return "\n".join(lines) + "\n"
