from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.adapt.coop import CONFIG_FILE, CoOp, prompt_model
from transferlab.config import load_recipe
from transferlab.errors import UserError
from transferlab.evaluate.fewshot import fewshot_curve
from transferlab.models.dual_encoder import DualEncoder

NAMES = ["cat", "dog", "hippopotamus", "fish"]  # different lengths: prompts are padded differently
TINY_MODEL = ["model.image.name=cnn-tiny", "model.text.name=text-transformer-tiny", "model.text.locked=false",
              "model.embed_dim=16"]  # conftest's tiny towers


def tiny_model(overrides=()) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(load_recipe(None, TINY_MODEL + list(overrides)).model)


@pytest.fixture
def model() -> DualEncoder:
    return tiny_model()


@pytest.fixture(scope="module")
def minilm_model() -> DualEncoder:
    return tiny_model(["model.text.name=minilm-l6", "model.text.locked=true"])


def clustered_features(dim: int = 16, per_class: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors around one random direction per class, as image embeddings of a k-shot set would be."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(len(NAMES), dim, generator=g), dim=-1)
    labels = torch.arange(len(NAMES)).repeat_interleave(per_class)
    return F.normalize(centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=g), dim=-1), labels


def plain_prompt_weights(model: DualEncoder) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().encode_text([f"a photo of a {name}." for name in NAMES])


@pytest.mark.parametrize("class_specific", [False, True], ids=["unified", "class_specific"])
def test_initial_prompt_equals_tokenized_template_text_transformer(model, class_specific):
    x, y = clustered_features()
    coop = CoOp(model, NAMES, class_specific=class_specific, epochs=0, progress=False).fit(x, y)
    # 12 byte tokens of "a photo of a", each context vector its byte's embedding
    assert coop.ctx_.shape == (len(NAMES),) * class_specific + (12, 64)
    torch.testing.assert_close(coop.weights_, plain_prompt_weights(model), atol=1e-5, rtol=0)


def test_tower_embedding_path_equals_id_path(model):
    tower = model.text_tower.eval()
    tokens = tower.tokenize(["a photo of a cat.", "a much longer caption of a dog."])
    with torch.no_grad():
        by_ids = tower(tokens)
        by_embeddings = tower.forward_embeddings(tower.embed_tokens(tokens["input_ids"]), tokens["attention_mask"])
    torch.testing.assert_close(by_embeddings, by_ids, atol=0, rtol=0)


@pytest.mark.parametrize("class_specific", [False, True], ids=["unified", "class_specific"])
def test_training_lowers_loss_and_raises_train_accuracy(model, class_specific):
    x, y = clustered_features()
    before = CoOp(model, NAMES, class_specific=class_specific, epochs=0, progress=False).fit(x, y)
    coop = CoOp(model, NAMES, class_specific=class_specific, epochs=40, progress=False).fit(x, y)
    assert len(coop.loss_curve_) == 40 and coop.n_iter_ == 40  # 32 samples: one batch per epoch
    assert coop.loss_curve_[-1] < 0.6 * coop.loss_curve_[0]
    assert coop.score(x, y) >= before.score(x, y) + 0.3
    assert coop.predict_proba(x).shape == (len(y), len(NAMES))
    np.testing.assert_allclose(coop.predict_proba(x).sum(axis=1), 1, rtol=1e-5)


def test_only_the_context_trains(model):
    x, y = clustered_features()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    coop = CoOp(model, NAMES, epochs=5, progress=False).fit(x, y)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert flags == {k: p.requires_grad for k, p in model.named_parameters()}
    assert model.training  # the caller's mode is back
    assert not torch.allclose(coop.weights_, plain_prompt_weights(model))  # while the prompts did change


def test_deterministic_for_a_seed(model):
    x, y = clustered_features()
    fit = functools.partial(CoOp, model, NAMES, ctx_init=None, n_ctx=4, epochs=4, batch_size=8, progress=False)
    first, again, other = fit(seed=3).fit(x, y), fit(seed=3).fit(x, y), fit(seed=4).fit(x, y)
    assert torch.equal(first.ctx_, again.ctx_) and first.loss_curve_ == again.loss_curve_
    assert not torch.equal(first.ctx_, other.ctx_)


