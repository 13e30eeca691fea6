"""Publish and load back through the real client code: huggingface_hub pushes to a local stand-in of
the Hub's write API (tests/hub_standin.py), and `datasets.load_dataset` reads through olah, a real
Hub mirror server run offline over the resulting git repositories. Every client runs in a fresh
process with a fresh HF_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from hf_carto import add_cartography, apply_interventions, cartography_summary, fit_cartography
from hf_carto.data.generated import CorpusConfig, generate_corpus
from hf_carto.score.scored_io import save_scored

sys.path.insert(0, str(Path(__file__).parent))
from hub_standin import HubStandIn  # noqa: E402
from launching import free_port  # noqa: E402

pytestmark = pytest.mark.slow
TOKEN = "hf_testtoken_never_printed_123"
REPO = "someone/curated"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    mirrors.mkdir()
    port = free_port()
    config = root / "olah.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nmirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\nmirrors-path = ["{mirrors}"]\nrepos-path = "{root / "cache"}"\n'
        "[accessibility]\noffline = true\n"
    )
    olah = subprocess.Popen(
        [sys.executable, "-m", "olah.server", "-c", str(config), "--metadata-cache-ttl", "0"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    read_endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(read_endpoint + "/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            time.sleep(0.2)
    else:
        olah.kill()
        pytest.fail("olah did not start")
    with HubStandIn(mirrors) as write:
        yield write, read_endpoint, root
    olah.terminate()
    olah.wait(timeout=10)


@pytest.fixture(scope="module")
def scored_dir(tmp_path_factory):
    corpus = generate_corpus(
        CorpusConfig(num_documents=250, num_duplicate_groups=3, num_canaries=2, num_noise_documents=4, seed=3)
    )
    rng = np.random.default_rng(1)
    for t in range(1, 5):
        corpus = corpus.add_column(f"carto_loss_{t}", rng.choice([0.3, 1.0, 2.5], size=len(corpus)).astype(np.float32))
    corpus = corpus.add_column("sample_id", np.arange(len(corpus)))
    fit = fit_cartography(corpus, burn_in=2, eps=1.5)
    scored = apply_interventions(add_cartography(corpus, fit), alpha=0.5)
    out = tmp_path_factory.mktemp("scored") / "scored"
    save_scored(scored, out, fit=fit, summary=cartography_summary(scored, fit))
    return out


def client_env(endpoint: str, root: Path) -> dict[str, str]:
    home = root / f"hf_home_{time.monotonic_ns()}"
    return {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def push(args: list[str], endpoint: str, root: Path) -> subprocess.CompletedProcess:
    cli = [sys.executable, "-c", "import sys; from hf_carto.commands.main import main; sys.exit(main(sys.argv[1:]))"]
    result = subprocess.run(
        cli + ["push", *args], capture_output=True, text=True, env=client_env(endpoint, root), timeout=120
    )
    assert TOKEN not in result.stdout + result.stderr
    return result


LOADER = """
import json, sys
from datasets import load_dataset
ds = load_dataset(sys.argv[1], split="train", revision=sys.argv[2])
json.dump({"rows": ds.to_list(), "features": ds.features.to_dict()}, open(sys.argv[3], "w"))
"""


def load_in_fresh_process(endpoint: str, root: Path, revision: str, repo: str = REPO) -> dict:
    out = root / f"loaded_{revision}.json"
    result = subprocess.run(
        [sys.executable, "-c", LOADER, repo, revision, str(out)],
        capture_output=True,
        text=True,
        env=client_env(endpoint, root),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def commit_of(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1].split()[-1]


def test_push_load_push_again_and_both_revisions_load(servers, scored_dir):
    write, read_endpoint, root = servers
    first = commit_of(push([str(scored_dir), REPO], write.endpoint, root))
    export = scored_dir.with_name("scored.hub")
    expected = load_from_disk(str(scored_dir))
    expected = expected.filter(lambda s: s == "", input_columns="secret").remove_columns(
        ["secret", "truth", "group", "repetitions"]
    )
    # Published ids are renumbered densely, so that their gaps do not show where the canaries were.
    expected = expected.map(lambda _, i: {"sample_id": i}, with_indices=True, features=expected.features)
    loaded = load_in_fresh_process(read_endpoint, root, first)
    assert loaded["rows"] == expected.to_list()
    assert loaded["features"] == expected.features.to_dict()
    assert loaded["features"]["carto_quadrant"]["names"] == [
        "stable_easy",
        "ambiguous_hard",
        "hotspot_memorized",
        "noisy_outlier",
    ]
    assert any("lfs/objects/batch" in r for r in write.requests)  # data went through LFS

    # Publishing the same export again is idempotent: no new commit.
    assert commit_of(push([str(export), REPO], write.endpoint, root)) == first

    # A changed dataset makes a new commit; the earlier revision stays loadable.
    smaller = root / "smaller"
    save_scored(load_from_disk(str(scored_dir)).select(range(100)), smaller)
    second = commit_of(push([str(smaller), REPO, "--message", "second"], write.endpoint, root))
    assert second != first
    assert len(load_in_fresh_process(read_endpoint, root, second)["rows"]) < len(loaded["rows"])
    assert load_in_fresh_process(read_endpoint, root, first)["rows"] == loaded["rows"]


def test_failed_pushes_keep_the_export_and_a_retry_succeeds(servers, scored_dir, tmp_path):
    write, _, root = servers
    repo = "someone/retry"
    variant = tmp_path / "variant"  # content the store has not seen, so its LFS upload really happens
    save_scored(load_from_disk(str(scored_dir)).select(range(150)), variant)
    export = tmp_path / "export"
    write.fail_uploads = True
    failed = push([str(variant), repo, "--export-dir", str(export)], write.endpoint, root)
    write.fail_uploads = False
    assert failed.returncode == 1
    assert "the export in" in failed.stderr and "is intact" in failed.stderr
    files = {p.relative_to(export): p.read_bytes() for p in export.rglob("*") if p.is_file()}
    write.fail_commits = True
    assert push([str(export), repo], write.endpoint, root).returncode == 1
    write.fail_commits = False
    assert {p.relative_to(export): p.read_bytes() for p in export.rglob("*") if p.is_file()} == files
    commit_of(push([str(export), repo], write.endpoint, root))

    # A server that has gone away: a clear error, nothing lost.
    gone = push([str(export), repo], f"http://127.0.0.1:{free_port()}", root)
    assert gone.returncode == 1 and "failed" in gone.stderr
    assert {p.relative_to(export): p.read_bytes() for p in export.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize("repo_id", ["no-namespace", "bad//id", "x/" + "y" * 200])
def test_invalid_repo_ids(scored_dir, repo_id, capsys):
    from hf_carto.commands.main import main

    assert main(["push", str(scored_dir), repo_id, "--export-dir", str(scored_dir.with_name("x.hub"))]) == 2
    assert "not a valid Hub repository id" in capsys.readouterr().err
    assert not scored_dir.with_name("x.hub").exists()  # refused before any export


def test_model_card_renders_and_is_pushed_with_the_model(servers, tmp_path):
    from huggingface_hub import ModelCard

    from hf_carto.core.models import tiny_gpt2
    from hf_carto.publish.model_card import render_model_card

    write, _, root = servers
    card = render_model_card(
        repo_id="someone/tiny-curated",
        base_model="gpt2",
        dataset_id=REPO,
        license="mit",
        curation={"intervention": "top 5% by memorization removed", "eps": 4.7055, "burn-in": 2},
        results=[
            {
                "arm": "no_intervention",
                "extraction_success": [1.0, 0.5],
                "mean_exposure": [12.1, 11.9],
                "mia_auc": [0.71, 0.69],
                "perplexity": [10.0, 11.0],
            },
            {"arm": "gendatacarto", "extraction_success": [0.5, 0.5], "perplexity": [10.2, 11.1]},
        ],
        conclusion="Extraction fell from 75% to 50%; the random arm at the same budget is the control.",
    )
    parsed = ModelCard(card)
    assert parsed.data.base_model == "gpt2" and parsed.data.datasets == [REPO] and parsed.data.license == "mit"
    assert "| no_intervention | 75.0% ± 25.0% | 12.00 ± 0.10 | - | 0.700 ± 0.010 | - | 10.50 ± 0.50 |" in card
    assert "2 seed(s), with the standard deviation" in card and "| eps | 4.7055 |" in card

    model_dir = tmp_path / "model"
    tiny_gpt2(50, n_layer=1, n_embd=8, n_head=2, n_positions=16).save_pretrained(model_dir)
    (tmp_path / "card.md").write_text(card)
    script = (
        "import sys; from pathlib import Path; from hf_carto.publish.push import push_model; "
        "r = push_model(sys.argv[1], 'someone/tiny-curated', Path(sys.argv[2]).read_text()); print(r.commit)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(model_dir), str(tmp_path / "card.md")],
        capture_output=True,
        text=True,
        env=client_env(write.endpoint, root),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr
    repo = write.repo_path("someone/tiny-curated", "models")
    assert (repo / "README.md").read_text() == card
    assert (repo / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_gpt2_recipe_publishes_its_curated_dataset_and_model(servers, tmp_path):
    """`--push_to_hub` at the end of the recipe: the dataset loads back, the model has its card."""
    import pyarrow.parquet as pq

    write, read_endpoint, root = servers
    out = tmp_path / "run"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "gpt2_wikitext.py"
    args = ["--preset", "cpu-tiny", "--output_dir", str(out), "--push_to_hub"]
    args += ["--hub_model_id", "someone/tiny-gpt2-curated", "--hub_dataset_id", "someone/recipe-curated"]
    result = subprocess.run(
        [sys.executable, str(recipe), *args],
        capture_output=True,
        text=True,
        env=client_env(write.endpoint, root),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert TOKEN not in result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["pushed"]) == {"dataset", "model"}
    model_repo = write.repo_path("someone/tiny-gpt2-curated", "models")
    assert (model_repo / "README.md").read_text() == (out / "model_card.md").read_text()
    # The default, recommended policy: its arm is trained, published, and the curated data follows it.
    from hf_carto import RECOMMENDED, load_scored
    from hf_carto.core.columns import KEEP, LOSS_WEIGHT, score_column

    trained = out / "seed0" / "arms" / RECOMMENDED.arm_name / "model" / "model.safetensors"
    assert (model_repo / "model.safetensors").read_bytes() == trained.read_bytes()
    assert RECOMMENDED.arm_name in (model_repo / "README.md").read_text()
    curated, _ = load_scored(out / "curated")
    scores, keep = np.asarray(curated[score_column(RECOMMENDED.detector)]), np.asarray(curated[KEEP])
    treated = np.asarray(curated[LOSS_WEIGHT]) < 1  # pruned (weight 0) or down-weighted
    k = int(np.floor(RECOMMENDED.budget * len(curated) + 0.5))
    assert treated.sum() == k > 0 and scores[treated].min() >= scores[~treated].max()
    assert np.allclose(np.asarray(curated[LOSS_WEIGHT])[treated], RECOMMENDED.weight)
    assert (keep == ~treated).all() if RECOMMENDED.weight == 0 else keep.all()
    loaded = load_in_fresh_process(read_endpoint, root, "main", repo="someone/recipe-curated")
    exported = pq.read_table(next((out / "hub" / "data").glob("*.parquet")))
    assert len(loaded["rows"]) == exported.num_rows > 0
    assert [r["sample_id"] for r in loaded["rows"]] == exported.column("sample_id").to_pylist()
    assert loaded["features"]["carto_quadrant"]["names"][2] == "hotspot_memorized"


SENTINEL = "hf_sentinel_0451_must_reach_no_file"


def files_holding(needle: str, *folders: Path) -> list[Path]:
    """Every file under ``folders`` whose bytes contain ``needle`` (git's own store left out: its
    objects are compressed; the files of the last commit are what the Hub serves)."""
    return [
        p
        for folder in folders
        for p in folder.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(folder).parts and needle.encode() in p.read_bytes()
    ]


def test_a_hub_token_on_the_command_line_reaches_no_file_local_or_pushed(servers, tmp_path):
    """`--push_to_hub --hub_token T`: T is in no file of the run folder and in no file uploaded (the
    model went up with its training_args.bin, the file the Trainer pickles its arguments into). The
    upload authenticates with the login or HF_TOKEN (the environment here)."""
    import torch

    write, _, root = servers
    out = tmp_path / "run"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "gpt2_wikitext.py"
    args = ["--preset", "cpu-tiny", "--output_dir", str(out), "--push_to_hub", "--hub_token", SENTINEL]
    args += ["--hub_model_id", "someone/token-model", "--hub_dataset_id", "someone/token-data"]
    result = subprocess.run(
        [sys.executable, str(recipe), *args],
        capture_output=True,
        text=True,
        env=client_env(write.endpoint, root),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert SENTINEL not in result.stdout + result.stderr
    model_repo = write.repo_path("someone/token-model", "models")
    dataset_repo = write.repo_path("someone/token-data")
    pickled = [p.relative_to(out) for p in out.rglob("training_args.bin")]
    assert len(pickled) >= 3 and (model_repo / "training_args.bin").exists()  # what could hold it was written
    assert files_holding(SENTINEL, out) == []
    assert files_holding(SENTINEL, model_repo, dataset_repo, write.lfs_store) == []
    uploaded = torch.load(model_repo / "training_args.bin", weights_only=False)
    assert uploaded.hub_token is None and uploaded.push_to_hub is False
    # The check itself finds the token where it is.
    (tmp_path / "canary.bin").write_bytes(b"\0" + SENTINEL.encode() + b"\0")
    assert files_holding(SENTINEL, tmp_path) == [tmp_path / "canary.bin"]


CARTO_TRAINER_PUSH = """
import sys
from pathlib import Path

