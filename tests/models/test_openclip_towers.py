"""`openclip:<config>` towers in recipes: the same network and initialisation as open_clip's own model."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from transferlab.config import load_recipe
from transferlab.errors import UserError
from transferlab.models.dual_encoder import DualEncoder
from transferlab.train.loop import pretrain

open_clip = pytest.importorskip("open_clip")

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 2, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny-towers.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


def overrides(config: str) -> list[str]:
    return [f"model.image.name=openclip:{config}", f"model.text.name=openclip:{config}", "model.text.locked=false",
            "model.embed_dim=16", "model.image_size=16", "model.channels=3", "model.mean=[0.48,0.46,0.41]",
            "model.std=[0.27,0.26,0.28]"]


def reference(config: str, seed: int):
    """open_clip's own model (the CLIP class its trainer builds) from `seed`."""
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model("tiny-towers", pretrained=None)
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("seed", [0, 7])
def test_same_weights_and_outputs_as_open_clips_model(config, seed):
    recipe = load_recipe(None, overrides(config))
    torch.manual_seed(seed)
    model = DualEncoder(recipe.model)
    ours = model.state_dict()
    theirs = reference(config, seed).state_dict()
    visual = {k: v for k, v in theirs.items() if k.startswith("visual.")}
    text = {k: v for k, v in theirs.items() if not k.startswith("visual.") and k != "logit_scale"}
    assert len(visual) > 10 and len(text) > 10
    for key, value in visual.items():
        assert torch.equal(ours[f"image_tower.{key}"], value), key
    for key, value in text.items():  # open_clip's CLIP keeps the text parts at top level; the tower nests them
        assert torch.equal(ours[f"text_tower.text.{key}"], value), key
    assert torch.equal(model.logit_scale, theirs["logit_scale"])
    assert {k for k in ours if "proj" in k and not k.startswith(("image_tower.", "text_tower."))} == set()

    clip = reference(config, seed)
    images = torch.randn(3, 3, 16, 16)
    captions = ["a photo of a cat.", "two dogs", "a handwritten digit seven."]
    tokens = open_clip.get_tokenizer("tiny-towers")(captions)
    assert torch.allclose(model.encode_image(images, normalize=False), clip.encode_image(images), atol=1e-6)
    assert torch.allclose(model.encode_text(captions, normalize=False), clip.encode_text(tokens), atol=1e-6)


def test_building_the_towers_leaves_the_random_generator_alone(config):
    recipe = load_recipe(None, overrides(config))
    torch.manual_seed(3)
    DualEncoder(recipe.model)
    after = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(4))


@pytest.mark.parametrize("change,message", [
    (["model.image_size=28"], "Set model.image_size: 16 and model.channels: 3"),
    (["model.channels=1", "model.mean=[0.5]", "model.std=[0.5]"], "model.channels: 3"),
    (["model.embed_dim=32"], "Set model.embed_dim: 16"),
    (["model.image.locked=true", "model.image.unlocked_blocks=1"], "unlocked_blocks is 1"),
])
def test_mismatches_are_explained(config, change, message):
    recipe = load_recipe(None, overrides(config) + change)
    with pytest.raises(UserError, match=message):
        DualEncoder(recipe.model)


def test_unknown_config_is_explained():
    recipe = load_recipe(None, ["model.image.name=openclip:ViT-Nope-32"])
    with pytest.raises(UserError, match="open_clip has no model config 'ViT-Nope-32'"):
        DualEncoder(recipe.model)


@pytest.mark.slow
def test_pretraining_open_clip_towers_lowers_the_loss(config, tiny_overrides, tmp_path):
    recipe = load_recipe(None, tiny_overrides + overrides(config) + ["train.steps=12", "train.lr=0.001"])
    pretrain(recipe, tmp_path / "run")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]


def test_padding_is_cut_to_the_longest_text_without_changing_the_embeddings(config):
    recipe = load_recipe(None, overrides(config))
    tower = DualEncoder(recipe.model).text_tower
    # "!" is token 0 of CLIP's vocabulary, the pad id too: a text ending in "!" must not lose its end
    texts = ["hi!", "a handwritten digit seven.", "wow!!! so many exclamation marks!!!", ""]
    tokens = tower.tokenize(texts)
    full = open_clip.get_tokenizer("tiny-towers")(texts)
    longest = max(int(row.nonzero().max()) + 1 for row in full)
    assert tokens["ids"].shape == (4, longest) and longest < 77
    assert torch.equal(tokens["ids"], full[:, :longest])
    trimmed, reference_out = tower(tokens), tower.text(full)
    assert torch.allclose(trimmed, reference_out, atol=1e-5, rtol=1e-5)
    trimmed.sum().backward()
    grads = {n: p.grad.clone() for n, p in tower.named_parameters()}
    tower.zero_grad()
    reference_out.sum().backward()
    for name, parameter in tower.named_parameters():  # equal up to float rounding: 1e-5 of the largest entry
        assert (grads[name] - parameter.grad).abs().max() <= 1e-5 * parameter.grad.abs().max(), name


def test_text_at_the_full_context_goes_through_open_clips_own_forward(config):
    recipe = load_recipe(None, overrides(config))
    tower = DualEncoder(recipe.model).text_tower
    tokens = tower.tokenize(["word " * 100])
    assert tokens["ids"].shape == (1, 77)
    assert torch.equal(tower(tokens), tower.text(tokens["ids"]))


def test_batch_first_attention_equals_torchs_multihead_attention():
    from transferlab.models.openclip_towers import BatchFirstSelfAttention

    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    ours = BatchFirstSelfAttention(32, 4, batch_first=True)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 7, 32, requires_grad=True)
    causal = torch.full((7, 7), float("-inf")).triu(1)
    for mask in (None, causal):
        expected = theirs(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = ours(x, x, x, need_weights=False, attn_mask=mask)[0]
        assert torch.allclose(got, expected, atol=1e-6)
        (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
        (grad_got,) = torch.autograd.grad(got.square().sum(), x)
        assert torch.allclose(grad_got, grad_expected, atol=1e-5)
    weights = ours(x, x, x, need_weights=True)[1]  # attention weights asked for: torch's own path
    assert weights.shape == (3, 7, 7)
