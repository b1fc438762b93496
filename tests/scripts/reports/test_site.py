"""The results site (issue 38): built from the committed reports, byte-identical on a rebuild, and —
opened in headless Chromium as a reader would — without console errors, every link resolving, plots
drawn, and the numbers shown equal to the reports'."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from scripts.reports import site, site_grid

ROOT = Path(__file__).resolve().parents[3]
REPORTS = ROOT / "results" / "reports"
SAMPLE = [  # an ASLoRA run with ties, a LoRA run, a confirmatory ASLoRA run with kept test predictions
    "smalldata-lr_minilm-l6_rt_polarity_aslora_train.lr=0.003_s1",
    "smalldata_minilm-l6_rt_polarity_lora_train.lr=0.001_s1",
    "smalldata-confirm_minilm-l6_rt_polarity_aslora_adapter.params.merge_interval_fraction=0.0348,"
    "adapter.params.merge_start_fraction=0.0464,train.lr=0.001_s10",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The site of a sample of the committed reports (a few of each grid), with the verdict."""
    root = tmp_path_factory.mktemp("site")
    reports = root / "reports"
    reports.mkdir()
    by_grid: dict[str, int] = {}
    for path in sorted(REPORTS.glob("*.json")):
        grid = site.grid_of(json.loads(path.read_text()))
        if path.stem in SAMPLE or by_grid.get(grid, 0) < 3:
            by_grid[grid] = by_grid.get(grid, 0) + (path.stem not in SAMPLE)
            shutil.copyfile(path, reports / path.name)
    out = root / "site"
    pages = site.build(reports, ROOT / "results" / "smalldata" / "verdict.json", out)
    return out, pages, reports


def test_the_site_has_a_page_per_run_and_grid(built):
    out, pages, reports_dir = built
    reports = site.read_reports(reports_dir)
    grids = {site.grid_of(r) for r in reports}
    assert len(list((out / "runs").glob("*.html"))) == len(reports) >= len(grids) * 3
    assert {p.stem for p in (out / "grids").glob("*.html")} == grids | {"smalldata-confirm"}
    assert pages == len(reports) + len(grids | {"smalldata-confirm"}) + 1
    # the run pages link to the reports by a relative path that resolves
    assert (out / "runs" / "../../reports" / f"{SAMPLE[0]}.json").resolve().is_file()
    assert (
        f'href="../../reports/{SAMPLE[0].replace("=", "%3D")}.json"' in (out / "runs" / f"{SAMPLE[0]}.html").read_text()
    )


@pytest.mark.slow  # builds all ~280 pages (~30 s on 2 cores)
def test_the_committed_site_regenerates_byte_identically_from_the_committed_reports(tmp_path):
    committed = ROOT / "results" / "site"
    out = tmp_path / "site"
    site.build(REPORTS, ROOT / "results" / "smalldata" / "verdict.json", out, reports_href="../../reports")
    built_files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert built_files == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    for path in built_files:
        assert (out / path).read_bytes() == (committed / path).read_bytes(), f"{path}: run make site"


def test_the_verdict_shows_its_figure_then_a_table_per_rule_the_primary_first(built):
    out, _, _ = built
    verdict = json.loads((ROOT / "results" / "smalldata" / "verdict.json").read_text())
    text = (out / "index.html").read_text()
    assert '<img src="assets/smalldata_verdict.png"' in text
    assert (out / "assets" / "smalldata_verdict.png").read_bytes() == site.FIGURE.read_bytes()
    headings = [text.index(f"Scored at the {html.escape(verdict['rules'][rule])} (") for rule in verdict["rules"]]
    primary = list(verdict["rules"]).index(verdict["primary_rule"])
    assert headings[primary] == min(headings) > text.index("<img")
    for o in verdict["outcomes"]:  # every outcome once, with n of its planned n
        assert f"<td>{o['n']} of {o['planned']}</td>" in text


