"""The `transferlab` command: one subcommand per step of the loop.

    transferlab run [RECIPE]           pretrain, then evaluate (the built-in `default` recipe by default)
    transferlab pretrain [RECIPE]      pretrain only
    transferlab eval MODEL [MODEL...]  evaluate runs, checkpoints, openclip:, hf: or timm: models on a suite
    transferlab adapt MODEL --method M adapt a model to a dataset from a few labelled examples per class (--shots)
    transferlab rank MODEL [MODEL...]  transferability scores of models on a dataset, without training on it
    transferlab predict RUNS --target  scaling-law fits on a table of runs, extrapolated to larger runs
    transferlab curate POOL --out DIR  balance (MetaCLIP), deduplicate and filter an image-text pool of shards
    transferlab export RUN --to FORMAT an open_clip checkpoint or safetensors + config, with a model card
    transferlab leaderboard RESULTS... models × tasks from many results.json, with checks that they compare

Every command takes `--out DIR` and `--set key=value`; bad input ends with a one-paragraph message and
exit status 2, never a traceback. `run`, `pretrain` and `eval` also run as one process per device under
torchrun (`torchrun --nproc_per_node N -m transferlab run ...`); rank 0 prints and writes.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferlab.config.catalog import ADAPTATION_METHODS
from transferlab.errors import Interrupted, UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="transferlab: pretrain encoders and measure how well they transfer.")
console = Console(stderr=True)

RecipeArg = Annotated[str | None, typer.Argument(help="a YAML recipe file or a built-in recipe name "
                                                         "(default: the built-in 'default')")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="the run directory (default: runs/<name>-<time>)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a recipe key: --set train.steps=300")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue the run in --out from its newest checkpoint, or "
                                                          "start it there if --out is empty (the same command line "
                                                          "starts and continues a preemptible job)")]
ProfileOpt = Annotated[bool, typer.Option("--profile", help="profile 10 training steps; writes where the time "
                                                            "goes to RUN/profile.txt")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:<i> or mps "
                                                                   "(default: the recipe's, normally auto)")]


def friendly(command):
    """Turn a UserError into its message and exit status 2; a signal's stop into its message and 128 + signal."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from transferlab import distributed

        try:
            return command(*args, **kwargs)
        except UserError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Interrupted as stop:
            if distributed.current().main:  # every rank stopped at the same step; one says so
                console.print(f"[bold yellow]stopped:[/] {escape(str(stop))}", highlight=False, soft_wrap=True)
            raise typer.Exit(128 + stop.signum) from None
        finally:
            distributed.stop()
    return wrapper


def _profiled(overrides: list[str] | None, profile: bool) -> list[str]:
    return list(overrides or []) + (["train.profile_steps=10"] if profile else [])


def _main_prints() -> bool:
    """Join the torchrun job if this is one; whether this process is the one that prints (rank 0)."""
    from transferlab import distributed

    return distributed.start().main


@app.command()
@friendly
def run(recipe: RecipeArg = None, out: OutOpt = None, set_: SetOpt = None, resume: ResumeOpt = False,
        device: DeviceOpt = None, profile: ProfileOpt = False) -> None:
    """Pretrain on a recipe, then evaluate the result: the main job."""
    main = _main_prints()
    run_dir, resolved = _prepare_run(recipe, out, _profiled(set_, profile), resume, device)
    model = _pretrain(resolved, run_dir, resume)
    results = _evaluate_and_show(model, resolved, run_dir, main)
    if main:
        from transferlab.train.run_summary import register_run

        console.print(f"registered in {register_run(run_dir, model, resolved, results)}", soft_wrap=True)


@app.command()
@friendly
def pretrain(recipe: RecipeArg = None, out: OutOpt = None, set_: SetOpt = None, resume: ResumeOpt = False,
             device: DeviceOpt = None, profile: ProfileOpt = False) -> None:
    """Pretrain on a recipe; evaluate later with `transferlab eval RUN_DIR`."""
    main = _main_prints()
    run_dir, resolved = _prepare_run(recipe, out, _profiled(set_, profile), resume, device)
    _pretrain(resolved, run_dir, resume)
    if main:
        console.print(f"run directory: {run_dir}")