def test_context_size_options(model):
    x, y = clustered_features()
    with pytest.raises(ValueError, match="ctx_init=None"):
        CoOp(model, NAMES, n_ctx=4, progress=False).fit(x, y)  # "a photo of a" is 12 byte tokens
    random = CoOp(model, NAMES, n_ctx=4, ctx_init=None, epochs=0, progress=False).fit(x, y)
    assert random.ctx_.shape == (4, 64) and random.ctx_.std() < 0.05  # N(0, 0.02²)
    assert CoOp(model, NAMES, ctx_init=None, epochs=0, progress=False).fit(x, y).ctx_.shape == (16, 64)
    with pytest.raises(UserError, match="context"):
        CoOp(model, NAMES, n_ctx=60, ctx_init=None, progress=False).fit(x, y)  # beyond 64 positions
    with pytest.raises(ValueError, match="labels"):
        CoOp(model, NAMES, epochs=0, progress=False).fit(x, y + 1)


def test_models_without_a_prompt_hook_are_user_errors(model):
    image_only = tiny_model()
    image_only.text_tower = image_only.text_proj = None
    hookless = tiny_model()

    class NoHooks(nn.Module):  # a tower that only runs from ids, as an open_clip or hf text model
        def __init__(self, inner):
            super().__init__()
            self.inner, self.width = inner, inner.width

        def tokenize(self, texts):
            return self.inner.tokenize(texts)

        def forward(self, tokens):
            return self.inner(tokens)

    hookless.text_tower = NoHooks(hookless.text_tower)
    x, y = clustered_features()
    for bad, reason in [(image_only, "no text tower"), (hookless, "cannot run from token embeddings"),
                        (nn.Linear(4, 4), "not a transferlab model")]:
        with pytest.raises(UserError, match=reason) as err:
            CoOp(bad, NAMES, progress=False).fit(x, y)
        assert "linear probe" in str(err.value)
    assert prompt_model(model) is model


def test_save_and_load(model, tmp_path):
    x, y = clustered_features()
    coop = CoOp(model, NAMES, class_specific=True, epochs=3, progress=False).fit(x, y)
    assert set(coop.state_dict()) == {"ctx"}
    coop.save(tmp_path / "coop")
    config = json.loads((tmp_path / "coop" / CONFIG_FILE).read_text())
    assert config["method"] == "coop" and config["params"]["classnames"] == NAMES and len(config["sha256"]) == 1
    loaded = CoOp.load(tmp_path / "coop", model)
    torch.testing.assert_close(loaded.weights_, coop.weights_)
    np.testing.assert_array_equal(loaded.predict(x), coop.predict(x))
    with pytest.raises(UserError, match="not empty"):
        coop.save(tmp_path / "coop")


def test_plugs_into_fewshot_curve(model):
    x, y = clustered_features(per_class=6)
    curve = fewshot_curve(functools.partial(CoOp, model, NAMES, epochs=2, progress=False), x.numpy(), y.numpy(),
                          x.numpy(), y.numpy(), shots=(1, 2), seeds=2)
    assert set(curve) == {1, 2} and all(0 <= s <= 1 for k in curve for s in curve[k]["scores"])


@pytest.mark.slow
def test_minilm_initial_prompt_equals_tokenized_template(minilm_model):
    x, y = clustered_features()
    coop = CoOp(minilm_model, NAMES, epochs=0, progress=False).fit(x, y)
    assert coop.ctx_.shape == (4, 384)  # "a photo of a": four word pieces after [CLS]
    torch.testing.assert_close(coop.weights_, plain_prompt_weights(minilm_model), atol=1e-5, rtol=0)
    tower = minilm_model.text_tower
    tokens = tower.tokenize(["a photo of a cat.", "a much longer caption of a dog."])
    with torch.no_grad():
        by_embeddings = tower.forward_embeddings(tower.embed_tokens(tokens["input_ids"]), tokens["attention_mask"])
        torch.testing.assert_close(by_embeddings, tower(tokens), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_minilm_training_moves_only_the_context(minilm_model):
    x, y = clustered_features()
    before = {k: v.clone() for k, v in minilm_model.state_dict().items()}
    coop = CoOp(minilm_model, NAMES, epochs=10, progress=False).fit(x, y)
    assert coop.loss_curve_[-1] < coop.loss_curve_[0]
    assert all(torch.equal(v, minilm_model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in minilm_model.parameters())
