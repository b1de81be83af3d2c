from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from transferlab.data.tokenizer import ByteTokenizer
from transferlab.models.registry import TEXT_TOWERS
from transferlab.models.text_transformer import TextTransformer


@pytest.fixture
def tower() -> TextTransformer:
    torch.manual_seed(0)
    return TEXT_TOWERS.create("text-transformer-tiny")


def test_registered_names_and_widths():
    assert {"text-transformer-small", "text-transformer-tiny"} <= set(TEXT_TOWERS.names())
    small = TEXT_TOWERS.create("text-transformer-small")
    assert (small.width, small.context_length, len(small.blocks.layers)) == (128, 64, 3)
    assert small.external_weights is False and isinstance(small.tokenizer, ByteTokenizer)
    assert TEXT_TOWERS.create("text-transformer-tiny", context_length=16).context_length == 16


def test_output_shape(tower):
    out = tower(tower.tokenize(["a cat", "", "ünïcödé\nnewline"]))
    assert out.shape == (3, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_output_does_not_depend_on_batch_padding(tower, grad):
    # With and without autograd, because eval-mode inference takes PyTorch's fused attention path.
    tower.eval()
    with torch.set_grad_enabled(grad):
        alone = tower(tower.tokenize(["a small dog"]))
        padded = tower(tower.tokenize(["a small dog", "a very long caption " * 10]))
    assert padded.shape == (2, 64)
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=0)


def test_long_text_is_truncated_to_context(tower):
    tokens = tower.tokenize(["word " * 100])
    assert tokens["input_ids"].shape == (1, 64)
    assert tower(tokens).shape == (1, 64)
    with pytest.raises(ValueError, match="context_length"):
        tower(ByteTokenizer()(["word " * 100], context_length=65))


def test_different_texts_give_different_outputs(tower):
    out = tower(tower.tokenize(["a photo of a cat", "a photo of a dog"]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_gradient_reaches_token_embedding(tower):
    tower(tower.tokenize(["hello", "hi"])).pow(2).sum().backward()
    grad = tower.token_embedding.weight.grad
    assert grad is not None and grad[ord("h")].abs().sum() > 0
    assert grad[ByteTokenizer.PAD].abs().sum() == 0  # padding is masked out, so it gets no gradient


def test_overfits_random_captions(tower):
    rng = random.Random(0)
    texts = ["".join(rng.choice("abcdefghij ") for _ in range(rng.randint(5, 20))) for _ in range(16)]
    labels = torch.arange(16) % 4
    tokens = tower.tokenize(texts)
    head = nn.Linear(tower.width, 4)
    optimizer = torch.optim.Adam([*tower.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(head(tower(tokens)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
