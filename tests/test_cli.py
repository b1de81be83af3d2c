"""The CLI's bad-input contract: exit status 2 and one paragraph naming the file or key and the fix."""

import pytest
from PIL import Image
from typer.testing import CliRunner

from transferlab.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def folder_dataset(tmp_path, rows: list[str], header: str = "image,caption") -> str:
    for name in ("a.png", "b.png"):
        Image.new("L", (28, 28), color=128).save(tmp_path / name)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    table = tmp_path / "pairs.csv"
    table.write_text("\n".join([header, *rows]) + "\n")
    return str(table)


def folder_args(tmp_path, table: str, tiny_overrides: list[str]) -> list[str]:
    sets = tiny_overrides + ["datasets.pairs.source=table", f"datasets.pairs.table={table}", "train.data=pairs",
                             "train.batch_size=2", "eval.datasets=[digits]"]
    return ["pretrain", "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]]


def test_missing_image_in_csv(tmp_path, tiny_overrides):
    table = folder_dataset(tmp_path, ["a.png,one", "missing.png,two", "b.png,three"])
    code, out = invoke(*folder_args(tmp_path, table, tiny_overrides))
    assert code == 2
    assert "pairs.csv line 3" in out and "missing.png" in out and "bad_samples: skip" in out
    assert "Traceback" not in out


def test_caption_column_that_does_not_exist(tmp_path, tiny_overrides):
    table = folder_dataset(tmp_path, ["a.png,one"], header="image,captions")
    code, out = invoke(*folder_args(tmp_path, table, tiny_overrides))
    assert code == 2
    assert "pairs.csv" in out and "'caption'" in out and "Did you mean 'captions'?" in out
    assert "datasets.pairs.caption_column" in out


def test_corrupt_image(tmp_path, tiny_overrides):
    table = folder_dataset(tmp_path, ["a.png,one", "bad.png,two"])
    code, out = invoke(*folder_args(tmp_path, table, tiny_overrides))
    assert code == 2
    assert "pairs.csv line 3" in out and "bad.png" in out and "cannot be decoded" in out


def test_unknown_config_key(tmp_path):
    code, out = invoke("run", "--out", str(tmp_path / "run"), "--set", "train.lr_warmup=5")
    assert code == 2
    assert "unknown key 'train.lr_warmup'" in out and "Did you mean 'train.warmup_steps'?" in out
    code, out = invoke("run", "--out", str(tmp_path / "run2"), "--set", "train.stepz=5")
    assert code == 2 and "Did you mean 'train.steps'?" in out
    assert not (tmp_path / "run2").exists(), "nothing is created for an invalid recipe"


def test_unknown_key_in_a_recipe_file_names_the_file(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("train:\n  batch_sise: 64\n")
    code, out = invoke("pretrain", str(recipe), "--out", str(tmp_path / "run"))
    assert code == 2 and "mine.yaml" in out and "Did you mean 'train.batch_size'?" in out


def test_existing_run_directory_is_never_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("precious")
    code, out = invoke("run", "--out", str(run))
    assert code == 2 and str(run) in out and "--resume" in out
    assert (run / "notes.txt").read_text() == "precious"


def test_resume_needs_an_out_directory_and_never_adopts_a_folder_that_is_no_run(tmp_path):
    code, out = invoke("pretrain", "--resume")
    assert code == 2 and "--out" in out
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("precious")
    code, out = invoke("pretrain", "--out", str(tmp_path / "notes"), "--resume")
    assert code == 2 and "no config.yaml" in out and (tmp_path / "notes" / "todo.txt").read_text() == "precious"


def test_one_command_line_starts_and_continues_a_preemptible_run(tmp_path, tiny_overrides):
    """`pretrain RECIPE --set ... --out DIR --resume` starts the run in an empty DIR, and the very same line
    resumes it (here: after a longer train.steps, a resumable key); another model key is refused by name."""
    run = tmp_path / "run"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    line = ["pretrain", "default", "--out", str(run), "--resume", *sets]
    assert invoke(*line, "--set", "train.steps=4")[0] == 0
    assert (run / "checkpoints" / "step_4").is_dir()
    code, out = invoke(*line, "--set", "train.steps=6")
    assert code == 0, out
    assert (run / "checkpoints" / "step_6").is_dir()
    [before] = run.glob("config.before-*.yaml")  # the config the run started with is kept
    assert "steps: 4" in before.read_text()
    code, out = invoke(*line, "--set", "train.steps=6", "--set", "model.embed_dim=32")
    assert code == 2 and "model.embed_dim: 16 → 32" in out and "train.lr" in out


def test_resume_may_change_the_learning_rate_but_not_the_model(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert invoke("pretrain", "--out", str(run), *sets, "--set", "train.steps=4")[0] == 0
    code, out = invoke("pretrain", "--out", str(run), "--resume", "--set", "model.embed_dim=32")
    assert code == 2 and "train.lr" in out and "model.embed_dim: 16 → 32" in out
    code, out = invoke("pretrain", "--out", str(run), "--resume", "--set", "train.lr=0.0001", "--set",
                       "train.steps=6")
    assert code == 0, out
    assert "lr: 0.0001" in (run / "config.yaml").read_text()
    [before] = run.glob("config.before-*.yaml")  # the config the run started with is kept
    assert "steps: 4" in before.read_text()
    assert (run / "checkpoints" / "step_6").is_dir()


@pytest.mark.parametrize("ref", ["does/not/exist", "openclip"])
def test_eval_of_something_that_is_not_a_model(ref):
    code, out = invoke("eval", ref)
    assert code == 2 and ref in out and "run directory" in out