import numpy as np
from transformers import TrainingArguments

sys.path.insert(0, sys.argv[3])
from record_tiny import collate, make_dataset, make_model
from hf_carto.curation.weighted_trainer import CartoTrainer

data = make_dataset(16, 12, 50, 0)
n = len(data)
data = data.add_column("carto_loss_weight", np.full(n, 0.5, np.float32))
data = data.add_column("carto_keep", np.ones(n, bool))
args = TrainingArguments(
    output_dir=sys.argv[1], hub_token=sys.argv[2], push_to_hub=True, hub_model_id="someone/carto-trainer",
    hub_strategy="every_save", save_strategy="steps", save_steps=2, max_steps=4, per_device_train_batch_size=4,
    report_to="none", use_cpu=True, disable_tqdm=True,
)
trainer = CartoTrainer(model=make_model(50, 12, 0), args=args, train_dataset=data, data_collator=collate)
trainer.train()
trainer.push_to_hub(blocking=True)
assert args.hub_token == sys.argv[2]  # the caller's arguments are left as they were
print("pushed")
"""


def test_carto_trainer_keeps_a_hub_token_in_its_arguments_out_of_every_file_it_saves_or_pushes(servers, tmp_path):
    """The Trainer's own saves and pushes (checkpoints every 2 steps, each pushed, then the final
    push): no file of the output folder or of the model repository holds the token."""
    write, _, root = servers
    out = tmp_path / "out"
    launch = Path(__file__).parent / "launch"
    result = subprocess.run(
        [sys.executable, "-c", CARTO_TRAINER_PUSH, str(out), SENTINEL, str(launch)],
        capture_output=True,
        text=True,
        env=client_env(write.endpoint, root),
        timeout=300,
    )
    assert result.returncode == 0 and "pushed" in result.stdout, result.stderr[-3000:]
    assert SENTINEL not in result.stdout + result.stderr
    assert "the Hub token in the training arguments is not kept" in result.stderr
    repo = write.repo_path("someone/carto-trainer", "models")
    assert len(list(out.rglob("training_args.bin"))) >= 3 and (repo / "training_args.bin").exists()
    assert (repo / "model.safetensors").exists()
    assert files_holding(SENTINEL, out) == []
    assert files_holding(SENTINEL, repo, write.lfs_store) == []
