"""`transferlab predict` on a published scaling study: small runs fitted, the largest runs predicted.

The study is Cherti et al. 2023 (github.com/LAION-AI/scaling-laws-openclip); its two tables are not shipped (the
repository has no license), so give a clone of it with --data, or set TRANSFERLAB_SCALING_STUDY, or copy the two
CSVs into tests/predict/published/ (tests/predict/published/README.md). Nothing is fetched at run time.

The protocol is docs/prediction.md's, fixed before any held-out error was computed (constants in
transferlab/predict/openclip_study.py): per upstream dataset, the runs below 10¹² GMACs are fitted and the runs above
predicted, for six targets, by `transferlab predict` with no flag besides --holdout, against the study's own power law
in compute fitted on its Pareto frontier and the same line through all fitted runs.

    python benchmarks/predict_published.py                 # prints the table, writes it into BENCHMARKS.md
    python benchmarks/predict_published.py --split dev     # development: runs below the threshold only

`--split dev` never reads a run above the threshold: in each series the two largest-compute of the 7 fitted runs
(above 2.6·10¹¹ GMACs) are predicted from the other 5, for the main metric of every downstream dataset.

Prints one JSON line per target and one for the mean over targets, then the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from datetime import date
from pathlib import Path

from transferlab.predict.backtest import backtest, summarise
from transferlab.predict.openclip_study import LEVEL, SOURCE_COMMIT, TARGETS, THRESHOLD_GMACS, load_study

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "tests" / "predict" / "published"
DEV_THRESHOLD_GMACS = 2.6e11
BEGIN, END = "<!-- predict_published: begin -->", "<!-- predict_published: end -->"
HEADING = "## Predicting large runs from a published scaling study (issue 27)"


def dev_targets(runs: list[dict]) -> list[str]:
    """The main metric of every downstream dataset that every run has: top-1 accuracy, or retrieval recall@5."""
    columns = [name for name in runs[0] if name.endswith(("/acc1", "/image_retrieval_recall@5"))]
    return [name for name in columns if all(isinstance(run.get(name), float) for run in runs)]


def markdown(summary: dict, command: str) -> str:
    lines = [f"Command: `{command}` ({date.today().isoformat()}, study commit `{SOURCE_COMMIT[:7]}`). "
             f"{summary['n']} held-out predictions; MAE in points of the metric, MRE = |predicted − true| / true; "
             f"coverage = held-out runs inside transferlab's {LEVEL:.0%} interval.", "",
             "| target | n | transferlab law | transferlab MAE | MRE | coverage | study's fit (Pareto) MAE | MRE "
             "| log-log line MAE | MRE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for target, entry in summary["targets"].items():
        cells = [target, str(entry["n"]), ", ".join(entry["laws"])]
        for method in ("transferlab", "pareto", "loglog"):
            cells += [f"{100 * entry[method]['mae']:.2f}", f"{100 * entry[method]['mre']:.2f}%"]
            if method == "transferlab":
                cells.append(f"{round(entry['coverage'] * entry['n'])}/{entry['n']}")
        lines.append("| " + " | ".join(cells) + " |")
    mean = summary["mean_mre"]
    covered = round(summary["coverage"] * summary["n"])
    lines.append(f"| **mean over targets** | {summary['n']} | | | **{100 * mean['transferlab']:.2f}%** | "
                 f"**{covered}/{summary['n']}** | | **{100 * mean['pareto']:.2f}%** | | "
                 f"**{100 * mean['loglog']:.2f}%** |")
    return "\n".join(lines)


def write_benchmarks_md(table: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the text between the markers of BENCHMARKS.md's section with `table` (append the section if absent)."""
    text = path.read_text()
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = f"{text.rstrip()}\n\n{HEADING}\n\n{block}\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("TRANSFERLAB_SCALING_STUDY", DEFAULT_DATA)),
                        help="the folder with trained_models_info.csv and zeroshot_results.csv")
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="do not write the table into BENCHMARKS.md")
    args = parser.parse_args()
    runs = load_study(args.data)
    if args.split == "dev":
        runs = [run for run in runs if run["gmacs_total"] < THRESHOLD_GMACS]
        targets, threshold = dev_targets(runs), DEV_THRESHOLD_GMACS
    else:
        targets, threshold = list(TARGETS), THRESHOLD_GMACS
    summary = summarise(backtest(runs, targets, threshold, bootstrap=args.bootstrap, table=args.data))
    for target, entry in summary["targets"].items():
        print(json.dumps({"split": args.split, "target": target, **entry}))
    print(json.dumps({"split": args.split, "target": "mean", "mean_mre": summary["mean_mre"],
                      "coverage": summary["coverage"], "n": summary["n"]}))
    command = "python benchmarks/predict_published.py" + (" --split dev" if args.split == "dev" else "")
    table = markdown(summary, command)
    print(table)
    if args.split == "test" and not args.no_write and args.bootstrap == 200:
        write_benchmarks_md(table)


if __name__ == "__main__":
    main()
