"""The few-shot adaptation table: every method side by side, from the default recipe's model.

    python benchmarks/fewshot_adaptation.py [--run RUN_DIR] [--out DIR] [--seeds 3]

Pretrains the built-in `default` recipe (unless --run names a finished run), then evaluates one suite: zero-shot
and the few-shot task with every method (zero-shot, linear probe, kNN, NCM, GDA, Tip-Adapter, Tip-Adapter-F,
the zero-shot-initialised probe, CoOp, full and LoRA fine-tuning, WiSE-FT at α = 0.5) for 1, 2, 4, 8 and 16
shots × `--seeds` draws on `digits` and on the `mnist5k` test split. DIR/eval/report.html holds the curves.
Then WiSE-FT's robustness claim: the digits-16-shot fine-tuned model and its WiSE-FT interpolation, scored
zero-shot on mnist5k (the other dataset). Prints one JSON line per (dataset, method, shots) and per
robustness figure, then the table in markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from transferlab.adapt.finetune_classifier import FineTuneClassifier
from transferlab.config import load_recipe, load_suite
from transferlab.data.readers.sources import load_splits
from transferlab.evaluate.features import image_embeddings
from transferlab.evaluate.fewshot import sample_shots
from transferlab.evaluate.suite import evaluate
from transferlab.evaluate.zeroshot import zeroshot_classify
from transferlab.models.encoder import from_dual_encoder, zeroshot_weights
from transferlab.models.references import load_model
from transferlab.train.loop import pretrain

METHODS = ["zeroshot", "linear_probe", "knn", "ncm", "gda", "tip_adapter", "tip_adapter_f", "linear_probe_zs",
           "coop", "full", "lora", "wise_ft"]
SHOTS = [1, 2, 4, 8, 16]


def table(results: dict, seeds: int) -> list[dict]:
    rows = []
    for task in results["tasks"]:
        if task["task"] != "fewshot":
            continue
        for method in METHODS:
            for k in SHOTS:
                rows.append({"benchmark": "fewshot_adaptation", "dataset": task["dataset"], "method": method,
                             "shots": k, "seeds": seeds, "acc1": task["metrics"][f"{method}@{k}shot"],
                             "ci95": task["metrics"][f"{method}@{k}shot_ci95"]})
    return rows


def robustness(run: Path, suite) -> list[dict]:
    """Fine-tune on 16 digits per class; zero-shot accuracy on the digits and mnist5k test splits of the
    pretrained, fine-tuned and WiSE-FT (α = 0.5) image towers."""
    loaded = load_model(str(run), torch.device("cpu"))
    model, templates = loaded.encoder.module, suite.eval.templates
    data = {name: load_splits(name, suite.datasets[name], model.spec.image_size, model.spec.channels)
            for name in ("digits", "mnist5k")}
    train = data["digits"]["train"]
    chosen = sample_shots(train.labels.numpy(), 16, 0)
    rows = []
    for name, alpha in (("fine-tuned", None), ("wise_ft", 0.5)):
        tuned = FineTuneClassifier(model, train.images, train.classnames, templates, "full", alpha).fit(
            chosen[:, None], train.labels[chosen].numpy())
        for dataset in ("digits", "mnist5k"):
            rows.append(zeroshot_row(from_dual_encoder(tuned.model_, name), data[dataset]["test"], templates,
                                     name, dataset))
    for dataset in ("digits", "mnist5k"):
        rows.append(zeroshot_row(loaded.encoder, data[dataset]["test"], templates, "pretrained", dataset))
    return rows


def zeroshot_row(encoder, split, templates, model: str, dataset: str) -> dict:
    weights = zeroshot_weights(encoder.encode_text, split.classnames, templates)
    metrics, _ = zeroshot_classify(image_embeddings(encoder, split, "test", None), weights, split.labels)
    return {"benchmark": "fewshot_adaptation", "case": "robustness", "model": model,
            "zeroshot_on": dataset, "acc1": metrics["acc1"]}


def markdown(rows: list[dict]) -> str:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        lines += [f"\n{dataset}\n", "| method | " + " | ".join(f"{k} shots" for k in SHOTS) + " |",
                  "|---|" + "---|" * len(SHOTS)]
        for method in METHODS:
            cells = [f"{r['acc1']:.3f}" + ("" if r["ci95"] is None else f" ± {r['ci95']:.3f}") for r in rows
                     if r["dataset"] == dataset and r["method"] == method]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished run of the default recipe (default: train one)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="fewshot-")))
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = args.run
    if run is None:
        run = args.out / "model"
        pretrain(load_recipe("default"), run)
    suite = load_suite("default", ["eval.tasks=[zeroshot_classification,fewshot]", f"eval.fewshot.seeds={args.seeds}",
                                   f"eval.fewshot.methods=[{','.join(METHODS)}]"])
    [results] = evaluate([(load_model(str(run), torch.device("cpu")).encoder, suite)], args.out / "eval")
    rows = table(results, args.seeds)
    for row in rows + robustness(run, suite):
        print(json.dumps(row), flush=True)
    print(markdown(rows))
    print(f"report: {args.out / 'eval' / 'report.html'}")


if __name__ == "__main__":
    main()
