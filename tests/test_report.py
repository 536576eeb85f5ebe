"""The HTML report: sections, self-containment, counts that match the run's tables, the
diagnostics banner, a non-Bayesian run, missing optional files, and a real browser render."""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, compose
from megafc.core.outputs import plugin_report_sections
from megafc.core.pipeline import run_experiment
from megafc.core.registry import build_registry
from megafc.plugins.reports.page import fmt, markdown_to_html
from megafc.plugins.reports.run_report import write_report

SECTIONS = ("Data", "Motion QC", "Effects", "Brain", "Datasets, drugs, overall", "Diagnostics", "Methods", "Provenance")
REPORT_FIGURES = ("mean_fd", "qc_fc", "effect_drugs", "forest", "recovery", "glass_brain",
              "datasets_forest_0")


class ReportParser(HTMLParser):
    """Collects <img> sources, every src/href, h2 headings and the cells of tables with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.h2: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in_h2 = False
        self._tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._tags.append(tag)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key] or "")
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "h2":
            self._in_h2, self._h2 = True, []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "h2":
            self._in_h2 = False
            self.h2.append("".join(self._h2).strip())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_h2:
            self._h2.append(data)


def parse(html_text: str) -> ReportParser:
    p = ReportParser()
    p.feed(html_text)
    return p


def table_frame(rows: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(rows[1:], columns=rows[0])


@pytest.fixture(scope="module")
def pymc_run(tiny_pymc_run) -> Path:
    return tiny_pymc_run.run_dir


@pytest.fixture(scope="module")
def pymc_report(pymc_run) -> Path:
    """The report the pipeline wrote (in its staging folder, with the plugins' sections)."""
    return pymc_run / "report.html"


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("report_meta")
    overrides = [o for o in TINY if not o.startswith("pooling.")] + ["pooling=meta", "report_svg=false"]
    run_experiment(compose(overrides), build_registry(), run_dir)
    return run_dir


def test_report_has_every_section_and_no_errors(pymc_report):
    text = pymc_report.read_text()
    assert pymc_report.name == "report.html"
    assert parse(text).h2 == list(SECTIONS)
    assert 'class="report-error"' not in text
    for heading in ("Datasets", "Exclusions", "Drugs", "Mean framewise displacement", "QC-FC",
                    "Network x network effects", "Key network pairs", "Summaries", "Drug similarity",
                    "Recovery of planted effects", "Pooling diagnostics (diagnostics.tsv)", "Citations", "Package versions",
                    "Resolved config"):
        assert f"<h3>{heading}</h3>" in text, heading


def test_report_is_self_contained(pymc_report):
    # the interactive connectome is a whole page in an iframe's srcdoc (scripts inline, escaped)
    text = re.sub(r'srcdoc="[^"]*"', 'srcdoc=""', pymc_report.read_text())
    p = parse(text)
    assert len(p.imgs) >= len(REPORT_FIGURES)
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,"), src[:80]
    for link in p.links:
        assert link.startswith(("data:image/png;base64,", "#")), link[:80]
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r"url\(", text)


def test_report_figures_saved_in_every_requested_format(pymc_report):
    """figures.formats=[png,svg]: every figure, the report's and the run's, in both."""
    figures = pymc_report.parent / "figures"
    for name in [f"report_{n}" for n in REPORT_FIGURES] + ["overall_effect"]:
        for ext in ("png", "svg"):
            f = figures / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    assert (figures / "report_mean_fd.svg").read_text().lstrip().startswith("<?xml")
    # the overall-effect matrix is drawn once: the report embeds figures/overall_effect.png
    assert not list(figures.glob("report_effect_overall.*"))
    assert 'data-name="effect_overall"' in pymc_report.read_text()


def test_figure_formats_config():
    from megafc.core import ConfigError
    from megafc.core.figures import figure_formats

    assert figure_formats({"enabled": True, "formats": ["png"]}) == ["png"]  # the default: PNG only
    assert figure_formats(True) == ["png"] and figure_formats(False) == []  # figures=true/false as before
    assert figure_formats({"enabled": False, "formats": ["svg"]}) == []
    with pytest.raises(ConfigError, match=r"'figures.formats' is \['gif'\]"):
        figure_formats({"enabled": True, "formats": ["gif"]})


