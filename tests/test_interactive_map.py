"""The interactive data map: a self-contained page, checked in a real headless browser."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from browser import browser  # noqa: F401  (the fixture)
from datasets import ClassLabel, Dataset

from hf_carto.cli import main
from hf_carto.columns import PLANTED_NAMES
from hf_carto.curation import add_cartography, fit_cartography
from hf_carto.interactive_map import write_interactive_map
from hf_carto.io import save_scored

N, T, CANARIES = 150, 6, 12


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.0, 3.0, size=(N, T))
    truth = rng.choice([0, 1, 3], size=N)
    truth[-CANARIES:] = PLANTED_NAMES.index("canary")
    texts = [f"row {i} says hello " + "word " * int(rng.integers(1, 60)) for i in range(N)]
    texts[3] = "a row that tries to close the page early </script><b>not markup</b>"
    columns = {f"carto_loss_{t + 1}": losses[:, t] for t in range(T)}
    dataset = Dataset.from_dict(
        {
            "sample_id": np.arange(N, dtype=np.int64) * 3 + 11,
            "text": texts,
            "truth": truth,
            "is_canary": truth == PLANTED_NAMES.index("canary"),
            **columns,
            "carto_score_final_loss": losses[:, -1],
        }
    )
    dataset = dataset.cast_column("truth", ClassLabel(names=PLANTED_NAMES))
    fit = fit_cartography(dataset, burn_in=2, eps=1.0)
    return add_cartography(dataset, fit), fit


def embedded(path) -> dict:
    page = path.read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="carto-data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


def test_the_page_is_self_contained_and_leaves_canaries_out(scored, tmp_path):
    dataset, fit = scored
    path = write_interactive_map(dataset, tmp_path / "map.html", fit=fit)
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=|<link|@import|url\(|https?://(?!www\.w3\.org/2000/svg)", page)
    data = embedded(path)
    drawn = ~np.asarray(dataset["is_canary"])
    assert data["sample_id"] == np.asarray(dataset["sample_id"])[drawn].tolist()
    assert data["tau_x"] == fit.tau_d and data["tau_y"] == fit.tau_m
    assert not any("canary" in p for p in data["planted"])
    with_canaries = embedded(write_interactive_map(dataset, tmp_path / "all.html", include_canaries=True))
    assert len(with_canaries["sample_id"]) == N


def test_a_detector_on_the_y_axis_and_planted_colours(scored, tmp_path):
    dataset, _ = scored
    data = embedded(
        write_interactive_map(dataset, tmp_path / "m.html", y="carto_score_final_loss", color_by="planted")
    )
    drawn = ~np.asarray(dataset["is_canary"])
    np.testing.assert_allclose(data["y_plot"], np.asarray(dataset["carto_score_final_loss"])[drawn])
    assert [g["name"] for g in data["groups"]] == PLANTED_NAMES
    assert data["group"] == np.asarray(dataset["truth"])[drawn].tolist()


def test_hovering_shows_the_rows_leakage_columns_when_it_has_them(scored, tmp_path):
    dataset, _ = scored
    assert "carto_leak_loss" not in embedded(write_interactive_map(dataset, tmp_path / "a.html"))["scores"]
    rng = np.random.default_rng(1)
    extractable = rng.random(N) < 0.3
    loss = rng.random(N).astype(np.float32)
    leaked = dataset.add_column("carto_leak_extractable", extractable).add_column("carto_leak_loss", loss)
    data = embedded(write_interactive_map(leaked, tmp_path / "b.html"))
    drawn = ~np.asarray(dataset["is_canary"])
    assert data["scores"]["carto_leak_extractable"] == extractable[drawn].astype(float).tolist()
    np.testing.assert_allclose(data["scores"]["carto_leak_loss"], loss[drawn], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": "carto_loss_1"}, "y must be"),
        ({"color_by": "rainbow"}, "color_by"),
    ],
)
def test_bad_options_are_refused(scored, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_interactive_map(scored[0], tmp_path / "x.html", **kwargs)


def test_unscored_or_unplanted_data_is_refused(scored, tmp_path):
    with pytest.raises(ValueError, match="score it first"):
        write_interactive_map(Dataset.from_dict({"carto_loss_1": [1.0]}), tmp_path / "x.html")
    with pytest.raises(ValueError, match="'truth' column"):
        write_interactive_map(scored[0].remove_columns("truth"), tmp_path / "x.html", color_by="planted")


def test_the_command_line_writes_the_map(scored, tmp_path, capsys):
    dataset, fit = scored
    save_scored(dataset, tmp_path / "scored", fit=fit)
    assert main(["map", str(tmp_path / "scored"), str(tmp_path / "map.html")]) == 0
    assert embedded(tmp_path / "map.html")["tau_x"] == fit.tau_d
    assert main(["map", str(tmp_path / "scored"), str(tmp_path / "bad.html"), "--y", "nope"]) == 2
    assert "y must be" in capsys.readouterr().err


@pytest.mark.slow
def test_the_page_works_in_a_real_browser(scored, tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    dataset, fit = scored
    path = write_interactive_map(dataset, tmp_path / "map.html", fit=fit)
    browser.get_log("browser")  # drop what earlier pages left
    browser.get(path.resolve().as_uri())
    points = browser.find_elements(By.CSS_SELECTOR, "circle.point")
    assert len(points) == N - CANARIES
    problems = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert problems == []

    # The last point is drawn on top, so the pointer over its centre is over it.
    expected = points[-1].get_attribute("data-sample-id")
    ActionChains(browser).move_to_element(points[-1]).perform()
    tooltip = browser.find_element(By.ID, "tooltip")
    assert tooltip.is_displayed()
    assert tooltip.text.splitlines()[0] == f"sample_id {expected}"
    drawn_ids = np.asarray(dataset["sample_id"])[~np.asarray(dataset["is_canary"])]
    assert int(expected) == drawn_ids[-1]

    quadrants = np.asarray(dataset["carto_quadrant"])[~np.asarray(dataset["is_canary"])]
    browser.find_element(By.ID, "filter-hotspot_memorized").click()
    visible = browser.execute_script("return document.querySelectorAll('circle.point:not(.hidden)').length")
    assert visible == int((quadrants == 2).sum()) > 0
    browser.find_element(By.ID, "filter-all").click()
    visible = browser.execute_script("return document.querySelectorAll('circle.point:not(.hidden)').length")
    assert visible == N - CANARIES
    assert browser.get_log("browser") == []
