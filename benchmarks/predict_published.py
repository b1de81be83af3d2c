"""`transferlab predict` on a published scaling study: small runs fitted, the largest runs predicted.

Two studies (`--study`):

- `openclip`: Cherti et al. 2023 (github.com/LAION-AI/scaling-laws-openclip); its two tables are not shipped (the
  repository has no license), so give a clone of it with --data, or set TRANSFERLAB_SCALING_STUDY, or copy the two
  CSVs into tests/predict/published/ (tests/predict/published/README.md).
- `overtraining`: Gadre et al. 2024 (github.com/mlfoundations/scaling, MIT), shipped converted as
  tests/predict/published/gadre2024/runs.csv: per training dataset the 2 runs with the most compute (6.9B at
  M = 20, the over-trained 1.4B) predicted from the others, for the C4 loss and the 17- and 46-task average accuracy,
  against the study's own loss and error laws fitted its way (transferlab/predict/overtraining_backtest.py).

Nothing is fetched at run time.

The protocol is docs/prediction.md's, fixed before any held-out error was computed (constants in
transferlab/predict/openclip_study.py): per upstream dataset, the runs below 10¹² GMACs are fitted and the runs above
predicted, for six targets, by `transferlab predict` with no flag besides --holdout, against the study's own power law
in compute fitted on its Pareto frontier and the same line through all fitted runs.

    python benchmarks/predict_published.py                 # prints the table, writes it into BENCHMARKS.md
    python benchmarks/predict_published.py --split dev     # development: runs below the threshold only
    python benchmarks/predict_published.py --study overtraining   # the second study, into BENCHMARKS.md too

For the first study, `--split dev` never reads a run above the threshold: in each series the two largest-compute of
the 7 fitted runs (above 2.6·10¹¹ GMACs) are predicted from the other 5, for the main metric of every downstream
dataset.

Prints one JSON line per target and one for the mean over targets, then the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from datetime import date
from pathlib import Path

from transferlab.predict import overtraining_study
from transferlab.predict.backtest import backtest, summarise
from transferlab.predict.openclip_study import LEVEL, SOURCE_COMMIT, TARGETS, THRESHOLD_GMACS, load_study
from transferlab.predict.overtraining_backtest import backtest_overtraining
from transferlab.predict.runs_table import load_runs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "tests" / "predict" / "published"
OVERTRAINING_RUNS = DEFAULT_DATA / "gadre2024" / "runs.csv"
DEV_THRESHOLD_GMACS = 2.6e11
STUDIES = {  # markers in BENCHMARKS.md, heading of a new section, baselines as (key, column title)
    "openclip": ("predict_published", "## Predicting large runs from a published scaling study (issue 27)",
                 (("pareto", "study's fit (Pareto)"), ("loglog", "log-log line"))),
    "overtraining": ("predict_published_overtraining",
                     "## Predicting large runs from a second published study: over-trained language models",
                     (("study", "study's fit (its 5+1 runs)"), ("all_runs", "study's laws, every fitted run"))),
}


def dev_targets(runs: list[dict]) -> list[str]:
    """The main metric of every downstream dataset that every run has: top-1 accuracy, or retrieval recall@5."""
    columns = [name for name in runs[0] if name.endswith(("/acc1", "/image_retrieval_recall@5"))]
    return [name for name in columns if all(isinstance(run.get(name), float) for run in runs)]


def markdown(summary: dict, command: str, study: str) -> str:
    baselines = STUDIES[study][2]
    commit = SOURCE_COMMIT if study == "openclip" else overtraining_study.SOURCE_COMMIT
    lines = [f"Command: `{command}` ({date.today().isoformat()}, study commit `{commit[:7]}`). "
             f"{summary['n']} held-out predictions; MAE in points of the metric (of the loss for `loss`), MRE = "
             f"|predicted − true| / true; coverage = held-out runs inside transferlab's {LEVEL:.0%} interval.", "",
             "| target | n | transferlab law | transferlab MAE | MRE | coverage | "
             + " | ".join(f"{title} MAE | MRE" for _, title in baselines) + " |",
             "|---|---|---|---|---|---|" + "---|---|" * len(baselines)]
    for target, entry in summary["targets"].items():
        mae = "{:.3f}" if target == "loss" else "{:.2f}"
        cells = [target, str(entry["n"]), ", ".join(entry["laws"])]
        for method in ("transferlab", *(key for key, _ in baselines)):
            cells += [mae.format(entry[method]["mae"] * (1 if target == "loss" else 100)),
                      f"{100 * entry[method]['mre']:.2f}%"]
            if method == "transferlab":
                cells.append(f"{round(entry['coverage'] * entry['n'])}/{entry['n']}")
        lines.append("| " + " | ".join(cells) + " |")
    mean = summary["mean_mre"]
    covered = round(summary["coverage"] * summary["n"])
    lines.append(f"| **mean over targets** | {summary['n']} | | | **{100 * mean['transferlab']:.2f}%** | "
                 f"**{covered}/{summary['n']}** | "
                 + " | ".join(f"| **{100 * mean[key]:.2f}%**" for key, _ in baselines) + " |")
    return "\n".join(lines)


def write_benchmarks_md(table: str, study: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace the text between the study's markers in BENCHMARKS.md with `table` (append a section if absent)."""
    marker, heading, _ = STUDIES[study]
    begin, end = f"<!-- {marker}: begin -->", f"<!-- {marker}: end -->"
    text = path.read_text()
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = f"{text.rstrip()}\n\n{heading}\n\n{block}\n"
    path.write_text(text)


def held_out_rows(args: argparse.Namespace) -> list:
    """The backtest's rows for the study and split asked for."""
    if args.study == "overtraining":
        if args.split == "dev":
            raise SystemExit("--split dev is the first study's development split; the second study has none "
                             "(docs/prediction.md)")
        return backtest_overtraining(load_runs(OVERTRAINING_RUNS), overtraining_study.TARGETS,
                                     overtraining_study.HOLDOUT, bootstrap=args.bootstrap, table=OVERTRAINING_RUNS)
    runs = load_study(args.data)
    if args.split == "dev":
        runs = [run for run in runs if run["gmacs_total"] < THRESHOLD_GMACS]
        return backtest(runs, dev_targets(runs), DEV_THRESHOLD_GMACS, bootstrap=args.bootstrap, table=args.data)
    return backtest(runs, TARGETS, THRESHOLD_GMACS, bootstrap=args.bootstrap, table=args.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("TRANSFERLAB_SCALING_STUDY", DEFAULT_DATA)),
                        help="the folder with trained_models_info.csv and zeroshot_results.csv")
    parser.add_argument("--study", choices=tuple(STUDIES), default="openclip")
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="do not write the table into BENCHMARKS.md")
    args = parser.parse_args()
    summary = summarise(held_out_rows(args))
    for target, entry in summary["targets"].items():
        print(json.dumps({"published_study": args.study, "split": args.split, "target": target, **entry}))
    print(json.dumps({"published_study": args.study, "split": args.split, "target": "mean",
                      "mean_mre": summary["mean_mre"], "coverage": summary["coverage"], "n": summary["n"]}))
    command = ("python benchmarks/predict_published.py" + (" --study overtraining" if args.study == "overtraining"
                                                           else "") + (" --split dev" if args.split == "dev" else ""))
    table = markdown(summary, command, args.study)
    print(table)
    if args.split == "test" and not args.no_write and args.bootstrap == 200:
        write_benchmarks_md(table, args.study)


if __name__ == "__main__":
    main()