def test_small_data_runs_carry_the_plans_arm_names(built):
    out, _, _ = built
    name = "ASLoRA, paper schedule · lr=0.001"  # SAMPLE[2]: the paper-schedule arm, by what its command composes
    assert f"<td>{html.escape(name)}<br>" in (out / "grids" / "smalldata-confirm.html").read_text()
    assert html.escape(f"smalldata-confirm · {name} · 10") in (out / "runs" / f"{SAMPLE[2]}.html").read_text()
    assert "lora · lr=0.001" in (out / "grids" / "smalldata.html").read_text()  # its settings, under the name
    protocol = (out / "grids" / "protocol.html").read_text()
    assert "ASLoRA, paper schedule" not in protocol and "<br><small" not in protocol  # not the plan's: unnamed


def test_an_arms_curve_is_its_seeds_mean_in_their_band_each_seed_hidden_until_clicked():
    def run(seed, values):
        epochs = [{"epoch": e + 1, "val": {"accuracy": v}} for e, v in enumerate(values)]
        return {"run_name": f"r{seed}", "seed": seed, "main_metric": "accuracy", "epochs": epochs}

    figure = site_grid._curves(
        {"arm": [run(1, [0.70, 0.80]), run(2, [0.74, 0.76])], "one": [run(3, [0.5])]}, "accuracy"
    )
    band, mean, seed_1, seed_2, lone = figure.data
    assert list(band.x) == [1, 2, 2, 1] and list(band.y) == pytest.approx([70, 76, 80, 74])
    assert list(mean.y) == pytest.approx([72, 78]) and mean.name == "mean of 2 seeds"
    assert (seed_1.visible, seed_2.visible) == ("legendonly", "legendonly")
    assert list(seed_2.y) == pytest.approx([74, 76])
    assert lone.name == "seed 3" and lone.visible is None  # an arm of one run: the run itself, shown


def test_a_crowded_figure_draws_its_full_seed_arms_and_lists_the_ablations_a_click_away():
    def run(seed):
        return {
            "run_name": f"r{seed}",
            "seed": seed,
            "main_metric": "accuracy",
            "epochs": [{"epoch": 1, "val": {"accuracy": 0.5}}],
        }

    def drawn(arms):  # arm → whether its mean is drawn at first
        figure = site_grid._curves(arms, "accuracy")
        return {t.legendgroup: t.visible is None for t in figure.data if t.name.startswith("mean")}

    full = {f"main {i}": [run(s) for s in range(1, 6)] for i in range(3)}
    ablations = {f"ablation {i}": [run(s) for s in range(1, 4)] for i in range(site_grid.SHOWN_ARMS - 2)}
    shown = drawn({**full, **ablations})  # SHOWN_ARMS + 1 arms: crowded
    assert shown == {**{a: True for a in full}, **{a: False for a in ablations}}
    bands = [t for t in site_grid._curves({**full, **ablations}, "accuracy").data if t.name == "lowest–highest seed"]
    assert [t.visible for t in bands] == [None] * 3 + ["legendonly"] * len(ablations)  # a hidden arm's band too
    ablations.popitem()  # SHOWN_ARMS arms: every one drawn
    assert all(drawn({**full, **ablations}).values())


def test_a_loss_is_shown_as_it_is_and_accuracy_x100(built):
    out, _, reports_dir = built
    reports = site.read_reports(reports_dir)
    loss = next(r for r in reports if r["main_metric"] == "loss")  # an instruction-tuning run
    page = (out / "grids" / f"{site.grid_of(loss)}.html").read_text()
    assert "loss ×100" not in page and "validation loss, lower is better" in page
    index = (out / "index.html").read_text()
    assert f"<td>{loss['best']['metric']:.3f}</td>" in index
    accuracy = next(r for r in reports if r["main_metric"] == "accuracy")
    assert f"<td>{100 * accuracy['best']['metric']:.1f}</td>" in index


