"""Render a leaderboard page in headless Chromium and screenshot it: a manual check of its layout and script.

Builds results.json files of six synthetic models over two suites' worth of tasks — one image-only model
that skipped zero-shot and retrieval, one evaluated on a cifar10 with another dataset fingerprint, one older
file without provenance, a named collection — writes the leaderboard to OUT, screenshots leaderboard.html,
and clicks the "avg rank" header in a second headless load to check that the page's own script sorts the
rows as the Python code does. Prints one JSON line. Needs Debian's chromium (`apt-get install chromium`).
Not part of the test suite.

    python benchmarks/render_leaderboard.py [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import render_report
from PIL import Image
from render_report import MAX_HEIGHT, _chromium

from transferlab.evaluate.leaderboard import build, write_csv, write_markdown
from transferlab.evaluate.leaderboard_page import write_html

WIDTH = 1600  # the page's max-width: all 17 columns without scrolling
DATASETS = {"cifar10": 0.0, "cifar100": 0.2, "stl10": -0.05, "digits": 0.05, "pets": 0.1}
TASKS = ("zeroshot_classification", "linear_probe", "knn")
MODELS = (("ViT-B-32 laion2b", 0.82, "full"), ("ViT-B-16 datacomp", 0.86, "full"), ("ViT-S-32 run", 0.71, "full"),
          ("resnet50 a1_in1k", 0.8, "image-only"), ("ViT-B-32 other cifar10", 0.84, "mismatch"),
          ("clip-tiny (2024 run)", 0.6, "old"))


def fingerprint(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def synthetic(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    fingerprints = {name: fingerprint(name) for name in [*DATASETS, "flickr30k"]}
    paths = []
    for name, skill, kind in MODELS:
        tasks = []
        for dataset, hard in DATASETS.items():
            for task in TASKS:
                value = float(np.clip(skill - hard - 0.08 * (task == "zeroshot_classification")
                                      + rng.normal(0, 0.03), 0, 1))
                skipped = kind == "image-only" and task == "zeroshot_classification"
                tasks.append({"task": task, "dataset": dataset, "split": "test", "seconds": 1.0,
                              "metrics": {} if skipped else {"acc1": value},
                              **({"skipped": "no text tower"} if skipped else {}),
                              **({} if kind == "old" else {"main": "acc1"})})
        recall = float(np.clip(skill - 0.35 + rng.normal(0, 0.03), 0, 1))
        tasks.append({"task": "retrieval", "dataset": "flickr30k", "split": "test", "seconds": 1.0,
                      **({"metrics": {}, "skipped": "no text tower"} if kind == "image-only" else
                         {"metrics": {"image_retrieval_recall@1": recall, "text_retrieval_recall@1": recall + 0.1}})})
        tasks.append({"task": "clustering", "dataset": "digits", "split": "test", "seconds": 1.0,
                      "metrics": {"nmi": float(skill - 0.1), "ari": float(skill - 0.2)}})
        results = {"model": name, "suite": "full", "created": "2026-11-24T10:00:00+00:00", "tasks": tasks}
        if kind != "old":
            own = dict(fingerprints, cifar10=fingerprint("cifar10-relabelled") if kind == "mismatch"
                       else fingerprints["cifar10"])
            results["provenance"] = {
                "transferlab": "0.1.0", "commit": "3f2c1e0", "dirty": False, "device": "cpu", "precision": "float32",
                "libraries": {"torch": "2.14.1", "open_clip": "2.24.0"}, "suite_hash": "9c1d2e3f4a5b",
                "datasets": {d: {"samples": 10000, "fingerprint": fp} for d, fp in own.items()}}
            results["collection"] = {"name": "datacomp", "average": float(skill - 0.2), "tasks": 38, "ran": 17,
                                     "missing": ["imagenet1k", "imagenet-a"]}
        path = folder / "evals" / re.sub(r"[^A-Za-z0-9]+", "_", name) / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1), encoding="utf-8")
        paths.append(path)
    return paths


def sorted_by_click(page: Path, header: str) -> list[str]:
    """The model labels in the order the page shows them after its own script handles a click on `header`."""
    probe = page.with_name(page.stem + ".click-probe.html")
    script = ("<script>addEventListener('load', () => { const th = [...document.querySelectorAll('table.board th')]"
              f".find(h => h.textContent.startsWith({json.dumps(header)})); th.click(); "
              "document.body.dataset.order = JSON.stringify([...document.querySelectorAll('table.board tbody tr')]"
              ".map(r => r.cells[1].textContent.replace(/ ⚠.*$/, '').trim())); });</script></body>")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    try:
        dom = _chromium(f"--window-size={WIDTH},1000", "--dump-dom", probe.resolve().as_uri())
    finally:
        probe.unlink()
    return json.loads(html.unescape(re.search(r'data-order="([^"]*)"', dom).group(1)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None, help="directory for the leaderboard files and PNG")
    args = parser.parse_args()
    out = (args.out or Path(tempfile.mkdtemp(prefix="render-leaderboard-"))).resolve()
    os.chdir(out.parent)  # messages name results files relative to the working directory, as a user sees them
    board = build(synthetic(out / "inputs"))
    page = write_html(board, out / "leaderboard.html")
    write_csv(board, out / "leaderboard.csv")
    write_markdown(board, out / "leaderboard.md")
    render_report.WIDTH = WIDTH  # lay the page out at the screenshot's width
    height = render_report.page_height(page)
    screenshot = out / "leaderboard.png"
    _chromium(f"--window-size={WIDTH},{min(height, MAX_HEIGHT)}", f"--screenshot={screenshot.resolve()}",
              page.resolve().as_uri())
    with Image.open(screenshot) as shot:  # a page of flat colours: a 128-colour palette keeps it small and sharp
        shot.convert("RGB").quantize(128).save(screenshot, optimize=True)
    clicked = sorted_by_click(page, "avg rank")
    expected = [r.label for r in build(synthetic(out / "inputs"), sort="rank").rows]
    print(json.dumps({"page": str(page), "page_bytes": page.stat().st_size, "screenshot": str(screenshot),
                      "screenshot_bytes": screenshot.stat().st_size, "page_height": height,
                      "flags": [f.kind for f in board.flags], "click_sort_matches": clicked == expected}), flush=True)


if __name__ == "__main__":
    main()
