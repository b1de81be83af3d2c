"""Text-text models: the image-text losses on pairs of texts, one shared tower or two, then retrieval."""

import csv
import json

import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.config import load_recipe
from transferlab.errors import UserError
from transferlab.models.text_transformer import TextTransformer
from transferlab.train.loop import pretrain

TEXT_PAIRS = ["model.image=null", "model.text.name=text-transformer-tiny", "model.embed_dim=16",
              "train.data=qa", "train.steps=8", "train.batch_size=16", "train.warmup_steps=2", "train.log_every=2",
              "train.checkpoint_every=4", "eval.datasets=[qa]", "eval.tasks=[retrieval]"]


@pytest.fixture
def qa(tmp_path):
    """A table of 40 pairs whose right text is its left one, and a recipe naming it as dataset `qa`."""
    path = tmp_path / "qa.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["question", "answer"]] + [[f"item {i} of a list", f"item {i} of a list"]
                                                                 for i in range(40)])
    base = {"base": "default", "datasets": {"qa": {"source": "text-pairs", "table": str(path),
                                                   "left_column": "question", "right_column": "answer",
                                                   "splits": {"train": 0.5, "val": 0.1, "test": 0.4, "seed": 0}}}}
    recipe = tmp_path / "qa.yaml"
    recipe.write_text(yaml.safe_dump(base))
    return recipe


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("locked", ["true", "false"])
def test_a_shared_tower_embeds_both_sides_once_each_when_locked(qa, tmp_path, monkeypatch, locked):
    calls = []
    original = TextTransformer.forward

    def counted(self, tokens):
        calls.append(len(tokens["input_ids"]))
        return original(self, tokens)

    monkeypatch.setattr(TextTransformer, "forward", counted)
    model = pretrain(load_recipe(qa, TEXT_PAIRS + [f"model.text.locked={locked}"]), tmp_path / "run")
    assert model.image_tower is None and model.query_tower is None
    # locked (LiT): the 20 training questions and the 20 answers once each; else both sides every step
    assert calls == ([20, 20] if locked == "true" else [16, 16] * 8)


def test_a_separate_query_tower_trains_and_is_checkpointed(qa, tmp_path):
    overrides = TEXT_PAIRS + ["model.text.locked=false", "model.query={name: text-transformer-tiny}",
                              "train.steps=24", "train.lr=0.003"]
    model = pretrain(load_recipe(qa, overrides), tmp_path / "run")
    assert model.query_tower is not model.text_tower
    trace = losses(tmp_path / "run")
    assert min(trace[-2:]) < trace[0], trace
    saved = load_file(tmp_path / "run" / "checkpoints" / "step_24" / "model.safetensors")
    assert any(k.startswith("query_tower.") for k in saved) and any(k.startswith("query_proj.") for k in saved)


def test_eval_retrieves_each_answer_from_its_question(qa, tmp_path):
    # the right texts equal the left ones and one tower embeds both, so each question's nearest answer is
    # its own: recall@1 is exactly 1 both ways, which any misalignment of queries and answers would break
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(qa), "--out", str(run_dir), *[a for o in TEXT_PAIRS
                                                                                for a in ("--set", o)]])
    assert result.exit_code == 0, result.output
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    [task] = results["tasks"]
    assert (task["task"], task["dataset"], task["split"]) == ("retrieval", "qa", "test")
    assert task["metrics"]["text_retrieval_recall@1"] == task["metrics"]["image_retrieval_recall@1"] == 1.0
    assert "retrieval i→t" in result.output and "retrieval t→i" in result.output and "R@10" in result.output


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.image=null", "train.data=mnist5k"], "is images but the model has none"),
    (["train.data=qa"], "is text pairs but the model has an image tower"),
    (["model.image=null", "train.data=qa", "train.objective=supcon"], "text pairs train with clip, siglip or dcl"),
    (["model.query={name: text-transformer-tiny}"], "set model.image to null"),
    (["model.image=null", "model.text=null"], "needs model.image, model.text or both"),
])
def test_recipes_that_mix_images_and_text_pairs_are_refused(qa, overrides, message):
    with pytest.raises(UserError, match=message):
        load_recipe(qa, overrides)
