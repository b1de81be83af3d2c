"""`transferlab export`: a run as open_clip's own checkpoint (loaded by open_clip in a fresh process with
strict keys, same embeddings) or as safetensors + config (loaded back by transferlab), each with a model card."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tests.conftest import TINY
from transferlab.cli import app
from transferlab.config import load_recipe
from transferlab.errors import UserError
from transferlab.export import export_model
from transferlab.models.references import load_model
from transferlab.train.loop import pretrain

CPU = torch.device("cpu")
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CAPTIONS = ["a handwritten digit seven.", "the number 3", "zero"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    pretrain(load_recipe(None, TINY + ["train.steps=2", "train.checkpoint_every=2"]), run_dir)
    return run_dir


def test_safetensors_export_loads_back_with_the_same_embeddings(run, tmp_path):
    result = CliRunner().invoke(app, ["export", str(run), "--to", "safetensors", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    original, exported = (load_model(str(path), CPU).encoder for path in (run, tmp_path / "out"))
    images = torch.randint(0, 256, (4, original.channels, original.image_size, original.image_size), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(original.encode_image(original.preprocess(images)),
                           exported.encode_image(exported.preprocess(images)))
        assert torch.equal(original.encode_text(CAPTIONS), exported.encode_text(CAPTIONS))
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"transferlab run {run}" in card and "centre crop" in card and "load_exported(" in card


def test_bad_exports_say_what_to_do(run, tmp_path):
    with pytest.raises(UserError, match="--to openclip needs a run whose image and text towers are one open_clip"):
        export_model(str(run), "openclip", tmp_path / "a")
    with pytest.raises(UserError, match="--to must be one of openclip, safetensors"):
        export_model(str(run), "onnx", tmp_path / "b")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        export_model(str(run), "safetensors", tmp_path / "full")
    config = tmp_path / "tiny-export.json"
    config.write_text(json.dumps(TINY_CLIP))
    with pytest.raises(UserError, match="not a transferlab run"):
        export_model(f"openclip:{config}:random", "safetensors", tmp_path / "c")


def test_a_damaged_export_says_so(run, tmp_path):
    export_model(str(run), "safetensors", tmp_path / "out")
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    dropped = next(k for k in weights if k.endswith(".weight"))
    save_file({k: v for k, v in weights.items() if k != dropped}, str(tmp_path / "out" / "model.safetensors"))
    with pytest.raises(UserError, match="does not hold the weights"):
        load_model(str(tmp_path / "out"), CPU)


FRESH = """
import json, sys, open_clip, torch
from safetensors.torch import load_file, save_file
config, weights, out, images = sys.argv[1:5]
open_clip.add_model_config(config)
model, _, preprocess = open_clip.create_model_and_transforms("tiny-export", pretrained=weights)
local, _, _ = open_clip.create_model_and_transforms("local-dir:" + out)
tokens = open_clip.get_tokenizer("tiny-export")(json.loads(sys.argv[5]))
pixels = load_file(images)["pixels"]
with torch.no_grad():
    save_file({"image": model.encode_image(pixels, normalize=True), "text": model.encode_text(tokens, normalize=True),
               "local_image": local.encode_image(pixels, normalize=True)}, images + ".out")
"""


@pytest.mark.slow
def test_openclip_export_loads_in_open_clip_with_strict_keys_and_equal_embeddings(tmp_path):
    pytest.importorskip("open_clip")
    config = tmp_path / "tiny-export.json"
    config.write_text(json.dumps(TINY_CLIP))
    towers = [f"model.image.name=openclip:{config}", f"model.text.name=openclip:{config}", "model.text.locked=false",
              "model.embed_dim=16", "model.image_size=16", "model.channels=3", "model.mean=[0.48,0.46,0.41]",
              "model.std=[0.27,0.26,0.28]"]
    pretrain(load_recipe(None, TINY + towers + ["train.steps=3", "train.checkpoint_every=3"]), tmp_path / "run")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--to", "openclip", "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "open_clip_config.json").read_text())
    assert saved["preprocess_cfg"]["mean"] == [0.48, 0.46, 0.41] and saved["model_cfg"] == TINY_CLIP
    ours = load_model(str(tmp_path / "run"), CPU).encoder
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    pixels = ours.preprocess(images)
    save_file({"pixels": pixels}, str(tmp_path / "pixels.safetensors"))
    subprocess.run([sys.executable, "-c", FRESH, str(config), str(tmp_path / "out" / "open_clip_model.safetensors"),
                    str(tmp_path / "out"), str(tmp_path / "pixels.safetensors"), json.dumps(CAPTIONS)], check=True)
    theirs = load_file(str(tmp_path / "pixels.safetensors.out"))
    with torch.no_grad():
        image_gap = (ours.encode_image(pixels) - theirs["image"]).abs().max()
        text_gap = (ours.encode_text(CAPTIONS) - theirs["text"]).abs().max()
    assert image_gap < 1e-6 and text_gap < 1e-6, (image_gap, text_gap)
    assert torch.equal(theirs["local_image"], theirs["image"])
    exported = load_model(f"openclip:local-dir:{tmp_path / 'out'}", CPU).encoder  # and back into transferlab
    with torch.no_grad():
        assert (exported.encode_image(exported.preprocess(images)) - ours.encode_image(pixels)).abs().max() < 1e-6
    assert "open_clip.create_model_and_transforms(\"local-dir:" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.parametrize(("text", "message"), [("{not json", "cannot be read"),
                                               ('{"format": "something-else"}', "not a transferlab model export")])
def test_an_export_config_that_is_not_one(tmp_path, text, message):
    (tmp_path / "transferlab_model.json").write_text(text)
    with pytest.raises(UserError, match=message):
        load_model(str(tmp_path), CPU)