@app.command("eval")
@friendly
def eval_(models: Annotated[list[str], typer.Argument(help="run, checkpoint or export directories, openclip:<arch>:"
                                                           "<pretrained tag>, openclip:<config>:<file or random>, "
                                                           "openclip:hf-hub:<repo>, hf:<dir, package or hub id>, "
                                                           "timm:<name>.<tag>, timm:<name>:<tag, file or random>")],
          suite: Annotated[str | None, typer.Option(
              "--suite", help="a suite YAML file, a built-in suite name, or a benchmark collection (datacomp, vtab, "
                              "retrieval; with --data-root) (default: a run's own recipe, else 'default')")] = None,
          data_root: Annotated[Path | None, typer.Option(
              "--data-root", help="the folder holding a collection's datasets (one folder each, as their downloads "
                                  "name them), or hf-hub:clip-benchmark / hf-hub:djghosh to fetch them through the "
                                  "hub cache")] = None,
          out: Annotated[Path | None, typer.Option("--out", help="where results go (default: <run>/eval for one "
                                                                 "run, else runs/eval-<time>)")] = None,
          set_: SetOpt = None, device: DeviceOpt = None,
          model_card: Annotated[bool, typer.Option("--model-card", help="write the results into each run's "
                                                                        "README.md model card")] = False,
          embedding_map: Annotated[str, typer.Option("--embedding-map", help="pca or tsne")] = "pca") -> None:
    """Evaluate models without retraining; several models are compared side by side in one report."""
    from transferlab.config import load_suite
    from transferlab.distributed import local_device, on_main
    from transferlab.evaluate.collections import COLLECTIONS, collection_suite
    from transferlab.evaluate.suite import evaluate, suite_of
    from transferlab.models.references import load_model

    main = _main_prints()
    if embedding_map not in ("pca", "tsne"):
        raise UserError(f"--embedding-map must be pca or tsne, not {embedding_map!r}.")
    if data_root is not None and suite not in COLLECTIONS:
        raise UserError(f"--data-root goes with a collection: --suite {' | '.join(COLLECTIONS)}.")
    resolved, overrides = local_device(device or "auto"), list(set_ or [])
    loaded = [load_model(ref, resolved, () if suite else overrides) for ref in models]
    for item in loaded if main else []:
        _say_if_random(item.encoder.name, item.encoder.weights)
    chosen = None if suite is None else collection_suite(suite, data_root, overrides) if suite in COLLECTIONS else \
        load_suite(suite, overrides)
    pairs = [(item.encoder, chosen if chosen is not None else
              suite_of(item.recipe) if item.recipe is not None else load_suite("default", overrides))
             for item in loaded]
    if out is None:
        if len(loaded) == 1 and loaded[0].run_dir is not None:
            out = _own_eval_dir(models[0], loaded[0])
        else:
            out = on_main(lambda: Path("runs") / f"eval-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    all_results = evaluate(pairs, out, embedding_method=embedding_map)
    if not main:
        return
    for results in all_results:
        _show(results)
    if model_card:
        _write_model_cards(loaded, all_results, out)
    console.print(f"results: {out}\nreport:  {out / 'report.html'}", soft_wrap=True)


def _say_if_random(name: str, weights: dict) -> None:
    """One line on the console when a model's weights are a random initialisation (models/weights.py)."""
    from transferlab.models.weights import is_random, random_notice

    if is_random(weights):
        console.print(f"[bold yellow]random weights:[/] {escape(random_notice(name, weights))}", soft_wrap=True,
                      highlight=False)


def _say_if_named_random(refs: dict[str, str | None]) -> None:
    """One line per model a command names with random weights, said before its workers load it."""
    from transferlab.models.weights import named_random

    for option, ref in refs.items():
        if ref and named_random(ref):
            console.print(f"[bold yellow]random weights:[/] {escape(ref)} ({option}) is a random initialisation: "
                          f"what it decides comes from an untrained network, not a published or trained model.",
                          soft_wrap=True, highlight=False)


def _own_eval_dir(ref: str, item) -> Path:
    """Where `transferlab eval REF` writes by default: <run>/eval for a run, <run>/eval-step_<n> for one of
    its checkpoints."""
    is_run = Path(ref).resolve() == item.run_dir.resolve()
    return item.run_dir / ("eval" if is_run else f"eval-{item.checkpoint.name}")


def _one_process(command: str) -> None:
    from transferlab.distributed import launch_env

    if launch_env().size > 1:
        raise UserError(f"transferlab {command} runs in one process; launch it without torchrun or srun.")


@app.command()
@friendly
def rank(models: Annotated[list[str], typer.Argument(help="runs, checkpoints, openclip: or hf: models to score")],
         data: Annotated[str, typer.Option("--data", help="a dataset of the suite")] = "digits",
         suite: Annotated[str | None, typer.Option("--suite", help="where --data and the templates are defined "
                                                                   "(default: the built-in 'default')")] = None,
         task: Annotated[str, typer.Option("--task", help="the measured downstream task the scores are "
                                                          "correlated with (from each run's results.json)")]
         = "linear_probe",
         out: OutOpt = None, set_: SetOpt = None, device: DeviceOpt = None) -> None:
    """Predict which models will transfer best to a dataset, without training on it; writes OUT/rank.json."""
    from transferlab.config import load_suite
    from transferlab.evaluate.ranking import measured_metric, rank_correlations, transferability_scores
    from transferlab.evaluate.suite import embedded_dataset
    from transferlab.fileio import atomic_write
    from transferlab.models.references import load_model
    from transferlab.runtime import resolve_device

    _one_process("rank")
    chosen = load_suite(suite or "default", list(set_ or []))
    out = out or Path("runs") / f"rank-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    rows = []
    for ref in models:
        item = load_model(ref, resolve_device(device or "auto"))
        _say_if_random(item.encoder.name, item.encoder.weights)
        embedded = embedded_dataset(item.encoder, chosen, data, out / "features")
        results = None if item.run_dir is None else _own_eval_dir(ref, item) / "results.json"
        rows.append({"model": ref, "scores": transferability_scores(embedded, chosen.eval),
                     "measured": measured_metric(results, task, data)})
    correlations = rank_correlations([r["scores"] for r in rows], [r["measured"] for r in rows])
    record = {"dataset": data, "split": "train", "task": task, "models": rows, "correlations": correlations}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "rank.json", json.dumps(record, indent=1))
    names = list(dict.fromkeys(name for row in rows for name in row["scores"]))
    table = Table(title=f"transferability · {data} (train split); models as numbered below", title_justify="left")
    table.add_column("score", no_wrap=True)
    for number in range(1, len(rows) + 1):
        table.add_column(f"#{number}", justify="right", no_wrap=True)
    if correlations:
        table.add_column(f"ρ vs {task}", justify="right", no_wrap=True)
    for name in names:
        spearman = correlations.get(name, {}).get("spearman")
        table.add_row(name, *[_format("", row["scores"].get(name)) for row in rows],
                      *([_format("", spearman)] if correlations else []))
    table.add_row(f"{task} acc1", *[_format("", row["measured"]) for row in rows], *([""] if correlations else []))
    Console().print(table)
    for number, row in enumerate(rows, 1):
        console.print(f"#{number}: {row['model']}", soft_wrap=True, highlight=False)
    console.print(f"scores: {out / 'rank.json'}", soft_wrap=True)


