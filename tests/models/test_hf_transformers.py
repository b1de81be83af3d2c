"""`hf:` transformers dual encoders (CLIPModel, SiglipModel) with their own processor: tiny random models saved
with save_pretrained give the library's own normalised features, and hub ids resolve through the hub client
(replaced here by a local directory, or by a failure with one actionable message)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from transferlab.errors import UserError
from transferlab.models.references import load_model

transformers = pytest.importorskip("transformers")
CPU = torch.device("cpu")
CAPTIONS = ["a photo of a cat.", "two dogs", "a handwritten digit seven!"]
LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def tokenizer(max_length: int):
    """A CLIP byte-level BPE tokenizer over printable ASCII, no merges: built offline, saved like any other."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for code in range(33, 127):
        vocab[chr(code)] = len(vocab)
        vocab[chr(code) + "</w>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length), len(vocab)


def save_clip(directory):
    tok, vocab_size = tokenizer(77)
    config = transformers.CLIPConfig(
        text_config={**LAYERS, "vocab_size": vocab_size, "max_position_embeddings": 77, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**LAYERS, "image_size": 30, "patch_size": 10}, projection_dim=16)
    torch.manual_seed(1)
    model = transformers.CLIPModel(config).eval()
    images = transformers.CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    processor = transformers.CLIPProcessor(image_processor=images, tokenizer=tok)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor, True


def save_siglip(directory):
    tok, vocab_size = tokenizer(32)
    config = transformers.SiglipConfig(
        text_config={**LAYERS, "vocab_size": vocab_size, "max_position_embeddings": 32, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**LAYERS, "image_size": 30, "patch_size": 10})
    torch.manual_seed(2)
    model = transformers.SiglipModel(config).eval()
    images = transformers.SiglipImageProcessor(size={"height": 30, "width": 30}, resample=2)  # squash, bilinear
    processor = transformers.SiglipProcessor(image_processor=images, tokenizer=tok)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor, "max_length"


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (19, 45, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (31, 29), dtype=np.uint8), mode="L")]


def features(output) -> torch.Tensor:
    return F.normalize(output if isinstance(output, torch.Tensor) else output.pooler_output, dim=-1)


@pytest.mark.parametrize("save", [save_clip, save_siglip])
def test_embeddings_equal_the_librarys_own_features(save, tmp_path):
    model, processor, padding = save(tmp_path)
    encoder = load_model(f"hf:{tmp_path}", CPU).encoder
    assert encoder.image_size == 30 and encoder.source["class"] == type(model).__name__
    pixels = torch.stack([encoder.preprocess(encoder.decode(image)[None])[0] for image in images()])
    theirs = processor(images=images(), return_tensors="pt")["pixel_values"]
    assert (pixels - theirs).abs().max() < 1e-6
    tokens = processor.tokenizer(CAPTIONS, padding=padding, truncation=True, return_tensors="pt")
    with torch.no_grad():
        assert (encoder.encode_image(pixels) - features(model.get_image_features(pixel_values=theirs))).abs().max() \
            < 1e-5
        assert (encoder.encode_text(CAPTIONS) - features(model.get_text_features(**tokens))).abs().max() < 1e-5


def test_a_hub_id_resolves_through_the_hub_client(tmp_path, monkeypatch):
    import huggingface_hub

    save_clip(tmp_path)
    (tmp_path / "README.md").write_text("---\nlicense: mit\ntags: [clip]\n---\n# tiny clip\n")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(tmp_path))
    encoder = load_model("hf:transferlab-test/tiny-clip", CPU).encoder
    assert encoder.encode_text(["a cat"]).shape == (1, 16) and encoder.source["license"] == "mit"


def test_a_hub_id_offline_says_where_and_how(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(repo_id, **kwargs):
        raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder for the specified revision "
                                      "on the local disk and outgoing traffic has been disabled.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError) as caught:
        load_model("hf:openai/clip-vit-base-patch32", CPU)
    assert constants.HF_HUB_CACHE in str(caught.value) and "`hf download openai/clip-vit-base-patch32`" in str(
        caught.value)


def test_directories_that_are_not_dual_encoders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a sentence-transformers model directory.*nor a transformers"):
        load_model(f"hf:{tmp_path / 'empty'}", CPU)
    (tmp_path / "empty" / "open_clip_config.json").write_text("{}")
    with pytest.raises(UserError, match="holds an open_clip model.*openclip:local-dir:"):
        load_model(f"hf:{tmp_path / 'empty'}", CPU)
    bert = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=16)).save_pretrained(bert)
    with pytest.raises(UserError, match="BertModel.*not an image-text dual encoder"):
        load_model(f"hf:{bert}", CPU)
    weights_only = tmp_path / "no-processor"
    transformers.CLIPModel(transformers.CLIPConfig(text_config=LAYERS, vision_config={
        **LAYERS, "image_size": 30, "patch_size": 10})).save_pretrained(weights_only)
    with pytest.raises(UserError, match="processor"):
        load_model(f"hf:{weights_only}", CPU)


@pytest.mark.slow
def test_a_transformers_model_runs_a_suite(tmp_path):
    from typer.testing import CliRunner

    from transferlab.cli import app

    save_clip(tmp_path / "clip")
    rng = np.random.default_rng(0)
    rows = ["image,caption,label"]
    for index in range(12):
        Image.fromarray(rng.integers(0, 256, (20 + index, 33, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
        rows.append(f"{index}.png,a picture of kind {index % 2},kind{index % 2}")
    (tmp_path / "pictures.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "suite.yaml").write_text(json.dumps({
        "name": "pictures",
        "datasets": {"pictures": {"source": "table", "table": str(tmp_path / "pictures.csv"), "label_column": "label",
                                  "splits": {"train": 0.5, "val": 0.25, "test": 0.25}}},
        "eval": {"datasets": ["pictures"], "tasks": ["zeroshot_classification", "ncm", "retrieval"]}}))
    result = CliRunner().invoke(app, ["eval", f"hf:{tmp_path / 'clip'}", "--suite", str(tmp_path / "suite.yaml"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    tasks = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]
    assert [t["task"] for t in tasks] == ["zeroshot_classification", "ncm", "retrieval"]
    assert all(0 <= t["metrics"].get("acc1", 0) <= 1 and "skipped" not in t for t in tasks)
