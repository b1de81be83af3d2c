"""Gradient caching and accumulation give the full-batch gradients of every parameter (float64)."""

import pytest
import torch

from transferlab.config import ModelSpec, TowerSpec
from transferlab.losses import clip_loss
from transferlab.models.dual_encoder import DualEncoder
from transferlab.train.large_batch import backward_step

N = 12
TEXTS = [f"caption number {i} {'x' * (i % 4)}" for i in range(N)]


def make_model(dropout: float = 0.0) -> DualEncoder:
    torch.manual_seed(0)
    spec = ModelSpec(image=TowerSpec(name="vit-tiny", options={"width": 24, "depth": 2, "heads": 2,
                                                                "dropout": dropout}),
                     text=TowerSpec(name="text-transformer-tiny", options={"width": 16, "dropout": dropout}),
                     embed_dim=8, image_size=8, channels=1)
    return DualEncoder(spec).double()


def grads_of(model: DualEncoder, chunk, mode: str, ids=None, seed: int = 1) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    images = torch.randn(N, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    tokens = model.text_tower.tokenize(TEXTS)
    encoders = [(lambda a, b: model.encode_image(images[a:b]), N),
                (lambda a, b: model.project_text(model.text_tower({k: v[a:b] for k, v in tokens.items()})), N)]

    def loss_fn(embeddings, with_params):
        scale = model.logit_scale.exp() if with_params else model.logit_scale.exp().detach()
        return clip_loss(*embeddings, scale, positive_ids=ids)

    torch.manual_seed(seed)
    backward_step(encoders, loss_fn, model, chunk_size=chunk, mode=mode)
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["cache", "accumulate"])
@pytest.mark.parametrize("chunk", [1, 4, 5])
def test_chunked_gradients_equal_the_full_batch_gradients(mode, chunk):
    model = make_model()
    full = grads_of(model, None, mode)
    chunked = grads_of(model, chunk, mode)
    assert full.keys() == chunked.keys() and "logit_scale" in full
    for name in full:
        assert torch.allclose(full[name], chunked[name], atol=1e-6, rtol=0), name


def test_multi_positive_ids_too():
    model = make_model()
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 2, 3])
    full, cached = grads_of(model, None, "cache", ids), grads_of(model, 5, "accumulate", ids)
    for name in full:
        assert torch.allclose(full[name], cached[name], atol=1e-6, rtol=0), name


@pytest.mark.parametrize("mode", ["cache", "accumulate"])
def test_dropout_masks_are_replayed(mode):
    """With dropout, the reference is the full batch embedded chunk by chunk under the same RNG: the
    second pass must draw the very masks of the first, or the cached gradients would not match."""
    model = make_model(dropout=0.3)
    model.train()
    chunked = grads_of(model, 4, mode)

    model.zero_grad(set_to_none=True)
    images = torch.randn(N, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    tokens = model.text_tower.tokenize(TEXTS)
    torch.manual_seed(1)
    image_parts = [model.encode_image(images[a:a + 4]) for a in range(0, N, 4)]
    text_parts = [model.project_text(model.text_tower({k: v[a:a + 4] for k, v in tokens.items()}))
                  for a in range(0, N, 4)]
    clip_loss(torch.cat(image_parts), torch.cat(text_parts), model.logit_scale.exp()).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, chunked[name], atol=1e-6, rtol=0), name


def test_batchnorm_statistics_are_updated_once_per_chunk():
    torch.manual_seed(0)
    model = DualEncoder(ModelSpec(image=TowerSpec(name="cnn-tiny"), text=TowerSpec(name="text-transformer-tiny"),
                                  embed_dim=8, image_size=8)).double()
    images = torch.randn(N, 1, 8, 8, dtype=torch.float64)
    tokens = model.text_tower.tokenize(TEXTS)
    encoders = [(lambda a, b: model.encode_image(images[a:b]), N),
                (lambda a, b: model.project_text(model.text_tower({k: v[a:b] for k, v in tokens.items()})), N)]
    backward_step(encoders, lambda e, p: clip_loss(*e, 10.0), model, chunk_size=6, mode="cache")
    tracked = [m.num_batches_tracked.item() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert tracked and all(count == 2 for count in tracked)  # two chunks, each seen once with a graph