@app.command()
@friendly
def predict(runs: Annotated[Path, typer.Argument(help="a CSV/TSV/JSONL table of runs (transferlab run writes "
                                                     "<out>/../runs.jsonl)")],
            target: Annotated[str, typer.Option("--target", help="the column to predict: loss, or a downstream "
                                                                 "metric such as linear_probe/digits/acc1")],
            law: Annotated[str | None, typer.Option("--law", help="chain (loss law then error law), overtraining "
                                                                  "(loss), power (E + A·x^-α of --x), loglog (A·x^-α "
                                                                  "of --x), auto (power or loglog, whichever "
                                                                  "predicts the largest runs best); default: from "
                                                                  "the table's columns")] = None,
            x: Annotated[str, typer.Option("--x", help="the column of the power and loglog laws")] = "flops",
            holdout: Annotated[int, typer.Option("--holdout", help="leave out the K runs with the most compute and "
                                                                   "report the error of their predictions", min=0)]
            = 0,
            at: Annotated[list[str] | None, typer.Option("--at", help="predict a run: params,samples (chain, "
                                                                      "overtraining) or x (power)")] = None,
            bootstrap: Annotated[int, typer.Option("--bootstrap", help="bootstrap resamples", min=0)] = 200,
            where: Annotated[list[str] | None, typer.Option("--where", help="fit only the runs with COLUMN=VALUE, "
                                                                            "e.g. data=rpj (repeat to combine)")]
            = None,
            out: OutOpt = None) -> None:
    """Fit a scaling law to small runs and predict larger ones; writes OUT/predict.json and OUT/fit.png."""
    from transferlab.predict.command import predict_runs
    from transferlab.predict.scaling import DEFAULT_LEVEL

    _one_process("predict")
    out = out or Path("runs") / f"predict-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    record = predict_runs(runs, target, law, x, holdout, list(at or []), out, bootstrap, where=list(where or []))
    choice = record["law_choice"]
    console.print(f"law: {record['law']} — {choice.get('reason') or choice['rule']}", soft_wrap=True, highlight=False)
    for name, report in record["fit"].items():
        console.print(f"{name} law fitted on {record['runs_fitted']} runs: " + ", ".join(
            f"{p}={v['estimate']:.4g} [{v['low']:.3g}, {v['high']:.3g}]" if v["low"] is not None
            else f"{p}={v['estimate']:.4g}" for p, v in report["params"].items()), soft_wrap=True, highlight=False)
    rows = record["held_out"] + record["at"]
    if rows:
        table = Table(title=f"{record['law']} · {target}", title_justify="left")
        for column in ("run", "predicted", f"{DEFAULT_LEVEL:.0%} interval", "true", "rel. error", "extrapolation"):
            table.add_column(column, justify="left" if column == "run" else "right")
        for row in rows:
            table.add_row(Path(row["run"]).name or row["run"], f"{row['predicted']:.4g}{'*' * row['clipped']}",
                          f"{row['low']:.3g} – {row['high']:.3g}", _format("", row.get("true")),
                          _format("", row.get("relative_error")),
                          f"{row['extrapolation']:.2g}×")
        Console().print(table)
    if any(row["clipped"] for row in rows):
        console.print("* the law's value left [0, 1] and was clipped", highlight=False)
    for warning in record["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    console.print(f"prediction: {out / 'predict.json'}\nplot:       {record['plot']}", soft_wrap=True)


@app.command()
@friendly
def curate(pool: Annotated[str, typer.Argument(help="the pool's webdataset shards: a .tar file, a folder of them, "
                                                    "a glob or a brace pattern")],
           out: Annotated[Path, typer.Option("--out", help="where curated shards, curation.json and report.html go "
                                                           "(work files in OUT/work)")],
           metadata: Annotated[Path | None, typer.Option("--metadata", help="entries to balance over, one per line "
                                                                            "(default: no balancing)")] = None,
           cap: Annotated[int, typer.Option("--cap", help="MetaCLIP's t: pairs kept per entry, about")] = 20_000,
           seed: Annotated[int, typer.Option("--seed", help="seed of the balancing draws")] = 0,
           workers: Annotated[int, typer.Option("--workers", help="processes for the per-shard stages", min=1)]
           = os.cpu_count() or 1,
           stage: Annotated[str, typer.Option("--stage", help="all, or one of count (per shard), plan (whole pool), "
                                                              "sample (per shard), report (whole pool)")] = "all",
           dedup: Annotated[bool, typer.Option("--dedup/--no-dedup", help="drop exact duplicates (caption and "
                                                                          "image bytes)")] = True,
           near_dup_model: Annotated[str | None, typer.Option("--near-dup-model", help="model reference whose "
                                                                                       "embeddings find near-"
                                                                                       "duplicates")] = None,
           near_dup_threshold: Annotated[float, typer.Option("--near-dup-threshold", help="cosine similarity from "
                                                                                          "which a pair is a near-"
                                                                                          "duplicate")] = 0.95,
           score_model: Annotated[str | None, typer.Option("--score-model", help="model reference that scores "
                                                                                 "image-caption similarity")] = None,
           score_keep: Annotated[float, typer.Option("--score-keep", help="fraction of pairs with the highest "
                                                                          "scores kept")] = 0.3,
           min_words: Annotated[int, typer.Option("--min-words", min=0)] = 0,
           max_words: Annotated[int | None, typer.Option("--max-words", min=1)] = None,
           min_chars: Annotated[int, typer.Option("--min-chars", min=0)] = 0,
           max_chars: Annotated[int | None, typer.Option("--max-chars", min=1)] = None,
           min_letters: Annotated[float, typer.Option("--min-letters", help="minimum fraction of letters among a "
                                                                            "caption's visible characters")] = 0.0,
           allow_nonprintable: Annotated[bool, typer.Option("--allow-nonprintable", help="keep captions with "
                                                                                         "control characters")]
           = False,
           caption_key: Annotated[str, typer.Option("--caption-key", help="the member holding the caption")] = "txt",
           case_sensitive: Annotated[bool, typer.Option("--case-sensitive", help="match entries with their case")]
           = False,
           device: DeviceOpt = None) -> None:
    """Curate an image-text pool: filter, deduplicate and balance it (MetaCLIP); writes OUT/report.html."""
    from transferlab.curate import CaptionFilter, Settings
    from transferlab.curate import curate as run_curate

    _one_process("curate")
    _say_if_named_random({"--near-dup-model": near_dup_model, "--score-model": score_model})
    settings = Settings(metadata=metadata, cap=cap, seed=seed, case_sensitive=case_sensitive,
                        caption_key=caption_key, dedup=dedup,
                        filters=CaptionFilter(min_words, max_words, min_chars, max_chars, min_letters,
                                              allow_nonprintable),
                        near_dup_model=near_dup_model, near_dup_threshold=near_dup_threshold, score_model=score_model,
                        score_keep=score_keep, device=device or "auto")
    record = run_curate(pool, out, settings, workers, stage)
    if record is None:
        following = {"count": "plan (on the whole pool)", "plan": "sample (per shard)",
                     "sample": "report (on the whole pool)"}[stage]
        console.print(f"stage {stage} done; next: --stage {following}, with the same options and --out",
                      soft_wrap=True)
        return
    console.print(f"{record['pairs']:,} pairs read, {record['kept']:,} kept", highlight=False)
    for reason, count in record["removed"].items():
        console.print(f"  removed {count:,}: {reason}", highlight=False)
    for reason, count in record["tar_skips"].items():
        console.print(f"  skipped by the tar reader {count:,}: {reason}", highlight=False)
    console.print(f"curated shards: {out}\nreport:         {out / 'report.html'}", soft_wrap=True)


def _write_model_cards(loaded, all_results: list[dict], out: Path) -> None:
    from transferlab.evaluate.model_card import source_facts, write_model_card
    from transferlab.evaluate.suite import results_dirs

    targets = results_dirs(out, [item.encoder.name for item in loaded])
    for item, results, target in zip(loaded, all_results, targets, strict=True):
        if item.run_dir is None:  # a model from elsewhere: its card goes beside its results.json
            if item.encoder.source:
                console.print(f"model card: {write_model_card(target, results, source_facts(item.encoder.source))}")
            else:
                console.print(f"no model card for {item.encoder.name}: it is not a transferlab run")
            continue
        spec = item.recipe
        summary = {"image tower": spec.model.image.name, "text tower": spec.model.text.name if spec.model.text
                   else "none", "embedding dim": spec.model.embed_dim, "objective": spec.train.objective,
                   "optimizer": spec.train.optimizer, "steps": spec.train.steps, "batch size": spec.train.batch_size,
                   "training data": spec.train.data_label}
        console.print(f"model card: {write_model_card(item.run_dir, results, summary)}")


@app.command()
@friendly
def adapt(models: Annotated[list[str], typer.Argument(help="the model to adapt (model reference); for wise_ft, "
                                                           "ties, task_arithmetic: PRETRAINED FINETUNED...")],
          method: Annotated[str, typer.Option("--method", help=", ".join(ADAPTATION_METHODS))],
          data: Annotated[str, typer.Option("--data", help="a dataset of the suite")] = "digits",
          shots: Annotated[int, typer.Option("--shots", help="labelled examples per class", min=1)] = 16,
          seed: Annotated[int, typer.Option("--seed")] = 0,
          suite: Annotated[str | None, typer.Option("--suite", help="where --data and the templates are defined "
                                                                    "(default: the model's recipe)")] = None,
          out: OutOpt = None, device: DeviceOpt = None,
          param: Annotated[list[str] | None, typer.Option("--param", help="a method parameter, name=value (e.g. "
                                                                          "alpha=0.5, density=0.2, epochs=5)")] = None,
          set_: SetOpt = None) -> None:
    """Adapt a model to a dataset from a few labelled examples per class; writes OUT/adapt.json."""
    import yaml

    _one_process("adapt")

    from transferlab.config import load_suite
    from transferlab.evaluate.adaptation import adapt as run_adapt
    from transferlab.runtime import resolve_device

    parameters = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param takes name=value, got '{item}'.")
        parameters[name.strip()] = yaml.safe_load(value)
    out = out or Path("runs") / f"adapt-{method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if set_ and not suite:
        raise UserError("--set overrides keys of --suite; name the suite (e.g. --suite default) to use it.")
    chosen = load_suite(suite, list(set_ or [])) if suite else None
    record = run_adapt(models, method, data, shots, seed, chosen, out, resolve_device(device or "auto"), parameters)
    _say_if_random(models[0], record["weights"])
    table = Table(title=f"{method} · {data} · {shots} shots · seed {seed}", title_justify="left")
    for name in record["metrics"]:
        table.add_column(SHORT_NAMES.get(name, name), justify="right", no_wrap=True)
    table.add_row(*[_format(name, value) for name, value in record["metrics"].items()])
    Console().print(table)
    console.print(f"adapted: {out}", soft_wrap=True)


def _prepare_run(recipe_ref: str | None, out: Path | None, overrides: list[str], resume: bool,
                 device: str | None):
    """The run directory and its recipe: a new directory with config.yaml, or an existing one to resume.
    Under torchrun rank 0 decides and writes, and every rank gets its answer (or its error)."""
    from transferlab.distributed import on_main

    return on_main(lambda: _prepare_run_here(recipe_ref, out, overrides, resume, device))


def _prepare_run_here(recipe_ref: str | None, out: Path | None, overrides: list[str], resume: bool,
                      device: str | None):
    from transferlab.config import dump_recipe, load_recipe
    from transferlab.fileio import atomic_write
    from transferlab.train.resume import resumed_recipe  # the resume policy: which recipe keys a resume may change

    if device:
        overrides = overrides + [f"device={device}"]
    if resume and out is None:
        raise UserError("--resume needs --out: the run directory to continue (or to start, when it is empty).")
    if resume and (out / "config.yaml").is_file():
        return out, resumed_recipe(out, recipe_ref, overrides)
    recipe = load_recipe(recipe_ref, overrides)
    if out is None:
        out = Path("runs") / f"{recipe.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"The run directory {out} already exists and is not empty" + (
            " but holds no config.yaml, so it is no run to resume" if resume else "") + "; transferlab never "
            "overwrites a run. Pass a new --out directory" + ("." if resume else ", or add --resume to continue "
                                                                                "that run."))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", dump_recipe(recipe))
    console.print(f"run directory: {out}")
    return out, recipe


