"""The `transferlab` command: one subcommand per step of the loop.

    transferlab run [RECIPE]           pretrain, then evaluate (the built-in `default` recipe by default)
    transferlab pretrain [RECIPE]      pretrain only
    transferlab eval MODEL             evaluate a run or checkpoint on its recipe's eval section

Every command takes `--out DIR` and `--set key=value`; bad input ends with a one-paragraph message and
exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferlab.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="transferlab: pretrain encoders and measure how well they transfer.")
console = Console(stderr=True)

RecipeArg = Annotated[str | None, typer.Argument(help="a YAML recipe file or a built-in recipe name "
                                                         "(default: the built-in 'default')")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="the run directory (default: runs/<name>-<time>)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a recipe key: --set train.steps=300")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue the run in --out from checkpoints/latest")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:<i> or mps "
                                                                   "(default: the recipe's, normally auto)")]


def friendly(command):
    """Turn a UserError into its message on stderr and exit status 2."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


@app.command()
@friendly
def run(recipe: RecipeArg = None, out: OutOpt = None, set_: SetOpt = None, resume: ResumeOpt = False,
        device: DeviceOpt = None) -> None:
    """Pretrain on a recipe, then evaluate the result: the main job."""
    run_dir, resolved = _prepare_run(recipe, out, set_ or [], resume, device)
    _evaluate_and_show(_pretrain(resolved, run_dir, resume), resolved, run_dir)


@app.command()
@friendly
def pretrain(recipe: RecipeArg = None, out: OutOpt = None, set_: SetOpt = None, resume: ResumeOpt = False,
             device: DeviceOpt = None) -> None:
    """Pretrain on a recipe; evaluate later with `transferlab eval RUN_DIR`."""
    run_dir, resolved = _prepare_run(recipe, out, set_ or [], resume, device)
    _pretrain(resolved, run_dir, resume)
    console.print(f"run directory: {run_dir}")


@app.command("eval")
@friendly
def eval_(model: Annotated[str, typer.Argument(help="a run directory or a checkpoints/step_<n> directory")],
          out: Annotated[Path | None, typer.Option("--out", help="where results go (default: <run>/eval, "
                                                                    "or <run>/eval-step_<n> for a checkpoint)")] = None,
          set_: SetOpt = None, device: DeviceOpt = None) -> None:
    """Evaluate an existing run or checkpoint without retraining."""
    from transferlab.models.references import load_model
    from transferlab.runtime import resolve_device

    overrides = list(set_ or []) + ([f"device={device}"] if device else [])
    loaded = load_model(model, resolve_device(device or "auto"), overrides)
    if out is None:
        is_run = Path(model).resolve() == loaded.run_dir.resolve()
        out = loaded.run_dir / ("eval" if is_run else f"eval-{loaded.checkpoint.name}")
    _show(_evaluate(loaded.model, loaded.recipe, out, str(loaded.checkpoint), loaded.run_dir), out)


def _prepare_run(recipe_ref: str | None, out: Path | None, overrides: list[str], resume: bool,
                 device: str | None):
    """The run directory and its recipe: a new directory with config.yaml, or an existing one to resume."""
    from transferlab.config import dump_recipe, load_recipe
    from transferlab.fileio import atomic_write

    if device:
        overrides = overrides + [f"device={device}"]
    if resume:
        if out is None or not (out / "config.yaml").is_file():
            raise UserError(f"--resume needs --out pointing at an existing run directory with a config.yaml"
                            f"{'' if out is None else f'; {out} has none'}. Start a new run without --resume.")
        if recipe_ref is not None or any(not o.startswith("device=") for o in overrides):
            raise UserError(f"--resume continues {out} with its saved config.yaml, so it takes no RECIPE or --set "
                            f"(only --device). To change the recipe, start a new run in a new --out directory.")
        return out, load_recipe(out / "config.yaml", overrides)
    recipe = load_recipe(recipe_ref, overrides)
    if out is None:
        out = Path("runs") / f"{recipe.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"The run directory {out} already exists and is not empty; transferlab never overwrites "
                        f"a run. Pass a new --out directory, or add --resume to continue that run.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", dump_recipe(recipe))
    console.print(f"run directory: {out}")
    return out, recipe


def _pretrain(recipe, run_dir: Path, resume: bool):
    from transferlab.train.loop import pretrain

    return pretrain(recipe, run_dir, resume=resume)


def _evaluate_and_show(model, recipe, run_dir: Path) -> None:
    out = run_dir / "eval"
    _show(_evaluate(model, recipe, out, str(run_dir), run_dir), out)


def _evaluate(model, recipe, out: Path, name: str, run_dir: Path) -> dict:
    from transferlab.evaluate.suite import evaluate

    return evaluate(model, recipe, out, name, metrics_path=run_dir / "metrics.jsonl")


SHORT_NAMES = {"mean_per_class_recall": "class-mean recall", "weight_decay": "λ",
               "zeroshot_classification": "zero-shot", "linear_probe": "linear probe"}


def _show(results: dict, out: Path) -> None:
    metric_names = list(dict.fromkeys(m for t in results["tasks"] for m in t["metrics"]))
    table = Table(title=f"{results['model']} · {results['suite']}", title_justify="left")
    table.add_column("data", no_wrap=True)
    table.add_column("task", no_wrap=True)
    for name in metric_names:
        table.add_column(SHORT_NAMES.get(name, name), justify="right", no_wrap=True)
    for task in results["tasks"]:
        values = [_format(name, task["metrics"].get(name)) for name in metric_names]
        table.add_row(f"{task['dataset']}/{task['split']}", SHORT_NAMES.get(task["task"], task["task"]), *values)
    Console().print(table)
    console.print(f"results: {out / 'results.json'}\nreport:  {out / 'report.html'}", soft_wrap=True)


def _format(name: str, value) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) and name != "weight_decay" else f"{value:g}"


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