def test_an_arm_is_one_lr_of_an_older_lr_grid_and_one_task_of_a_grid_over_two_drawn_apart():
    """Reports from before runs recorded their variant: the lr they swept, kept in the name only, is
    still part of the arm; and a grid over two tasks never pools their scores into one arm."""
    from aslora.harness.runs.report import load_report

    def grid(names):
        return site_grid.grid_page("g", [load_report(REPORTS / f"{n}.json") for n in names], {})

    lrs = [f"protocol-lr_minilm-l6_bbc_news_lora_train.lr={lr}_s1" for lr in ("0.0003", "0.001", "0.003")]
    page = grid(lrs)
    assert "3 runs in 3 arms" in page and "<td>lora · lr=0.0003</td>" in page
    tasks = [f"protocol_minilm-l6_{task}_lora_train.lr=0.003_s1" for task in ("bbc_news", "rt_polarity")]
    page = grid(tasks)
    assert "2 runs in 2 arms on 2 model–task pairs" in page
    # each task its own figures: scores on two datasets share no axis
    assert [page.count(f'id="{kind}-{i}"') for kind in ("curves", "pareto") for i in (1, 2)] == [1, 1, 1, 1]
    assert "<h2>minilm-l6 · bbc_news</h2>" in page and 'id="curves"' not in page
    assert "<td>minilm-l6 · bbc_news · lora · lr=0.003</td>" in page
    assert "<td>minilm-l6 · rt_polarity · lora · lr=0.003</td>" in page