def test_dataset_and_exclusion_tables_match_scans(pymc_report):
    run_dir = pymc_report.parent
    scans = pd.read_csv(run_dir / "scans.tsv", sep="\t")
    p = parse(pymc_report.read_text())
    table = table_frame(p.tables["datasets-table"]).set_index("dataset")
    expected = scans.groupby("dataset")["excluded"].agg(scans="size", excluded="sum")
    assert set(table.index) == set(expected.index) | {"total"}
    for ds, row in expected.iterrows():
        assert int(table.loc[ds, "scans"]) == row["scans"]
        assert int(table.loc[ds, "excluded"]) == row["excluded"]
        assert int(table.loc[ds, "kept"]) == row["scans"] - row["excluded"]
    assert int(table.loc["total", "excluded"]) == int(scans["excluded"].sum())
    reasons = scans[scans["excluded"]].groupby(["dataset", "exclusion_reason"]).size()
    if len(reasons):
        shown = table_frame(p.tables["exclusions-table"])
        got = {(r.dataset, r.reason): int(r.scans) for r in shown.itertuples(index=False)}
        assert got == {k: int(v) for k, v in reasons.items()}


def test_diagnostics_banner_when_effects_not_ok(pymc_report):
    tables = [pd.read_csv(pymc_report.parent / f"{n}.tsv", sep="\t") for n in ("effects", "summaries")]
    bad = sum(int((~t["ok"].astype(bool)).sum()) for t in tables)
    assert bad > 0, "TINY draws are too few for every effect to pass; the fixture changed?"
    text = pymc_report.read_text()
    prov = json.loads((pymc_report.parent / "provenance.json").read_text())
    assert prov["diagnostics_ok"] is False and isinstance(prov["sampler_ok"], bool)
    failed = not prov["sampler_ok"] or (tables[0]["divergences"] > 0).any()
    if failed:
        assert 'class="banner bad" id="diagnostics-banner"' in text
        assert f"{bad} of {sum(map(len, tables))} effects and summaries are flagged not ok" in text
    else:
        assert f"{bad} of {sum(map(len, tables))} effects and summaries are over the strict" in text
    # not-ok diagnostics rows are highlighted
    assert '<tr class="bad">' in text
    # and the page says so before any effect section: every star and interval below depends on it
    caveat = text.index('id="diagnostics-caveat"')
    assert caveat < text.index('id="effects"')
    assert ("Sampling diagnostics failed" in text) == failed


def test_the_caveat_tells_a_failed_sampler_from_chains_too_short_for_the_threshold(pymc_run, tmp_path):
    """provenance.json's sampler_ok false (chains not converged on a hyperparameter, low BFMI):
    a failure even with every row ok. Rows over the strict thresholds with the sampler's checks
    passed and no divergence: a caution that says the chains are too short, not a failure."""
    run = tmp_path / "run"
    shutil.copytree(pymc_run, run, ignore=shutil.ignore_patterns("figures", "report.html", "posterior.nc"))
    originals = {name: pd.read_csv(run / f"{name}.tsv", sep="\t") for name in ("effects", "summaries")}
    prov = json.loads((run / "provenance.json").read_text())

    diagnostics = pd.read_csv(run / "diagnostics.tsv", sep="\t")
    # R-hats over 1.01 at the count converged chains of this length give by chance
    diagnostics.assign(n_r_hat_over=2, r_hat_over_by_chance=5.0, p_r_hat_max=0.5, r_hat_max=1.02).to_csv(
        run / "diagnostics.tsv", sep="\t", index=False)

    def report(ok: bool, sampler_ok: bool | None) -> str:
        for name, table in originals.items():
            (table.assign(ok=True, divergences=0) if ok else table.assign(divergences=0)).to_csv(
                run / f"{name}.tsv", sep="\t", index=False)
        recorded = {"sampler_ok": sampler_ok} if sampler_ok is not None else {}
        (run / "provenance.json").write_text(json.dumps({**{k: v for k, v in prov.items() if k != "sampler_ok"},
                                                         "diagnostics_ok": ok and bool(sampler_ok), **recorded}))
        return html.unescape(write_report(run).read_text())

    text = report(ok=True, sampler_ok=False)
    assert "Sampling diagnostics failed: the sampler's own checks failed" in text
    assert "The sampler's own checks failed</strong> although all" in text
    text = report(ok=True, sampler_ok=True)
    assert 'id="diagnostics-caveat"' not in text and "and the sampler's own checks" in text
    # every effect passes but a hyperparameter's row is over the strict thresholds: the green
    # banner says so rather than "all passed" above a row marked not ok
    flagged = diagnostics.assign(ok=[i != 0 for i in range(len(diagnostics))])
    flagged.assign(n_r_hat_over=2, r_hat_over_by_chance=5.0, p_r_hat_max=0.5, r_hat_max=1.02).to_csv(
        run / "diagnostics.tsv", sep="\t", index=False)
    text = report(ok=True, sampler_ok=True)
    assert f"Sampled quantities of {diagnostics['variable'].iloc[0]} are over the strict thresholds" in text
    diagnostics.assign(n_r_hat_over=2, r_hat_over_by_chance=5.0, p_r_hat_max=0.5, r_hat_max=1.02).to_csv(
        run / "diagnostics.tsv", sep="\t", index=False)
    text = report(ok=False, sampler_ok=True)
    assert 'class="banner warn" id="diagnostics-caveat"' in text and "too short to show convergence" in text
    assert "Sampling diagnostics failed" not in text
    # not known to be chance (a run of an earlier version, without sampler_ok): a failure
    text = report(ok=False, sampler_ok=None)
    assert "Sampling diagnostics failed: rows exceed the per-quantity thresholds" in text
    # nor when a variable's R-hats are beyond chance in diagnostics.tsv
    diagnostics.assign(n_r_hat_over=50, r_hat_over_by_chance=1.0, p_r_hat_max=1e-6, r_hat_max=1.3).to_csv(
        run / "diagnostics.tsv", sep="\t", index=False)
    assert 'class="banner bad" id="diagnostics-caveat"' in report(ok=False, sampler_ok=True)