def _pretrain(recipe, run_dir: Path, resume: bool):
    """Train; with --resume from the newest checkpoint, or from the start when the run has none yet (so one
    command line both starts and continues a preemptible job)."""
    from transferlab.train.loop import pretrain

    return pretrain(recipe, run_dir, resume=resume and any((run_dir / "checkpoints").glob("step_*")))


def _evaluate_and_show(model, recipe, run_dir: Path, main: bool = True) -> dict:
    from transferlab.checkpoints import META_FILE, MODEL_FILE, latest_checkpoint
    from transferlab.evaluate.suite import evaluate, suite_of
    from transferlab.models.encoder import from_dual_encoder
    from transferlab.models.weights import checkpoint

    out = run_dir / "eval"
    latest = latest_checkpoint(run_dir)  # the final step is always saved, with the weights evaluated here
    weights = checkpoint(run_dir, latest, json.loads((latest / META_FILE).read_text()), MODEL_FILE)
    (results,) = evaluate([(from_dual_encoder(model, str(run_dir), run_dir, weights), suite_of(recipe))], out)
    if main:
        _show(results)
        console.print(f"results: {out / 'results.json'}\nreport:  {out / 'report.html'}", soft_wrap=True)
    return results


SHORT_NAMES = {"mean_per_class_recall": "class-mean recall", "weight_decay": "λ",
               "zeroshot_classification": "zero-shot", "linear_probe": "linear probe"}