def test_a_verdict_from_older_code_is_refused_naming_what_it_lacks(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    shutil.copyfile(REPORTS / f"{SAMPLE[0]}.json", reports / f"{SAMPLE[0]}.json")
    verdict = json.loads((ROOT / "results" / "smalldata" / "verdict.json").read_text())
    del verdict["primary_rule"]
    del verdict["outcomes"][-1]["planned"]  # one outcome without it is enough to refuse
    (tmp_path / "verdict.json").write_text(json.dumps(verdict))
    with pytest.raises(
        ValueError, match=rf"lacks primary_rule, planned \(1 of {len(verdict['outcomes'])} outcomes\): regenerate it"
    ):
        site.build(reports, tmp_path / "verdict.json", tmp_path / "site")
    assert not (tmp_path / "site").exists()
    argv = ["--reports", str(reports), "--verdict", str(tmp_path / "verdict.json"), "--out", str(tmp_path / "site")]
    assert site.main(argv) == 1 and not (tmp_path / "site").exists()


def test_the_primary_rule_is_shown_over_seeds_and_test_examples_beside_its_verdict(built):
    out, _, _ = built
    index = (out / "index.html").read_text()
    examples = json.loads((ROOT / "results" / "smalldata" / "per_example.json").read_text())
    verdict = json.loads((ROOT / "results" / "smalldata" / "verdict.json").read_text())
    section = index.split("over seeds and test examples (exploratory, no word)")[1].split("<h3>")[0]
    primary = [c for c in examples["comparisons"] if c["rule"] == verdict["primary_rule"]]
    assert primary and section.count("<tr>") == len(primary) + 1  # a header and one row per comparison
    for c in primary:
        both = c["both"]
        assert f"<td>[{both['low']:+.2f}, {both['high']:+.2f}] (df {both['df']:.0f})</td>" in section
        # the seeds' interval beside it is the verdict's, for the same comparison
        (o,) = [o for o in verdict["outcomes"] if (o["rule"], o["a"], o["b"]) == (c["rule"], c["a"], c["b"])]
        assert c["seed_interval"] == pytest.approx([o["low"], o["high"]]) and c["seeds"] == o["n"]


def test_per_example_rows_the_site_cannot_show_are_refused_naming_what_they_lack(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    shutil.copyfile(REPORTS / f"{SAMPLE[0]}.json", reports / f"{SAMPLE[0]}.json")
    shutil.copyfile(ROOT / "results" / "smalldata" / "verdict.json", tmp_path / "verdict.json")
    examples = json.loads((ROOT / "results" / "smalldata" / "per_example.json").read_text())
    del examples["comparisons"][1]["both"]["df"]
    (tmp_path / "per_example.json").write_text(json.dumps(examples))  # beside the verdict: read by default
    with pytest.raises(ValueError, match=r"comparison 1 lacks both.df: regenerate it"):
        site.build(reports, tmp_path / "verdict.json", tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_numbers_on_a_run_page_are_the_reports(built):
    out, _, _ = built
    for name in SAMPLE:
        report = json.loads((REPORTS / f"{name}.json").read_text())
        text = (out / "runs" / f"{name}.html").read_text()
        assert f"{report['best']['epoch']} of {len(report['epochs'])}" in text
        assert f"accuracy {report['best']['validation']['accuracy']:.4f}" in text
        assert f"{site.scored_size(report):,} / {report['params']['after']['adapter']:,}" in text
        assert report["environment"]["git_sha"] in text
        assert f"<h2>Ties ({len(report['merge_history'])})</h2>" in text or not report["merge_history"]


def test_a_run_page_draws_test_scores_as_they_were_measured(built):
    """Test scored every epoch is a line; test scored only at new-best epochs is points (a line would
    draw scores never measured, and a run whose only test score is one epoch would show nothing)."""
    from scripts.reports.site_run import curves_figure

    out, _, _ = built
    for name in SAMPLE[1:]:
        report = json.loads((REPORTS / f"{name}.json").read_text())
        scored = [e["epoch"] for e in report["epochs"] if e.get("test")]
        test = next(t for t in curves_figure(report).data if t.name.startswith("test"))
        if len(scored) == len(report["epochs"]):
            assert test.mode == "lines" and test.name == "test accuracy", name
        else:
            assert 0 < len(scored) < len(report["epochs"]), name
            assert test.mode == "markers" and "new-best epochs only" in test.name, name
        drawn = [x for x, y in zip(test.x, test.y, strict=True) if y == y]  # NaN: not scored that epoch
        assert drawn == scored, name
        # the facts table has no header row: an empty one shows as a blank bar above "command"
        facts = (out / "runs" / f"{name}.html").read_text().split('<div class="wide">', 1)[1]
        assert facts.startswith("<table><tbody>"), name
    kinds = {json.loads((REPORTS / f"{n}.json").read_text())["epochs"][-1].get("test") is None for n in SAMPLE[1:]}
    assert kinds == {True, False}  # the sample holds a run of each kind


def test_a_dirty_run_page_says_whether_its_report_kept_the_diff():
    from scripts.reports.site_run import run_page

    report = json.loads((REPORTS / f"{SAMPLE[1]}.json").read_text())
    assert report["environment"]["git_dirty"] and "git_diff" not in report["environment"]  # an older report
    assert "(dirty tree: the report kept no diff)" in run_page(report, "../../reports")
    report["environment"]["git_diff"] = "diff --git a/x b/x"
    assert "(dirty tree: the report carries the diff)" in run_page(report, "../../reports")
    report["environment"].update(git_dirty=False, git_diff=None)
    assert "dirty tree" not in run_page(report, "../../reports")


def test_a_malformed_report_builds_nothing(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    shutil.copyfile(REPORTS / f"{SAMPLE[0]}.json", reports / f"{SAMPLE[0]}.json")
    (reports / "broken.json").write_text('{"status": "done"}')
    assert site.main(["--reports", str(reports), "--out", str(tmp_path / "site")]) == 1
    assert not (tmp_path / "site").exists()


def _browser():
    """Headless Chromium through selenium and Debian's chromedriver, or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.mark.slow  # starts a browser (~1 min on 2 cores): with the slow suite
def test_pages_open_in_a_browser_without_errors_links_resolve_and_plots_draw(built):
    from selenium.webdriver.common.by import By

    out, _, _ = built
    pages = [out / "index.html", out / "grids" / "smalldata.html", *(out / "runs" / f"{n}.html" for n in SAMPLE)]
    driver = _browser()
    try:
        for page in pages:
            driver.get(page.as_uri())
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert not errors, (page.name, errors)
            for link in driver.find_elements(By.TAG_NAME, "a"):
                href = urlparse(link.get_attribute("href"))
                if href.scheme == "file":
                    assert Path(unquote(href.path)).is_file(), (page.name, href.path)
            plots = driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div")
            if page.name != "index.html":
                assert plots, page.name
            for plot in plots:  # plotly drew it: an SVG with data traces, and a non-blank image
                traces = plot.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace, .heatmaplayer .hm")
                assert traces, (page.name, plot.get_attribute("id"))
                for trace in plot.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace"):
                    lines = [p.get_attribute("d") or "" for p in trace.find_elements(By.CSS_SELECTOR, ".js-line")]
                    points = trace.find_elements(By.CSS_SELECTOR, ".point")
                    # a line of one point draws nothing: every trace shows a segment or a marker
                    assert points or any("L" in d for d in lines), (page.name, plot.get_attribute("id"))
                png = plot.screenshot_as_png
                assert len(png) > 5_000, (page.name, "blank plot")
            if page.parent.name == "runs":
                report = json.loads((REPORTS / f"{page.stem}.json").read_text())
                shown = driver.find_element(By.TAG_NAME, "table").text
                assert f"{report['best']['epoch']} of {len(report['epochs'])}" in shown
    finally:
        driver.quit()


def test_the_sharing_map_replayed_from_a_report_is_the_saved_adapters():
    """The run page's heat map comes from the report's merge log alone; for every committed ASLoRA run
    whose adapter config is kept (results/sharing/), it is the map the saved adapter holds."""
    from aslora.export import read_adapter_meta
    from scripts.reports.site_run import final_sharing

    checked = 0
    for run_dir in sorted((ROOT / "results" / "sharing").iterdir()):
        report = json.loads((run_dir / "report.json").read_text())
        if not report.get("merge_history"):
            continue
        saved = read_adapter_meta(run_dir / "adapter")
        replayed = final_sharing(report)
        assert replayed["sharing"] == saved["sharing"], run_dir.name
        key = lambda s: (s["module_type"], s["depth"])  # noqa: E731
        assert sorted(map(key, replayed["slots"])) == sorted(map(key, saved["slots"])), run_dir.name
        checked += 1
    assert checked >= 20


def test_a_merge_log_that_ties_a_retired_B_is_refused():
    from scripts.reports.site_run import final_sharing

    report = json.loads((REPORTS / f"{SAMPLE[0]}.json").read_text())
    first = report["merge_history"][0]
    report["merge_history"].append(dict(first, step=first["step"] + 1))  # its retired B is gone by now
    with pytest.raises(ValueError, match=rf"\({first['retired']} → {first['kept']}\) names a B that is not live"):
        final_sharing(report)


def test_kept_predictions_are_tabulated_and_give_the_reports_test_accuracy():
    from aslora.harness.training.kept_predictions import decode_classes
    from scripts.reports.site_run import predictions_section

    name = next(
        p.stem for p in sorted(REPORTS.glob("smalldata-confirm*.json")) if json.loads(p.read_text())["test_predictions"]
    )
    report = json.loads((REPORTS / f"{name}.json").read_text())
    text = predictions_section(report)
    labels = decode_classes(report["test_predictions"]["labels"])
    for e in report["epochs"]:
        accuracy = f"{e['test']['accuracy']:.4f}"
        assert f"<tr><td>{e['epoch']}</td><td>{accuracy}</td><td>{accuracy}</td></tr>" in text
    assert text.count("<td>✓</td>") + text.count("<td>✗</td>") == len(labels)
    best = decode_classes(report["test_predictions"]["epochs"][str(report["best"]["epoch"])])
    wrong = sum(p != y for p, y in zip(best, labels, strict=True))
    assert text.count("<td>✗</td>") == wrong == round(len(labels) * (1 - report["best"]["test"]["accuracy"]))