def test_drug_similarity_is_shown_as_the_heuristic_it_is(pymc_report):
    """The corrected similarity intervals are not a posterior and rankings by their means mislead
    (QA: the planted closest pair came out as the one pair credibly apart): the report says so,
    with which drug is the stronger as a share of draws."""
    text = html.unescape(pymc_report.read_text())
    section = text.split("<h3>Drug similarity</h3>")[1].split("<h3>")[0]
    assert "a heuristic, not a posterior" in section and "not by the order of the means" in section
    assert "p_above_1" in section


def test_recovery_scores_drug_contrasts_against_the_planted_differences(pymc_run):
    """Drug-difference claims are checked too: a contrast's truth is its drugs' planted difference."""
    from megafc.plugins.reports.run_report import recovery_stats, recovery_table

    truth = pd.read_csv(pymc_run / "truth.tsv", sep="\t")
    effects = pd.read_csv(pymc_run / "effects.tsv", sep="\t")
    merged = recovery_table(truth, effects, "network")
    contrast = merged[merged["effect"] == "contrast:DMT-LSD"]
    net = truth[truth["aggregation"] == "network"]
    planted = {(tuple(sorted((a, b))), e): v for a, b, e, v in net[["network_a", "network_b", "effect", "truth"]]
               .itertuples(index=False)}
    assert len(contrast) > 0
    for key, value in zip(contrast["key"], contrast["truth"]):
        assert value == pytest.approx(planted[(key, "drug:DMT")] - planted[(key, "drug:LSD")])
    assert "contrast" in set(recovery_stats(merged)["effects"])
    # and drug similarity against the same measures of the planted maps (what calibration scores)
    from megafc.plugins.reports.calibration import similarity_truth
    from megafc.plugins.reports.run_report import similarity_recovery

    similarity = pd.read_csv(pymc_run / "drug_similarity.tsv", sep="\t")
    shown = similarity_recovery(similarity, truth, "network", effects)
    assert len(shown) and set(shown["measure"]) <= {"pattern_r_corrected", "rms_ratio", "rms_distance"}
    planted = similarity_truth(truth, "network").set_index(["drug_a", "drug_b", "measure"])["truth"]
    row = shown.iloc[0]
    assert row["truth"] == pytest.approx(planted[(row["drug_a"], row["drug_b"], row["measure"])])
    assert row["covered"] == (row["hdi_low"] <= row["truth"] <= row["hdi_high"])
    assert 'id="similarity-recovery-table"' in (pymc_run / "report.html").read_text()


def test_citations_follow_the_plugins_used(pymc_report):
    text = pymc_report.read_text()
    assert "Abril-Pla O" in text and "Kumar R, Carroll C" in text and "Abraham A" in text
    assert "Girn et al. (2026) Nat Med 32:1543-1554" in text
    assert "DerSimonian" not in text and "Capretto" not in text and "Esteban O" not in text
    assert "Schaefer A" not in text  # the synthetic atlas only borrows Schaefer's names


def test_meta_run_report(meta_run):
    assert not (meta_run / "posterior.nc").exists()
    report = write_report(meta_run, title="meta <comparator>", extra_sections=plugin_report_sections(build_registry()))
    text = report.read_text()
    p = parse(text)
    assert p.h2 == list(SECTIONS)
    assert 'class="report-error"' not in text
    assert "<title>meta &lt;comparator&gt;</title>" in text
    # figures=false (TINY): the report shows its figures, embedded, and saves none of them
    assert not list((meta_run / "figures").glob("report_*"))
    assert len(p.imgs) >= 5 and all(src.startswith("data:image/png;base64,") for src in p.imgs)
    assert "DerSimonian R, Laird N (1986)" in text and "Abril-Pla" not in text
    effects_html = re.sub(r"data:image/png;base64,[^\"]*", "", text.split('id="effects"')[1].split('id="diagnostics"')[0])
    assert "95% CI" in effects_html and "HDI" not in effects_html
    effects = pd.read_csv(meta_run / "effects.tsv", sep="\t")
    assert effects["r_hat"].isna().all()
    if effects["ok"].astype(bool).all():
        assert "Non-Bayesian pooling: no MCMC diagnostics apply" in text
    else:  # rows the model itself flags (an effect fewer than two datasets inform), not MCMC failures
        assert "flagged not ok</strong> by the pooling model" in text and "R-hat, effective" not in text
    assert "How the datasets combine into each drug's and the overall effect is the pooling model's" in html.unescape(text)
    # the columns meta adds are described in its own words, in its data dictionary
    described = json.loads((meta_run / "effects.json").read_text())
    assert described["tau2"]["Description"] == "DerSimonian-Laird between-dataset variance."
    assert not [c for c, v in described.items() if "not described" in v["Description"]]


