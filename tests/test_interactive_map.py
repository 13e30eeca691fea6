"""The interactive data map: a self-contained page, checked in a real headless browser."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from browser import browser, console_problems, open_page  # noqa: F401  (browser: the fixture)
from datasets import ClassLabel, Dataset

from hf_carto.commands.main import main
from hf_carto.core.columns import PLANTED_NAMES
from hf_carto.publish.interactive_map import write_interactive_map
from hf_carto.score.cartography import add_cartography, fit_cartography
from hf_carto.score.scored_io import save_scored

N, T, CANARIES = 150, 6, 12

# Texts that break a page which embeds them carelessly: each must come back exactly.
HOSTILE = [
    "<!--<script> never closed",
    "</script><script>document.title = 'taken'</script>",
    "<!--",
    "-->",
    "<!--<SCRIPT>",
    "line\u2028separator",
    "paragraph\u2029separator",
    'quotes " \' ` and backslashes \\ \\\\ \\u003c \\n \\" end',
    "outside the BMP: \U0001f600 \U0001f9ea \U0001d4b3",
    "&amp; &lt; & <b>not bold</b> ]]> <![CDATA[ x ]]>",
    "two\nlines\tand a tab",
]
HOSTILE_TITLE = 'Map </title><!--<script> & "quoted" \U0001f600'


def _score(columns: dict, losses: np.ndarray) -> tuple[Dataset, object]:
    dataset = Dataset.from_dict({**columns, **{f"carto_loss_{t + 1}": losses[:, t] for t in range(losses.shape[1])}})
    if "truth" in columns:
        dataset = dataset.cast_column("truth", ClassLabel(names=PLANTED_NAMES))
    fit = fit_cartography(dataset, burn_in=2, eps=1.0)
    return add_cartography(dataset, fit), fit


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.0, 3.0, size=(N, T))
    truth = rng.choice([0, 1, 3], size=N)
    truth[-CANARIES:] = PLANTED_NAMES.index("canary")
    texts = [f"row {i} says hello " + "word " * int(rng.integers(1, 30)) for i in range(N)]
    texts[3] = "a row that tries to close the page early </script><b>not markup</b>"
    for i in range(N - CANARIES, N):
        texts[i] = f"the secret code is {1000 + i}"
    return _score(
        {
            "sample_id": np.arange(N, dtype=np.int64) * 3 + 11,
            "text": texts,
            "truth": truth,
            "is_canary": truth == PLANTED_NAMES.index("canary"),
            "carto_score_final_loss": losses[:, -1],
        },
        losses,
    )


@pytest.fixture(scope="module")
def hostile():
    rng = np.random.default_rng(1)
    losses = rng.uniform(0.0, 3.0, size=(len(HOSTILE), T))
    return _score({"sample_id": np.arange(len(HOSTILE), dtype=np.int64) + 100, "text": HOSTILE}, losses)


def embedded_text(path) -> str:
    page = path.read_text(encoding="utf-8")
    return re.search(r'<script type="application/json" id="carto-data">(.*?)</script>', page, re.S).group(1)


def embedded(path) -> dict:
    return json.loads(embedded_text(path))


def hover_every_point(browser) -> dict[int, str]:  # noqa: F811
    """The tooltip's text for every drawn point, by sample_id, through the page's own mouseover
    handler (dispatched on each circle: overlapping points would hide one another from a pointer)."""
    pairs = browser.execute_script(
        """
        const tooltip = document.getElementById("tooltip");
        return Array.from(document.querySelectorAll("circle.point")).map(c => {
          const r = c.getBoundingClientRect();
          c.dispatchEvent(new MouseEvent("mouseover", { bubbles: true, clientX: r.x, clientY: r.y }));
          return [Number(c.getAttribute("data-sample-id")), tooltip.textContent];
        });
        """
    )
    return {int(sample_id): text for sample_id, text in pairs}


def test_the_page_is_self_contained(scored, tmp_path):
    dataset, fit = scored
    path = write_interactive_map(dataset, tmp_path / "map.html", fit=fit, include_text=True)
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=|<link|@import|url\(|https?://(?!www\.w3\.org/2000/svg)", page)
    assert embedded(path)["tau_x"] == fit.tau_d and embedded(path)["tau_y"] == fit.tau_m


def test_by_default_the_page_holds_neither_texts_nor_ground_truth(scored, tmp_path):
    dataset, fit = scored
    path = write_interactive_map(dataset, tmp_path / "map.html", fit=fit)
    page = path.read_text(encoding="utf-8")
    data = embedded(path)
    assert data["snippet"] is None and data["planted"] is None
    assert "says hello" not in page and "not markup" not in page and "secret code" not in page
    assert not [name for name in PLANTED_NAMES if f'"{name}"' in page]
    assert "is_canary" not in page and "carto_canary_id" not in page
    # Every row is drawn, canaries too: the ids the page lacks would otherwise name the canary rows.
    assert data["sample_id"] == list(dataset["sample_id"])
    assert "canary" not in data["note"]


def test_texts_and_ground_truth_only_when_asked_for(scored, tmp_path):
    dataset, _ = scored
    canary = np.asarray(dataset["is_canary"])
    texts = np.asarray(dataset["text"], dtype=object)

    data = embedded(write_interactive_map(dataset, tmp_path / "t.html", include_text=True))
    assert data["snippet"] == [t[:199] + "…" if len(t) > 200 else t for t in texts[~canary]]
    assert data["sample_id"] == np.asarray(dataset["sample_id"])[~canary].tolist()
    assert f"{CANARIES} canary rows left out" in data["note"] and data["planted"] is None

    data = embedded(write_interactive_map(dataset, tmp_path / "c.html", include_text=True, include_canaries=True))
    assert len(data["sample_id"]) == N and data["snippet"][-1] == texts[-1]

    data = embedded(write_interactive_map(dataset, tmp_path / "g.html", include_ground_truth=True))
    assert data["planted"] == [PLANTED_NAMES[k] for k in dataset["truth"]] and data["snippet"] is None


def test_a_detector_on_the_y_axis_and_planted_colours(scored, tmp_path):
    dataset, _ = scored
    data = embedded(
        write_interactive_map(
            dataset, tmp_path / "m.html", y="carto_score_final_loss", color_by="planted", include_ground_truth=True
        )
    )
    np.testing.assert_allclose(data["y_plot"], dataset["carto_score_final_loss"])
    assert [g["name"] for g in data["groups"]] == PLANTED_NAMES
    assert data["group"] == list(dataset["truth"])


def test_jittered_memorization_stays_between_0_and_1(scored, tmp_path):
    dataset, fit = scored
    m = np.asarray(dataset["carto_memorization"])
    assert (m == 0).any()  # the edge the jitter used to cross
    y = np.asarray(embedded(write_interactive_map(dataset, tmp_path / "m.html", fit=fit))["y_plot"])
    assert y.min() >= 0 and y.max() <= 1
    assert np.abs(y - m).max() <= 0.3 / (fit.num_snapshots - 1) + 1e-12
    assert len(np.unique(y[m == 0])) == (m == 0).sum()  # still spread out, not piled on 0


def test_any_text_is_embedded_as_json_the_html_parser_cannot_read_as_markup(hostile, tmp_path):
    dataset, _ = hostile
    path = write_interactive_map(dataset, tmp_path / "map.html", include_text=True, title=HOSTILE_TITLE)
    block = embedded_text(path)
    assert not set(block) & set("<>&\u2028\u2029")
    data = json.loads(block)
    assert data["snippet"] == HOSTILE and data["title"] == HOSTILE_TITLE
    head = path.read_text(encoding="utf-8").split("<body>")[0]
    assert "<title>Map &lt;/title&gt;&lt;!--&lt;script&gt; &amp; &quot;quoted&quot; \U0001f600</title>" in head


def test_hovering_shows_the_rows_leakage_columns_when_it_has_them(scored, tmp_path):
    dataset, _ = scored
    assert "carto_leak_loss" not in embedded(write_interactive_map(dataset, tmp_path / "a.html"))["scores"]
    rng = np.random.default_rng(1)
    extractable = rng.random(N) < 0.3
    loss = rng.random(N).astype(np.float32)
    leaked = dataset.add_column("carto_leak_extractable", extractable).add_column("carto_leak_loss", loss)
    data = embedded(write_interactive_map(leaked, tmp_path / "b.html"))
    assert data["scores"]["carto_leak_extractable"] == extractable.tolist()  # JSON true/false
    np.testing.assert_allclose(data["scores"]["carto_leak_loss"], loss, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": "carto_loss_1"}, "y must be"),
        ({"color_by": "rainbow"}, "color_by"),
        ({"color_by": "planted"}, "include_ground_truth=True"),
    ],
)
def test_bad_options_are_refused(scored, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_interactive_map(scored[0], tmp_path / "x.html", **kwargs)
    assert not (tmp_path / "x.html").exists()


def test_unscored_or_unplanted_data_is_refused(scored, tmp_path):
    with pytest.raises(ValueError, match="score it first"):
        write_interactive_map(Dataset.from_dict({"carto_loss_1": [1.0]}), tmp_path / "x.html")
    with pytest.raises(ValueError, match="'truth' column"):
        write_interactive_map(
            scored[0].remove_columns("truth"), tmp_path / "x.html", color_by="planted", include_ground_truth=True
        )


def test_the_command_line_writes_the_map(scored, tmp_path, capsys):
    dataset, fit = scored
    save_scored(dataset, tmp_path / "scored", fit=fit)
    scored_dir, out = str(tmp_path / "scored"), tmp_path / "map.html"
    assert main(["map", scored_dir, str(out)]) == 0
    data = embedded(out)
    assert data["tau_x"] == fit.tau_d and data["snippet"] is None and data["planted"] is None
    assert main(["map", scored_dir, str(out), "--include-text"]) == 0
    assert embedded(out)["snippet"][0] == dataset[0]["text"]
    assert main(["map", scored_dir, str(out), "--color-by", "planted", "--include-ground-truth"]) == 0
    assert embedded(out)["planted"] == [PLANTED_NAMES[k] for k in dataset["truth"]]
    capsys.readouterr()
    assert main(["map", scored_dir, str(tmp_path / "bad.html"), "--color-by", "planted"]) == 2
    assert "--include-ground-truth" in capsys.readouterr().err
    assert main(["map", scored_dir, str(tmp_path / "bad.html"), "--y", "nope"]) == 2
    assert "y must be" in capsys.readouterr().err
    assert not (tmp_path / "bad.html").exists()


@pytest.mark.slow
def test_the_page_works_in_a_real_browser(scored, tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    dataset, fit = scored
    open_page(browser, write_interactive_map(dataset, tmp_path / "map.html", fit=fit))
    points = browser.find_elements(By.CSS_SELECTOR, "circle.point")
    assert len(points) == N
    assert console_problems(browser) == []

    # The last point is drawn on top, so the pointer over its centre is over it.
    expected = points[-1].get_attribute("data-sample-id")
    ActionChains(browser).move_to_element(points[-1]).perform()
    tooltip = browser.find_element(By.ID, "tooltip")
    assert tooltip.is_displayed()
    assert tooltip.text.splitlines()[0] == f"sample_id {expected}"
    assert int(expected) == list(dataset["sample_id"])[-1]

    quadrants = np.asarray(dataset["carto_quadrant"])
    browser.find_element(By.ID, "filter-hotspot_memorized").click()
    visible = browser.execute_script("return document.querySelectorAll('circle.point:not(.hidden)').length")
    assert visible == int((quadrants == 2).sum()) > 0
    browser.find_element(By.ID, "filter-all").click()
    visible = browser.execute_script("return document.querySelectorAll('circle.point:not(.hidden)').length")
    assert visible == N
    assert console_problems(browser) == []


@pytest.mark.slow
def test_hostile_texts_draw_every_point_and_read_back_exactly(hostile, tmp_path, browser):  # noqa: F811
    dataset, _ = hostile
    open_page(browser, write_interactive_map(dataset, tmp_path / "map.html", include_text=True, title=HOSTILE_TITLE))
    drawn = browser.execute_script(
        "return Array.from(document.querySelectorAll('circle.point'), "
        " c => [c.getAttribute('cx'), c.getAttribute('cy')])"
    )
    assert len(drawn) == len(HOSTILE)
    assert np.isfinite(np.asarray(drawn, dtype=float)).all()
    assert browser.execute_script("return document.getElementById('title').textContent") == HOSTILE_TITLE
    assert browser.title == HOSTILE_TITLE
    shown = hover_every_point(browser)
    for sample_id, text in zip(dataset["sample_id"], HOSTILE, strict=True):
        assert shown[sample_id].startswith(f"sample_id {sample_id}\n")
        # The scores have no blank line; the text follows the first one.
        assert shown[sample_id].split("\n\n", 1)[1] == text
    assert console_problems(browser) == []


@pytest.mark.slow
def test_memorization_is_drawn_between_0_and_1(scored, tmp_path, browser):  # noqa: F811
    dataset, fit = scored
    open_page(browser, write_interactive_map(dataset, tmp_path / "map.html", fit=fit))
    # The y axis as drawn: each y tick (a 5-pixel horizontal line) at the value its label reads.
    ticks = browser.execute_script(
        """
        const lines = Array.from(document.querySelectorAll(".axis line")).filter(l =>
          l.getAttribute("y1") === l.getAttribute("y2") &&
          Number(l.getAttribute("x2")) - Number(l.getAttribute("x1")) === 5);
        const labels = document.querySelectorAll(".axis text[text-anchor=end]");
        return lines.map((l, k) => [Number(l.getAttribute("y1")), Number(labels[k].textContent)]);
        """
    )
    pixels, values = np.asarray(ticks).T
    assert len(pixels) == 5
    slope, intercept = np.polyfit(pixels, values, 1)
    cys = browser.execute_script(
        "return Array.from(document.querySelectorAll('circle.point'), c => [Number(c.getAttribute('data-sample-id')),"
        " Number(c.getAttribute('cy'))])"
    )
    row = {sample_id: k for k, sample_id in enumerate(dataset["sample_id"])}
    m = np.asarray(dataset["carto_memorization"])[[row[int(i)] for i, _ in cys]]
    drawn = intercept + slope * np.asarray([cy for _, cy in cys])
    assert (m == 0).any()
    tolerance = 2e-3  # the tick labels carry four significant digits
    assert drawn.min() >= -tolerance and drawn.max() <= 1 + tolerance
    assert np.abs(drawn - m).max() <= 0.3 / (fit.num_snapshots - 1) + tolerance


@pytest.mark.slow
def test_a_yes_no_column_reads_true_or_false(scored, tmp_path, browser):  # noqa: F811
    dataset, _ = scored
    extractable = np.random.default_rng(2).random(N) < 0.3
    leaked = dataset.add_column("carto_leak_extractable", extractable)
    open_page(browser, write_interactive_map(leaked, tmp_path / "map.html"))
    flags = dict(zip(dataset["sample_id"], extractable, strict=True))
    shown = hover_every_point(browser)
    assert shown
    for sample_id, text in shown.items():
        assert f"\ncarto_leak_extractable: {'true' if flags[sample_id] else 'false'}\n" in text + "\n"
    assert console_problems(browser) == []


@pytest.mark.slow
@pytest.mark.parametrize("scale", [None, 1e-4, 1e5])
def test_no_axis_text_overlaps_another_or_leaves_the_picture(scored, tmp_path, browser, scale):  # noqa: F811
    dataset, fit = scored
    y = "carto_memorization"
    if scale is not None:
        # A long detector name and tick labels such as -0.00005333 or -1.041e+5: wide on both sides.
        y = "carto_score_min_k_plus_plus_against_the_reference_model_of_the_run"
        values = np.linspace(-1, 1, N) * scale
        dataset = dataset.add_column(y, values)
    open_page(browser, write_interactive_map(dataset, tmp_path / "map.html", fit=fit, y=y))
    boxes = browser.execute_script(
        """
        const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
        return [box(document.getElementById("map")),
                Array.from(document.querySelectorAll(".axis text"), t => [t.textContent].concat(box(t)))];
        """
    )
    (left, top, right, bottom), texts = boxes
    assert len(texts) == 12  # five ticks on each axis and two titles
    for k, (name, x0, y0, x1, y1) in enumerate(texts):
        assert left <= x0 and x1 <= right and top <= y0 and y1 <= bottom, f"{name!r} leaves the picture"
        for other, u0, v0, u1, v1 in texts[k + 1 :]:
            assert x1 <= u0 or u1 <= x0 or y1 <= v0 or v1 <= y0, f"{name!r} overlaps {other!r}"