DIRECTIONS = {"text": "i→t", "image": "t→i"}  # text_retrieval_recall: images (or left texts) retrieve texts


def _rows(tasks: list[dict]) -> list[tuple[str, str, dict]]:
    """(data, task, metrics) per row; retrieval gives a row per direction with R@k columns."""
    rows = []
    for task in tasks:
        if not task["metrics"]:  # skipped: _show lists why
            continue
        data, name = f"{task['dataset']}/{task['split']}", SHORT_NAMES.get(task["task"], task["task"])
        metrics = {k: v for k, v in task["metrics"].items() if not k.endswith("_std")}
        if task["task"] != "retrieval":
            rows.append((data, name, metrics))
            continue
        for kind, arrow in DIRECTIONS.items():
            prefix = f"{kind}_retrieval_recall@"
            rows.append((data, f"retrieval {arrow}",
                         {f"R@{k.removeprefix(prefix)}": v for k, v in metrics.items() if k.startswith(prefix)}))
    return rows


def _show(results: dict) -> None:
    """The results on stdout, a table per kind of metrics (so each fits a terminal); few-shot curves, which
    would not fit, are left to the report."""
    groups: dict[tuple, list] = {}  # classification tasks share a table; others by their metrics
    for row in _rows([t for t in results["tasks"] if t["task"] != "fewshot"]):
        groups.setdefault(("acc1",) if "acc1" in row[2] else tuple(row[2]), []).append(row)
    console = Console()
    console.print(f"{results['model']} · {results['suite']}", soft_wrap=True)
    for rows in groups.values():
        metric_names = list(dict.fromkeys(name for row in rows for name in row[2]))
        table = Table()
        table.add_column("data", no_wrap=True)
        table.add_column("task", no_wrap=True)
        for name in metric_names:
            table.add_column(SHORT_NAMES.get(name, name), justify="right", no_wrap=True)
        for data, task, metrics in rows:
            table.add_row(data, task, *[_format(name, metrics.get(name)) for name in metric_names])
        console.print(table)
    for task in results["tasks"]:
        if task.get("skipped"):
            console.print(f"skipped {task['task']} on {task['dataset']}/{task['split']}: {task['skipped']}",
                          soft_wrap=True, highlight=False)
    collection = results.get("collection")
    if collection:
        average = "-" if collection["average"] is None else f"{100 * collection['average']:.1f}"
        console.print(f"{collection['name']} average over {collection['ran']} of {collection['size']} datasets: "
                      f"{average}", soft_wrap=True, highlight=False)
        for key, why in collection["missing"].items():
            console.print(f"  not run: {key}: {why}", soft_wrap=True, highlight=False)