def test_missing_optional_files_only_drop_their_parts(pymc_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(pymc_run, run, ignore=shutil.ignore_patterns("figures", "report.html", "posterior.nc"))
    for name in ("qc_fc.tsv", "truth.tsv", "summaries.tsv", "drug_similarity.tsv", "exclusions.tsv", "methods.md"):
        (run / name).unlink(missing_ok=True)
    (run / "warnings.tsv").write_text("stage\tlevel\tmessage\n"
                                      "pool\twarning\tpooling: max R-hat 1.3 > 1.01; chains have <not> converged\n")
    text = write_report(run, extra_sections=plugin_report_sections(build_registry())).read_text()
    assert parse(text).h2 == list(SECTIONS)
    assert 'class="report-error"' not in text
    assert "qc_fc.tsv is missing" in text and "summaries.tsv is missing" in text and "methods.md is missing" in text
    assert "Recovery of planted effects" not in text
    assert "chains have &lt;not&gt; converged" in text


def test_empty_directory_still_gives_a_report(tmp_path):
    text = write_report(tmp_path, extra_sections=plugin_report_sections(build_registry())).read_text()
    assert parse(text).h2 == list(SECTIONS)
    assert "no brain figure" in text and "nothing to draw" in text
    assert 'class="report-error"' not in text
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "absent")


def test_helpers():
    assert fmt(0.000123456) == "0.000123" and fmt(1234.5678) == "1.23e+03" and fmt(12.0) == "12"
    assert fmt(float("nan")) == "&ndash;" and fmt("<b>") == "&lt;b&gt;"
    md = markdown_to_html("# Title\n\nline one\nline <two>\n\n- a `x`\n- b\n  continued\n", shift=2)
    assert md == ("<h3>Title</h3>\n<p>line one<br>line &lt;two&gt;</p>\n"
                  "<ul><li>a <code>x</code></li><li>b continued</li></ul>")


def test_atlas_citations_come_from_the_atlas(tmp_path):
    """The atlas's own references (a combined atlas collects its parts') reach provenance and
    references.bib; the synthetic atlas, which only borrows Schaefer's names, cites none."""
    from megafc.core.references import to_bibtex
    from megafc.plugins.atlases._files import REFERENCES as ATLAS

    bib = to_bibtex([ATLAS["schaefer"], ATLAS["yeo"], "SUIT (own reference)"])
    assert "@article{Schaefer2018," in bib and "@article{Yeo2011," in bib and "pages = {3095--3114}" in bib
    assert "@misc{SUIT," in bib and "note = {SUIT (own reference)}" in bib
    assert "author = {Schaefer, A. and Kong, R. and" in bib and "author = {Yeo, B. T. T. and" in bib
    assert "note = {R\\&D 100\\% (software)}" in to_bibtex(["R&D 100% (software)"])  # LaTeX specials escaped


# --------------------------------------------------------------------------- real browser

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)

#: Appended before </body> of a copy of the report: after load, records on <body> how many of the
#: report's images failed to decode (naturalWidth 0), plus a deliberately broken probe image that
#: proves the check can fail.
PROBE = """
<img id="probe" src="data:image/png;base64,bm90IGEgcG5n" alt="probe">
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("main img"));
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  var probe = document.getElementById("probe");
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken", String(broken.length));
  document.body.setAttribute("data-probe-broken", String(probe.naturalWidth === 0 ? 1 : 0));
});
</script>
"""


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(pymc_report, tmp_path):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    text = pymc_report.read_text()
    n_imgs = len(parse(text).imgs)
    check = tmp_path / "check.html"
    check.write_text(text.replace("</body>", PROBE + "</body>"))

    dom = chromium(["--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom", check.as_uri()],
                   tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # JavaScript errors in the page or in the interactive connectome (its iframe) are console lines
    errors = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line and re.search(r"Uncaught|Error\b", line)]
    assert not errors, errors[:5]
    assert 'class="connectome-view"' in dom.stdout
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:500]
    attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-probe-broken") == "1", f"the broken-image check did not run or cannot fail: {attrs}"
    assert attrs.get("data-images") == str(n_imgs), attrs
    assert attrs.get("data-broken") == "0", attrs

    shot = tmp_path / "shot.png"
    res = chromium([f"--screenshot={shot}", "--window-size=1200,3000", pymc_report.as_uri()], tmp_path)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        colours = im.convert("RGB").resize((300, 750)).getcolors(maxcolors=1_000_000)
    assert len(colours) > 200, "the screenshot is (nearly) blank"


