"""The report of a collection run says which collection, how many of its datasets ran, the average over those
(one main metric per dataset, listed) and the missing ones with their fetch commands: checked in the HTML and,
where Debian's chromium is installed, as laid out and rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from transferlab.evaluate.collections import COLLECTIONS, collection_suite
from transferlab.evaluate.report import write_report
from transferlab.evaluate.suite import collection_summary

RAN = {"cifar10": ("zeroshot_classification", "acc1", 0.8), "wilds/fmow": ("zeroshot_classification",
                                                                          "acc_worst_region", 0.25),
       "misc/winogavil": ("association", "jaccard_score_10-12", 0.4)}


def results(tmp_path) -> dict:
    """A datacomp run over three datasets, cifar10 with a linear probe after its zero-shot; the missing ones as
    `collection_suite` lists them for a data root holding those three."""
    root = tmp_path / "data"
    for folder in ("wds_cifar10_test/test", "wds_wilds-fmow_test/test", "hf_cache/nlphuji___winogavil"):
        (root / folder).mkdir(parents=True)
    (root / "wds_cifar10_test/test/nshards.txt").write_text("1\n")
    (root / "wds_wilds-fmow_test/test/nshards.txt").write_text("1\n")
    suite = collection_suite("datacomp", root)
    tasks = [{"task": task, "dataset": dataset, "split": "test", "metrics": {main: value}, "main": main,
              "seconds": 1.0} for dataset, (task, main, value) in RAN.items()]
    tasks.append({"task": "linear_probe", "dataset": "cifar10", "split": "test", "metrics": {"acc1": 0.95},
                  "main": "acc1", "seconds": 1.0})
    return {"model": "clip", "suite": "datacomp", "created": "now", "tasks": tasks,
            "collection": collection_summary(suite.collection, tasks)}


def test_the_average_is_one_main_metric_per_dataset(tmp_path):
    summary = results(tmp_path)["collection"]
    assert summary["ran"] == 3 and summary["size"] == 38 and len(summary["missing"]) == 35
    assert summary["average"] == pytest.approx((0.8 + 0.25 + 0.4) / 3)  # cifar10's zero-shot, not its probe


def test_the_report_names_the_collection_its_average_and_what_is_missing(tmp_path):
    page = write_report(tmp_path / "report.html", [{"results": results(tmp_path)}]).read_text()
    section = page[page.index('<div class="collection">'):page.index("</details>")]
    assert "<strong>3 of 38</strong> datasets ran" in section and "<strong>48.3%</strong>" in section
    assert section.count("<tr>") == 4 and "acc_worst_region" in section and "25.0%" in section
    assert "35 not run" in section
    assert ("<code>hf download --repo-type dataset djghosh/wds_imagenet1k_test --local-dir "
            f"{tmp_path / 'data'}/wds_imagenet1k_test</code>") in section


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The report's text as laid out (innerText: what is rendered), and the collection block's height in pixels.
PROBE = ("<script>addEventListener('load', () => { const c = document.querySelector('div.collection');"
         "const out = document.createElement('pre'); out.id = 'probe';"
         "out.textContent = JSON.stringify({text: c.innerText, height: c.getBoundingClientRect().height,"
         "top: c.getBoundingClientRect().top}); document.body.append(out); })</script></body>")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_collection_summary_renders_in_headless_chromium(tmp_path):
    page = write_report(tmp_path / "report.html", [{"results": results(tmp_path)}])
    page.write_text(page.read_text().replace("</body>", PROBE))
    profile = tmp_path / "chromium-profile"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", "--window-size=1280,1000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S).group(1).replace("&amp;", "&")
                       .replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))
    text = probe["text"]
    assert "datacomp: 3 of 38 datasets ran; the average of their main metrics is 48.3%" in text
    assert "wilds/fmow\tzeroshot_classification\tacc_worst_region\t25.0%" in text  # the table, laid out
    assert "35 not run, and where to get them" in text
    for entry in COLLECTIONS["datacomp"]:
        assert (entry.key in RAN) != (f"{entry.key}: not found under" in text)
    assert "hf download --repo-type dataset djghosh/wds_imagenet1k_test" in text
    assert probe["height"] > 500 and probe["top"] < 300  # shown, near the top: before the summary table