def _format(name: str, value) -> str:
    if value is None:
        return ""
    if name == "weight_decay":
        return f"{value:.2g}"
    return f"{value:g}" if name in ("k", "n_clusters") or not isinstance(value, float) else f"{value:.3f}"


@app.command()
@friendly
def export(run: Annotated[str, typer.Argument(help="a run or checkpoint directory")],
           to: Annotated[str, typer.Option("--to", help="openclip (runs with openclip:<config> towers: an open_clip "
                                                        "checkpoint) or safetensors (any run)")],
           out: Annotated[Path, typer.Option("--out", help="a new or empty directory for the files")]) -> None:
    """Write a trained model in a form other tools load, with a model card; see docs/evaluation.md."""
    from transferlab.export import export_model

    _one_process("export")
    for path in export_model(run, to, out):
        console.print(f"wrote {path}", soft_wrap=True, highlight=False)


@app.command()
@friendly
def leaderboard(results: Annotated[list[Path], typer.Argument(help="results.json files, or folders holding them "
                                                                   "(a run, its eval/, the --out of transferlab "
                                                                   "eval; searched recursively)")],
                sort: Annotated[str, typer.Option("--sort", help="average, rank, or a column (<dataset>/<task>)")]
                = "average",
                out: Annotated[Path | None, typer.Option("--out", help="write leaderboard.csv, .md and .html here "
                                                                       "(default: the terminal only)")] = None,
                strict: Annotated[bool, typer.Option("--strict", help="fail when anything is flagged (different "
                                                                      "dataset fingerprints, splits, suite hashes, "
                                                                      "missing provenance, random weights)")]
                = False) -> None:
    """Compare many evaluated models: one column per (dataset, task), its main metric; average and average rank."""
    from transferlab.evaluate.leaderboard import build, write_csv, write_markdown
    from transferlab.evaluate.leaderboard_page import write_html

    board = build(results, sort)
    if strict and board.flags:
        raise UserError(f"--strict: {len(board.flags)} thing(s) make these results not comparable: "
                        + "; ".join(f"({f.number}) {f.message}" for f in board.flags)
                        + ". Re-evaluate on the same data and suite, or drop --strict to see them side by side "
                          "with the flags.")
    terminal = Console()
    for table in _leaderboard_tables(board, terminal.width):
        terminal.print(table)
    console.print(board.comparison[0].upper() + board.comparison[1:] + "." + (
        f" Not shown: {', '.join(board.hidden)}, where every model was skipped." if board.hidden else ""),
        soft_wrap=True, highlight=False)
    for row in board.rows:
        if row.collection:
            console.print(f"{row.label}: {row.collection}", soft_wrap=True, highlight=False)
    for flag in board.flags:
        console.print(f"[yellow]warning ⚠{flag.number}:[/] {escape(flag.message)}", soft_wrap=True, highlight=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for path in (write_csv(board, out / "leaderboard.csv"), write_markdown(board, out / "leaderboard.md"),
                     write_html(board, out / "leaderboard.html")):
            console.print(f"wrote {path}", soft_wrap=True, highlight=False)



def _leaderboard_tables(board, width: int) -> list[Table]:
    """The leaderboard as terminal tables: as many task columns as fit `width` per table (each table repeats
    the model column), so a value never wraps; values in % with one decimal, * where a flag concerns them."""
    from transferlab.evaluate.leaderboard import SHORT_TASKS, marks, percent

    labels = [escape(row.label + marks(board.row_flags(row.label))) for row in board.rows]
    model_width = min(max(map(len, labels), default=5), 32)
    headers = [f"{c.dataset}\n{SHORT_TASKS.get(c.task, c.task)}{marks(board.column_flags(c.name))}"
               for c in board.columns]
    widths = [min(max(6, *map(len, h.split("\n"))), 14) for h in headers]
    chunks, chunk, used = [], [], 4 + model_width + 3 + 22  # #, model, avg, n, rank and their borders
    for i, w in enumerate(widths):
        if chunk and used + w + 3 > width:
            chunks.append(chunk)
            chunk, used = [], 4 + model_width + 3
        chunk.append(i)
        used += w + 3
    chunks.append(chunk)
    tables = []
    for part, indices in enumerate(chunks):
        title = (f"leaderboard · {len(board.rows)} models · main metric in % · sorted by {board.sort}" if part == 0
                 else f"leaderboard, continued ({part + 1} of {len(chunks)})")
        table = Table(title=title, title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("model", overflow="fold", max_width=model_width)
        if part == 0:
            for name in ("avg", "n", "rank"):
                table.add_column(name, justify="right", no_wrap=True)
        for i in indices:
            table.add_column(headers[i], justify="right", overflow="fold", min_width=6, max_width=widths[i])
        for position, (row, label) in enumerate(zip(board.rows, labels, strict=True), 1):
            summary = [percent(row.average), f"{row.count}/{len(board.columns)}",
                       "" if row.average_rank is None else f"{row.average_rank:.2f}"] if part == 0 else []
            cells = [percent(row.values.get(board.columns[i].name))
                     + ("*" if board.cell_flags(row.label, board.columns[i].name) else "") for i in indices]
            table.add_row(str(position), label, *summary, *cells)
        tables.append(table)
    return tables

def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