def test_console_error_check_can_fail(tmp_path):
    """The console check above sees an error thrown inside an iframe's srcdoc."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    page = tmp_path / "bad.html"
    page.write_text('<html><body><iframe srcdoc="&lt;script&gt;notDefined()&lt;/script&gt;"></iframe></body></html>')
    out = chromium(["--virtual-time-budget=3000", "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                   tmp_path)
    assert any(":CONSOLE" in line and "Uncaught ReferenceError" in line for line in out.stderr.splitlines())


def test_report_built_in_staging_names_the_final_folder(meta_run, tmp_path, caplog):
    """The pipeline writes the report before the commit: it must describe where the run will live."""
    final = tmp_path / "my-run"
    staging = final / ".megafc-staging-abc123"
    shutil.copytree(meta_run, staging, ignore=shutil.ignore_patterns("report.html"))
    with caplog.at_level("INFO", logger="megafc"):
        page = write_report(staging, shown_as=final).read_text()
    assert ".megafc-staging" not in page
    assert "megafc report: my-run" in page and str(final) in page
    assert any(f"report written to {final / 'report.html'}" in r.getMessage() for r in caplog.records)


def test_forest_rows_group_datasets_under_their_drug():
    from megafc.plugins.reports.forest import dataset_units, forest_rows, heterogeneity_text

    scans = pd.DataFrame({
        "dataset": ["a", "a", "a", "a", "b", "b", "b", "b"],
        "subject": ["1", "1", "2", "2", "1", "1", "1", "2"],
        "drug": ["LSD", "LSD", "LSD", "LSD", "DMT", "DMT", "psilocybin", "DMT"],
        "condition": ["drug", "placebo", "drug", "placebo", "drug", "placebo", "drug", "placebo"],
        "excluded": [False, False, True, True, False, False, False, False],
    })
    units, n_subjects = dataset_units(scans)
    assert units == {"a": "LSD", "b[DMT]": "DMT", "b[psilocybin]": "psilocybin"}
    assert n_subjects == {"a": 1, "b[DMT]": 1, "b[psilocybin]": 1}
    effects = pd.DataFrame({
        "network_a": "Vis", "network_b": "Default",
        "effect": ["overall", "drug:DMT", "drug:LSD", "drug:psilocybin", "dataset:a", "dataset:b[DMT]",
                   "dataset:b[psilocybin]"],
        "mean": [0.1, 0.2, 0.05, 0.07, 0.05, 0.2, 0.07], "hdi_low": 0.0, "hdi_high": 0.3,
        "i2": [40.0] + [np.nan] * 6,
    })
    rows = forest_rows(effects, units, n_subjects | {"b[DMT]": 7})
    assert rows["label"].str.strip().tolist() == ["b[DMT]", "DMT", "a", "LSD", "b[psilocybin]", "psilocybin", "overall"]
    assert rows["kind"].tolist() == ["dataset", "drug", "dataset", "drug", "dataset", "drug", "overall"]
    assert rows.loc[rows.label.str.strip() == "a", "n"].item() == 1
    assert rows.loc[rows.label.str.strip() == "b[DMT]", "n"].item() == 7  # per unit, not per dataset
    het = pd.DataFrame({"network_a": "Vis", "network_b": "Default", "parameter": ["tau_drug", "tau_dataset"],
                        "mean": [0.02, 0.01], "hdi_low": [0.0, 0.0], "hdi_high": [0.05, 0.03]})
    text = heterogeneity_text(effects, het, "Vis", "Default")
    assert text == "between-drug sd 0.020 [0.000, 0.050]; between-dataset sd 0.010 [0.000, 0.030]; I\u00b2 = 40%"


def test_motion_first_banners(tmp_path):
    """A credible drug-minus-control FD change and QC-FC far above 5% are warned about, not shown green."""
    from megafc.core.qc import motion_change

    rng = np.random.default_rng(0)
    rows = []
    for drug, shift in (("LSD", 0.05), ("DMT", 0.0)):
        for s in range(20):
            base = rng.uniform(0.1, 0.2)
            rows += [{"scan_id": f"{drug}-{s}-c", "dataset": drug, "subject": str(s), "drug": drug,
                      "condition": "placebo", "mean_fd": base, "excluded": False, "exclusion_reason": None},
                     {"scan_id": f"{drug}-{s}-d", "dataset": drug, "subject": str(s), "drug": drug,
                      "condition": "drug", "mean_fd": base + shift + rng.normal(0, 0.01), "excluded": False,
                      "exclusion_reason": None}]
    scans = pd.DataFrame(rows)
    motion = motion_change(scans).set_index("drug")
    assert motion.loc["LSD", "differs"] and not motion.loc["DMT", "differs"]
    assert motion.loc["LSD", "ci_low"] < 0.05 < motion.loc["LSD", "ci_high"] and motion.loc["LSD", "n_subjects"] == 20
    assert motion.loc["all", "n_subjects"] == 40
    scans.to_csv(tmp_path / "scans.tsv", sep="\t", index=False)
    motion.reset_index().to_csv(tmp_path / "motion.tsv", sep="\t", index=False)
    p = np.r_[np.full(46, 0.01), np.full(54, 0.5)]
    distance = np.linspace(10, 120, 100)
    pd.DataFrame({"region_a": "a", "region_b": "b", "r": 0.3 - distance / 500, "p": p,
                  "distance_mm": distance}).to_csv(tmp_path / "qc_fc.tsv", sep="\t", index=False)
    text = write_report(tmp_path).read_text()
    assert 'class="banner warn" id="motion-banner"' in text and "LSD +0.05" in text and "DMT" not in text.split(
        'id="motion-banner"')[1].split("</div>")[0]
    assert 'class="banner warn" id="qcfc-banner"><strong>QC-FC: 46% of edges' in text
    qcfc = table_frame(parse(text).tables["qcfc-table"])
    assert float(qcfc["QC-FC vs distance (Spearman rho)"].iloc[0]) == pytest.approx(-1.0)


def test_motion_change_counts_each_drug_of_a_two_drug_subject_separately():
    from megafc.core.qc import motion_change

    scans = pd.DataFrame({
        "dataset": "x", "subject": ["1", "1", "1", "2", "2", "2"],
        "drug": ["LSD", "psilocybin", "LSD", "LSD", "psilocybin", "LSD"],
        "condition": ["drug", "drug", "placebo", "drug", "drug", "placebo"],
        "mean_fd": [0.3, 0.2, 0.2, 0.35, 0.25, 0.25], "excluded": False,
    })
    m = motion_change(scans).set_index("drug")
    assert m.loc["LSD", "fd_change_mean"] == pytest.approx(0.1)
    assert m.loc["psilocybin", "fd_change_mean"] == pytest.approx(0.0)
    assert m.loc["all", "n_subjects"] == 2 and m.loc["all", "fd_change_mean"] == pytest.approx(0.05)


def test_a_duplicate_plugin_section_is_left_out_not_fatal(caplog):
    from megafc.core.report import ReportSection
    from megafc.plugins.reports.run_report import arrange_sections

    with caplog.at_level("WARNING", logger="megafc"):
        arranged = arrange_sections([ReportSection("effects", "Again", lambda run: ""),
                                     ReportSection("extra", "Extra", lambda run: "", after="data")])
    assert [i for i, _, _ in arranged][:2] == ["data", "extra"] and [i for i, _, _ in arranged].count("effects") == 1
    assert any("second section 'effects'" in r.getMessage() for r in caplog.records)


def test_cli_report_names_its_final_folder_and_lists_the_exclusion_warnings(tmp_path):
    """A real command-line run: the report's title and run directory are the folder the results
    landed in (never the staging folder), its warnings section lists the run's exclusions (from
    warnings.tsv, as the log said them), and every path it names exists."""
    from conftest import megafc_cli

    run_dir = tmp_path / "my run"
    overrides = [o for o in TINY if not o.startswith(("pooling.", "report"))] + [
        "pooling=meta", "report=true", "qc.max_mean_fd=0.2", f"hydra.run.dir={run_dir}"]
    proc = megafc_cli(overrides, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (run_dir / "report.html").read_text()
    assert "<title>megafc report: my run</title>" in text and ".megafc-staging" not in text
    p = parse(text)
    assert f"<dt>run directory</dt><dd>{run_dir}</dd>" in text and run_dir.is_dir()
    warnings = pd.read_csv(run_dir / "warnings.tsv", sep="\t")
    excluded = warnings[warnings["message"].str.contains("scans excluded")]
    assert len(excluded) > 0
    log = (run_dir / "megafc.log").read_text()
    for message in excluded["message"]:
        assert message in log  # the same sentence the log has
        assert html.escape(f"WARNING (extract): {message}") in text
    assert all(src.startswith("data:") for src in p.imgs)


def test_glass_brain_outlines_drawn_fast_are_the_same_pixels():
    """Skipping matplotlib's autoscale while nilearn draws the outlines changes nothing drawn."""
    import io

    from matplotlib import image as mpimg

    from megafc.plugins.reports.brain import glass_brain

    rng = np.random.default_rng(0)
    coords = rng.uniform(-60, 60, (6, 3))
    mat = np.zeros((6, 6))
    mat[0, 3] = mat[3, 0] = 0.05
    panels = [("overall", mat, np.array([0.02, 0, 0, 0, 0, 0])), ("drug", -mat, np.zeros(6))]
    pixels = []
    for fast in (False, True):
        buf = io.BytesIO()
        glass_brain(panels, coords, 0.1, fast=fast).savefig(buf, format="png", dpi=40)
        buf.seek(0)
        pixels.append(mpimg.imread(buf))
    assert pixels[0].shape == pixels[1].shape and np.array_equal(pixels[0], pixels[1])


