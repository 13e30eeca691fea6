"""The experiment (hf_carto.experiment, run by recipes/gpt2_wikitext.py): bad input files are
refused before any training and on every process, a failed start does not lock its settings in,
and a resumed run is compared by file content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_recipes import RECIPES

from hf_carto.experiment import InputDataError, RunFolderError, SettingsError, main, parse_arguments, runner
from hf_carto.experiment.outputs import default_dataset_id
from hf_carto.experiment.run_folder import PENDING_CONFIG, check_output_dir, run_settings


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    """A .jsonl training file big enough for the cpu-tiny data stage (with 10 membership samples)."""
    from hf_carto.data.generated import CorpusConfig, generate_corpus

    texts = generate_corpus(CorpusConfig(num_documents=300, num_canaries=0, seed=0))["text"][:]
    path = tmp_path_factory.mktemp("corpus") / "my corpus.v1.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def file_args(out: Path, train: Path, *extra: str) -> list[str]:
    # cpu-tiny with a local file instead of the generated corpus; 10 membership samples fit its held-out 5%.
    return [
        "--preset", "cpu-tiny", "--dataset_name", "", "--train_file", str(train), "--output_dir", str(out),
        "--num_membership_samples", "10", *extra,
    ]  # fmt: skip


class ReachedTraining(Exception):
    """Raised in place of the mapping run: the data stage is over and training would start."""


@pytest.fixture
def stop_at_training(monkeypatch):
    def mapping_run(*args, **kwargs):
        raise ReachedTraining

    monkeypatch.setattr(runner, "mapping_run", mapping_run)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ----------------------------------------------------------------------------------------------
# 1. Empty, null and blank inputs.


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "", r"--train_file \S*empty.txt is empty \(0 bytes\): no 'text' rows"),
        ("empty.jsonl", "", r"--train_file \S*empty.jsonl is empty \(0 bytes\): no 'text' rows"),
        (
            "nulls.jsonl",
            '{"text": null}\n{"text": "a document"}\n{"text": null}\n{"text": null}\n',
            r"--train_file \S*nulls.jsonl, column 'text': 3 of 4 rows are null \(rows 0, 2, 3, counted from 0\)",
        ),
        (
            "blank.txt",
            "\n   \n\n\t\n\n\n\n",
            r"--train_file \S*blank.txt, column 'text': all 7 rows are empty or blank \(rows 0, 1, 2, 3, 4, \.\.\.",
        ),
        ("numbers.jsonl", '{"text": 1}\n{"text": 2}\n', "column 'text' holds int64 values, not text"),
    ],
    ids=["empty-txt", "empty-jsonl", "null-rows", "blank-rows", "not-text"],
)
def test_empty_null_and_blank_training_files_are_refused_before_anything_starts(tmp_path, name, content, message):
    train = tmp_path / name
    train.write_text(content)
    out = tmp_path / "run"
    with pytest.raises(InputDataError, match=message) as refused:
        main(file_args(out, train))
    assert str(refused.value).startswith("refusing to start:")
    assert not out.exists()  # no settings recorded, nothing to clear before the corrected rerun


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"--validation_file \S*valid.jsonl is empty \(0 bytes\)"),
        (
            '{"text": "a"}\n{"text": null}\n',
            r"--validation_file \S*valid.jsonl, column 'text': 1 of 2 rows are null \(rows 1,",
        ),
    ],
    ids=["empty", "null-rows"],
)
def test_empty_and_null_validation_files_are_refused(tmp_path, corpus_file, content, message):
    valid = tmp_path / "valid.jsonl"
    valid.write_text(content)
    with pytest.raises(InputDataError, match=message):
        main(file_args(tmp_path / "run", corpus_file, "--validation_file", str(valid)))


def test_null_rows_are_counted_with_the_first_indices_only(tmp_path):
    rows = [{"body": None if i % 3 == 0 else f"document {i}"} for i in range(30)]
    train = write_lines(tmp_path / "many.jsonl", [json.dumps(r) for r in rows])
    with pytest.raises(
        InputDataError, match=r"column 'body': 10 of 30 rows are null \(rows 0, 3, 6, 9, 12, \.\.\., counted"
    ):
        main(file_args(tmp_path / "run", train, "--text_column", "body"))


@pytest.mark.slow
def test_an_empty_training_file_stops_both_processes_with_the_same_message(tmp_path):
    from launching import free_port

    train = tmp_path / "empty.jsonl"
    train.write_text("")
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [
        accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
        "--main_process_port", str(free_port()), str(RECIPES / "gpt2_wikitext.py"),
        *file_args(tmp_path / "run", train),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    message = f"refusing to start: --train_file {train} is empty (0 bytes): no 'text' rows to read"
    assert output.count(message) == 2, output[-4000:]  # each process says why it stops
    for crash in ("StopIteration", "Connection closed", "gloo", "DatasetGenerationError"):
        assert crash not in output, output[-4000:]
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------
# 2. A failed start records no settings.


def test_a_failed_start_records_no_settings_and_the_corrected_rerun_starts(
    tmp_path, corpus_file, stop_at_training, monkeypatch
):
    out = tmp_path / "run"
    # Refused while reading the inputs: nothing is written.
    with pytest.raises(InputDataError, match="has no 'body' column"):
        main(file_args(out, corpus_file, "--text_column", "body"))
    assert not (out / "run_config.json").exists()
    # Refused inside the data stage (all the documents held out): the folder that start created is gone.
    with pytest.raises(InputDataError, match="leaves none to train on"):
        main(file_args(out, corpus_file, "--validation_split_percentage", "100"))
    assert not out.exists()
    # A start that crashed half-way through its data stage leaves its folder, with no settings in it.
    real_prepare = runner.prepare_data

    def crash_while_writing(model_args, data_args, out, is_main):
        (out / "data" / "train_blocks").mkdir(parents=True)
        (out / "data" / "train_blocks" / "data-00000-of-00001.arrow").write_bytes(b"partial")
        (out / "tokenizer").mkdir()
        raise RuntimeError("killed")

    monkeypatch.setattr(runner, "prepare_data", crash_while_writing)
    with pytest.raises(RuntimeError, match="killed"):
        main(file_args(out, corpus_file))
    assert (out / PENDING_CONFIG).exists() and not (out / "run_config.json").exists()
    monkeypatch.setattr(runner, "prepare_data", real_prepare)
    # The corrected start clears that folder and records its own settings once its data is ready.
    with pytest.raises(ReachedTraining):
        main(file_args(out, corpus_file))
    recorded = json.loads((out / "run_config.json").read_text())
    assert recorded["validation_split_percentage"] == 5 and recorded["text_column"] == "text"
    assert (out / "data" / "done.json").exists()
    assert (out / "data" / "train_blocks" / "data-00000-of-00001.arrow").read_bytes() != b"partial"
    assert not (out / PENDING_CONFIG).exists()
    # A folder that no start of this recipe left is still refused.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="holds no run_config.json"):
        main(file_args(other, corpus_file))


# ----------------------------------------------------------------------------------------------
# 3. Resumption compares resolved paths and file contents.


def test_resume_accepts_another_spelling_of_the_path_and_refuses_an_edited_file(
    tmp_path, corpus_file, stop_at_training, monkeypatch
):
    data = tmp_path / "data"
    data.mkdir()
    train = data / "train.jsonl"
    train.write_bytes(corpus_file.read_bytes())
    out = tmp_path / "run"
    with pytest.raises(ReachedTraining):
        main(file_args(out, train))
    recorded = json.loads((out / "run_config.json").read_text())
    assert recorded["train_file"] == str(train.resolve())
    assert recorded["train_file_fingerprint"]["bytes"] == train.stat().st_size

    monkeypatch.chdir(data)
    with pytest.raises(ReachedTraining):  # resumed: ./train.jsonl is the same file
        main(file_args(out, Path("./train.jsonl")))
    # The same size, one character changed in place.
    content = train.read_bytes()
    at = content.index(b"e", content.index(b'"text": "') + 9)  # inside the first document
    train.write_bytes(content[:at] + b"E" + content[at + 1 :])
    with pytest.raises(
        RunFolderError, match=rf"train_file: {train.resolve()} has changed since the earlier run"
    ) as refused:
        main(file_args(out, train))
    assert "1 differ" in str(refused.value)


def test_resume_fingerprints_the_validation_file_and_a_local_tokenizer_folder(
    tmp_path, corpus_file, gpt2_tokenizer_dir
):
    import shutil

    valid = write_lines(tmp_path / "valid.txt", ["held-out text"] * 3)
    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(gpt2_tokenizer_dir, tokenizer)
    out = tmp_path / "run"
    argv = ["--output_dir", str(out), "--train_file", str(corpus_file), "--validation_file", str(valid)]
    argv += ["--tokenizer_name", str(tokenizer)]  # the default settings read this folder
    out.mkdir()
    settings = run_settings(*parse_arguments(argv))
    assert {"train_file_fingerprint", "validation_file_fingerprint", "tokenizer_name_fingerprint"} <= set(settings)
    (out / "run_config.json").write_text(json.dumps(settings))
    assert check_output_dir(out, run_settings(*parse_arguments(argv)), overwrite=False)

    write_lines(valid, ["held-out text"] * 4)
    with pytest.raises(RunFolderError, match=rf"validation_file: {valid.resolve()} has changed"):
        check_output_dir(out, run_settings(*parse_arguments(argv)), overwrite=False)
    write_lines(valid, ["held-out text"] * 3)
    vocab = next(p for p in sorted(tokenizer.iterdir()) if p.is_file())
    vocab.write_bytes(vocab.read_bytes() + b"\n")
    with pytest.raises(RunFolderError, match=rf"tokenizer_name: {tokenizer.resolve()} has changed"):
        check_output_dir(out, run_settings(*parse_arguments(argv)), overwrite=False)


# ----------------------------------------------------------------------------------------------
# 4. The default dataset id is named after the data.


def test_the_default_dataset_id_names_the_data():
    from hf_carto.publish.push import check_repo_id

    def dataset_id(*argv: str) -> str:
        _, data_args, _, _ = parse_arguments(["--output_dir", "x", *argv])
        return default_dataset_id(data_args)

    assert dataset_id() == "your-name/gpt2-wikitext-103-raw-v1-curated"  # the paper's setup
    assert dataset_id("--preset", "cpu-tiny") == "your-name/gpt2-generated-curated"
    assert (
        dataset_id("--dataset_name", "org/my_data", "--dataset_config_name", "en")
        == "your-name/gpt2-my_data-en-curated"
    )
    assert dataset_id("--preset", "cpu-wikitext2", "--train_file", "../wikitext-2-raw/wiki.train.raw") == (
        "your-name/gpt2-wiki.train-curated"
    )
    odd = dataset_id("--dataset_name", "", "--train_file", "/data/--my corpus (v2)..é" + "x" * 120 + ".git.txt")
    check_repo_id(odd)
    assert odd.startswith("your-name/gpt2-my-corpus-v2-.-x") and odd.endswith("x-curated")


# ----------------------------------------------------------------------------------------------
# 5. The command line: help, presets, refusals, a machine without the Hub.


def run_recipe(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RECIPES / f"{name}.py"), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("name", ["gpt2_wikitext", "lstm_canary"])
def test_each_recipe_prints_its_help(name):
    result = run_recipe(name, "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith("usage: ") and "--output_dir" in result.stdout and "--seeds" in result.stdout
    if name == "gpt2_wikitext":
        assert "min-k%++" in result.stdout  # the help text as written, not a format string


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "cpu-tiny", "--preset", "cpu-demo"], "--preset given twice (cpu-tiny, cpu-demo)"),
        (["--preset", "cpu-tiny", "--no_such_flag", "1"], "unrecognized arguments: --no_such_flag 1"),
        (["--preset", "cpu-tiny", "--train_file", "/nonexistent"], "--train_file /nonexistent: no such file"),
    ],
    ids=["two-presets", "unknown-flag", "missing-file"],
)
def test_a_refused_command_line_exits_2_with_its_message_alone(tmp_path, args, message):
    result = run_recipe("gpt2_wikitext", *args, "--output_dir", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_two_different_presets_are_refused_and_a_repeated_one_is_not():
    with pytest.raises(SettingsError, match=r"--preset given twice \(cpu-tiny, cpu-demo\): a run takes one preset"):
        parse_arguments(["--preset", "cpu-tiny", "--output_dir", "x", "--preset=cpu-demo"])
    _, data_args, _, _ = parse_arguments(["--preset", "cpu-tiny", "--preset", "cpu-tiny"])
    assert data_args.generated_documents == 150


def test_a_train_file_replaces_the_generated_corpus_of_a_preset(tmp_path, corpus_file, stop_at_training):
    from datasets import load_from_disk

    from hf_carto.core.columns import PLANTED_NAMES

    _, data_args, _, _ = parse_arguments(["--preset", "cpu-tiny", "--train_file", str(corpus_file)])
    assert data_args.dataset_name is None and data_args.train_file == str(corpus_file)
    out = tmp_path / "run"
    argv = ["--preset", "cpu-tiny", "--train_file", str(corpus_file), "--output_dir", str(out)]
    with pytest.raises(ReachedTraining):
        main([*argv, "--num_membership_samples", "10"])
    recorded = json.loads((out / "run_config.json").read_text())
    assert recorded["dataset_name"] is None and recorded["train_file"] == str(corpus_file.resolve())
    # The generated corpus plants duplicates and noise documents; the file's blocks hold none.
    truth = set(load_from_disk(str(out / "data" / "train_blocks"))["truth"][:])
    assert not truth & {PLANTED_NAMES.index("duplicate"), PLANTED_NAMES.index("noise")}
    # Both corpora named on the command line are still two corpora.
    with pytest.raises(SettingsError, match="two corpora; choose one"):
        main([*argv, "--dataset_name", "generated"])


@pytest.fixture
def no_hub_cache(tmp_path, monkeypatch):
    """Empty Hub and datasets caches, and the working directory in tmp_path (the default
    --output_dir is relative to it)."""
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache" / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache" / "datasets")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


@pytest.mark.parametrize("hub", ["offline", "unreachable"])
def test_the_default_run_without_the_hub_says_what_to_run_instead(tmp_path, monkeypatch, no_hub_cache, hub):
    import time

    import datasets.config
    from huggingface_hub import constants
    from launching import free_port

    offline = hub == "offline"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", offline)
    if not offline:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nobody listens there
    start = time.monotonic()
    with pytest.raises(InputDataError) as refused:
        main([])
    assert time.monotonic() - start < 30
    message = str(refused.value)
    assert "\n" not in message
    assert "--dataset_name wikitext" in message and "--tokenizer_name gpt2" in message
    assert ("HF_HUB_OFFLINE" in message) == offline and (constants.ENDPOINT in message) != offline
    assert "--preset cpu-demo" in message and "--train_file" in message
    assert not (tmp_path / "outputs").exists()


def test_sources_in_the_local_cache_need_no_hub(monkeypatch, no_hub_cache):
    import datasets.config
    from huggingface_hub import constants

    from hf_carto.experiment.arguments import check_hub_sources

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    model_args, data_args, _, _ = parse_arguments([])
    (no_hub_cache / "hub" / "models--gpt2" / "snapshots" / "abc").mkdir(parents=True)
    with pytest.raises(InputDataError) as refused:
        check_hub_sources(model_args, data_args)
    assert "start: --dataset_name wikitext comes from the Hugging Face Hub" in str(refused.value)  # alone
    (no_hub_cache / "datasets" / "wikitext").mkdir(parents=True)
    check_hub_sources(model_args, data_args)  # both cached: the libraries read them offline
    check_hub_sources(*parse_arguments(["--preset", "cpu-tiny"])[:2])  # nothing from the Hub


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--preset cpu-demo"),
        (["--train_file", "/nonexistent"], "--train_file /nonexistent: no such file"),
        (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag 1"),
    ],
    ids=["no-flags", "missing-file", "unknown-flag"],
)
def test_refusals_under_accelerate_launch_end_with_the_message_alone(tmp_path, args, message):
    import time

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE"):
        env.pop(name, None)
    accelerate = str(Path(sys.executable).parent / "accelerate")
    launch = [accelerate, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    script = [str(RECIPES / "gpt2_wikitext.py"), *args]
    # accelerate's launcher turns any failed child into its own CalledProcessError traceback unless
    # --quiet: the child's exit status is read from that report, its own output from the quiet run.
    # The two launches are independent: they run at the same time (each is mostly start-up).
    start = time.monotonic()
    with (
        _started([*launch, *script], env=env, cwd=tmp_path) as loud_process,
        _started([*launch, "--quiet", *script], env=env, cwd=tmp_path) as quiet_process,
    ):
        loud = _finished(loud_process, timeout=300)
        assert time.monotonic() - start < 120
        quiet = _finished(quiet_process, timeout=300)
    assert "returned non-zero exit status 2" in loud.stderr, loud.stderr[-3000:]
    assert quiet.returncode != 0
    assert "Traceback" not in quiet.stderr, quiet.stderr[-3000:]
    assert message in quiet.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "outputs").exists()


def _started(cmd: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _finished(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """What ``subprocess.run(..., capture_output=True, timeout=timeout)`` returns, for a started process."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