def test_glass_brain_with_only_within_network_effects():
    """Only within-network pairs credible: no edge to draw, nodes coloured (nilearn's colour bar
    once failed on that, and the report's Brain section with it)."""
    from megafc.plugins.reports.brain import glass_brain

    coords = np.random.default_rng(0).uniform(-60, 60, (6, 3))
    panels = [("overall", np.zeros((6, 6)), np.array([0.03, 0, 0, 0, 0, 0])), ("drug", np.zeros((6, 6)), np.zeros(6))]
    import io

    fig = glass_brain(panels, coords, 0.1)
    colorbars = [ax._colorbar for ax in fig.axes if hasattr(ax, "_colorbar")]
    assert len(colorbars) == 1 and colorbars[0].norm.vmin == pytest.approx(-0.1)  # the nodes' scale
    fig.savefig(io.BytesIO(), format="png", dpi=30)


def test_fast_outlines_are_undone_and_stay_in_their_thread():
    """Overlapping uses (threads) restore matplotlib's autoscale at the end, and a figure drawn
    in another thread meanwhile still autoscales."""
    import threading

    from matplotlib.axes import Axes

    from megafc.core.report import new_figure
    from megafc.plugins.reports.brain import outlines_without_autoscale

    original = Axes._update_patch_limits
    inside, release, limits = threading.Event(), threading.Event(), {}

    def hold():
        with outlines_without_autoscale():
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    inside.wait(5)
    with outlines_without_autoscale():  # overlapping, nested in this thread too
        with outlines_without_autoscale():
            pass
    ax = new_figure(2, 2).subplots()
    ax.bar([0, 1], [10, 1000])  # another thread's skip must not reach this thread
    limits["y"] = ax.get_ylim()
    release.set()
    worker.join()
    assert Axes._update_patch_limits is original
    assert limits["y"][1] >= 1000


def test_figure_margins_for_very_long_labels_still_leave_room_to_draw():
    from megafc.core.report import new_figure
    from megafc.plugins.reports.figures import place_grid, text_inches

    fig = new_figure(7, 4.2)
    ax = fig.subplots()
    place_grid(fig, 0.7, 0.15, 0.4, 0.3 + 0.6 * text_inches(["d" * 200], 8))  # a 200-character dataset name
    box = ax.get_position()
    assert box.height >= 0.45 and box.y0 > 0 and box.y1 <= 1


def test_false_sign_counts_match_the_tables(pymc_report):
    """The report's false-sign tables count, per effect type, the effects tsv's svalue <= 0.05
    and the sum of their lfsr (what the model expects to be wrong among them)."""
    p = parse(pymc_report.read_text())
    for table_id, name in (("false-signs-network-pair", "effects"), ("false-signs-summaries", "summaries")):
        shown = table_frame(p.tables[table_id]).set_index("effect type")
        rows = pd.read_csv(pymc_report.parent / f"{name}.tsv", sep="\t", keep_default_na=False, na_values=["n/a"])
        assert list(shown.index) == list(dict.fromkeys(rows["effect_type"]))
        for etype, g in rows.groupby("effect_type"):
            selected = g[g["svalue"] <= 0.05]
            assert int(shown.loc[etype, "svalue \u2264 0.05"]) == len(selected)
            assert float(shown.loc[etype, "expected false signs among these"]) == pytest.approx(
                selected["lfsr"].sum(), abs=0.051)
            assert int(shown.loc[etype, "effects"]) == len(g)
            assert float(shown.loc[etype, "error correlation allowed for"]) == pytest.approx(
                g["error_correlation"].mean(), abs=0.006)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sections are drawn in forked workers on Linux only")
def test_parallel_report_is_the_same_page_with_the_same_warnings(pymc_run, tmp_path, caplog):
    """report_workers: one worker or two (forked, Linux): the same report.html byte for byte, the same figures, and a failing
    third-party section's warning logged in both."""
    import shutil

    from megafc.core.outputs import plugin_report_sections
    from megafc.core.registry import build_registry
    from megafc.core.report import ReportSection
    from megafc.plugins.reports.run_report import write_report

    def broken(run):
        raise RuntimeError("third-party section broke")

    sections = plugin_report_sections(build_registry()) + [ReportSection("broken", "Broken", broken)]
    pages, figures = [], []
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        shutil.copytree(pymc_run, folder)
        shutil.rmtree(folder / "figures", ignore_errors=True)
        (folder / "report.html").unlink(missing_ok=True)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="megafc"):
            report = write_report(folder, shown_as=tmp_path / "final", extra_sections=sections, workers=workers)
        assert any("section 'Broken' failed" in r.getMessage() and "third-party section broke" in r.getMessage()
                   for r in caplog.records), workers
        pages.append(report.read_text())
        figures.append(sorted((p.name, p.read_bytes()) for p in (folder / "figures").iterdir()))
    assert "third-party section broke" in pages[1]
    # the same page but for the minute it was written (the header's "report written")
    written = re.compile(r"(report written</[a-z]+>\s*<[a-z]+>)[^<]*")
    assert len(written.findall(pages[0])) == 1
    assert written.sub(r"\1", pages[0]) == written.sub(r"\1", pages[1])
    assert [n for n, _ in figures[0]] == [n for n, _ in figures[1]] and figures[0] == figures[1]


def test_tables_beyond_the_known_ones_are_read_on_first_use(meta_run, tmp_path):
    """A table a plugin writes (here dataset_scales.tsv) reaches the report without core
    listing it; an absent one is None."""
    import shutil

    from megafc.core.report import load_run

    folder = tmp_path / "run"
    shutil.copytree(meta_run, folder)
    pd.DataFrame({"dataset": ["lsd_1", "lsd_2"], "drug": ["LSD", "LSD"], "mean": [1.2, 0.83], "sd": [0.1, 0.1],
                  "hdi_low": [1.0, 0.7], "hdi_high": [1.4, 0.99]}).to_csv(folder / "dataset_scales.tsv", sep="\t",
                                                                          index=False)
    run = load_run(folder)
    assert run.table("dataset_scales")["mean"].tolist() == [1.2, 0.83]
    assert run.table("no_such_table") is None
    text = write_report(folder, workers=1).read_text()
    rows = table_frame(parse(text).tables["dataset-scales-table"])
    assert rows["dataset"].tolist() == ["lsd_1", "lsd_2"] and rows["drug"].tolist() == ["LSD", "LSD"]
    assert "specificity-table" not in parse(text).tables
    pd.DataFrame({"network_a": ["Vis", "Default", "Vis"], "network_b": ["Vis", "Vis", "Vis"],
                  "effect": ["overall", "overall", "drug:LSD"], "n_pairs": [3, 6, 3], "mean": [0.01, 0.03, 0.02],
                  "hdi_low": [0.0, 0.01, 0.0], "hdi_high": [0.03, 0.05, 0.04]}).to_csv(
        folder / "specificity.tsv", sep="\t", index=False)
    shown = table_frame(parse(write_report(folder, workers=1).read_text()).tables["specificity-table"])
    assert shown["network_a"].tolist() == ["Default", "Vis"]  # the overall effect's, most uneven first


def test_the_reports_drug_tables_count_drug_scans_not_control_labels():
    """A study that writes "placebo" in the drug column of its placebo rows: the report listed
    placebo as a drug (and counted "2 drugs" for one); its scans belong to the subject's drug."""
    from megafc.plugins.reports.run_report import dataset_table, drug_table

    scans = pd.DataFrame({"dataset": ["a", "a", "a", "a", "b", "b"], "subject": ["1", "1", "2", "2", "1", "1"],
                          "drug": ["LSD", "placebo", "LSD", "placebo", "DMT", "DMT"],
                          "condition": ["drug", "placebo"] * 3, "excluded": [False, False, False, True, False, False]})
    datasets = dataset_table(scans).set_index("dataset")
    assert datasets.loc["a", "drug"] == "LSD" and datasets.loc["total", "drug"] == "2 drugs"
    drugs = drug_table(scans).set_index("drug")
    assert list(drugs.index) == ["LSD", "DMT"]
    assert drugs.loc["LSD", ["subjects kept", "drug scans kept", "control scans kept"]].tolist() == [2, 2, 1]
    # a subject with a control scan only (a placebo group, a dropout) is analysed, so counted:
    # the table had taken "subjects with a drug scan" for subjects, and their pairs for controls
    more = pd.concat([scans, pd.DataFrame({"dataset": ["a"], "subject": ["3"], "drug": ["placebo"],
                                            "condition": ["placebo"], "excluded": [False]})], ignore_index=True)
    drugs = drug_table(more).set_index("drug")
    assert drugs.loc["LSD", ["subjects kept", "drug scans kept", "control scans kept"]].tolist() == [3, 2, 2]
    assert drugs.loc["DMT", ["subjects kept", "drug scans kept", "control scans kept"]].tolist() == [1, 1, 1]
