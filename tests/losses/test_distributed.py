"""The distributed CLIP and SigLIP losses against the single-process losses on the concatenated batch.

One torchrun launch (2 ranks, gloo, float64, real DDP) runs every case of `distributed_worker.py`; each
test compares one case with `clip_loss` / `siglip_loss` of the whole global batch in this process:
- local_loss=False: every rank's loss value equals the single-process loss;
- local_loss=True: the mean of the ranks' loss values equals it;
- both: the DDP-averaged gradients of every parameter (towers, log-scale, bias) equal its gradients.
World size 1 (torch.distributed not initialised) is checked in-process.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.torchrun import torchrun
from transferlab.losses import clip_loss, siglip_loss
from transferlab.losses.distributed import distributed_clip_loss, distributed_siglip_loss

WORKER_PATH = Path(__file__).with_name("distributed_worker.py")
_spec = importlib.util.spec_from_file_location("distributed_worker", WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

TOLERANCE = 1e-10  # float64


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("distributed") / "results.json"
    torchrun(str(WORKER_PATH), str(out))
    return json.loads(out.read_text())


def single_process(name: str) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of the worker's case on the whole global batch, with the plain losses."""
    kind, _, use_ids, smoothing = worker.CASES[name]
    model = worker.Towers(with_bias=kind == "siglip")
    images, texts, ids = worker.global_batch()
    image_emb, text_emb, scale, bias = model(images, texts)
    ids = ids if use_ids else None
    if kind == "clip":
        loss = clip_loss(image_emb, text_emb, scale, positive_ids=ids, label_smoothing=smoothing)
    else:
        loss = siglip_loss(image_emb, text_emb, scale, bias, positive_ids=ids)
    loss.backward()
    return loss.item(), {key: parameter.grad for key, parameter in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(worker.CASES))
def test_distributed_loss_and_ddp_gradients_equal_single_process(distributed_results, name):
    result = distributed_results["cases"][name]
    expected_loss, expected_grads = single_process(name)
    losses = result["losses"]
    assert len(losses) == distributed_results["world_size"] == 2
    if worker.CASES[name][1]:  # local_loss: each rank has the loss of its own rows, their mean is the loss
        assert abs(sum(losses) / len(losses) - expected_loss) < TOLERANCE
        assert abs(losses[0] - losses[1]) > 1e-3  # the ranks really did compute different halves
    else:
        assert max(abs(value - expected_loss) for value in losses) < TOLERANCE
    assert result["grads"].keys() == expected_grads.keys()
    for key, grad in expected_grads.items():
        difference = (torch.tensor(result["grads"][key], dtype=torch.float64) - grad).abs().max().item()
        assert difference < TOLERANCE, f"{name}: gradient of {key} differs by {difference}"
        assert grad.abs().max() > 1e-4  # a non-trivial gradient, not two zeros compared


@pytest.mark.slow
def test_all_gather_with_grad_concatenates_and_sums_each_ranks_row_gradients(distributed_results):
    world_size = distributed_results["world_size"]
    rows = worker.GATHER_ROWS
    inputs = [worker.gather_input(rank) for rank in range(world_size)]
    weights = [worker.gather_weights(rank, world_size) for rank in range(world_size)]
    gathered = torch.tensor(distributed_results["gather"]["value"], dtype=torch.float64)
    assert torch.equal(gathered, torch.cat(inputs))
    # Rank q's loss is Σ (X ⊙ w_q), so rank r's rows get Σ_q w_q[rows of r].
    expected = torch.cat([sum(weights)[rank * rows:(rank + 1) * rows] for rank in range(world_size)])
    grads = torch.tensor(distributed_results["gather"]["grads"], dtype=torch.float64)
    assert torch.allclose(grads, expected, rtol=0, atol=1e-12)


def embeddings(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)
    return image, text


def value_and_grads(loss_fn, *tensors: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    inputs = [tensor.clone().requires_grad_(True) for tensor in tensors]
    loss = loss_fn(*inputs)
    return loss.item(), list(torch.autograd.grad(loss, inputs))


def assert_same(ours: tuple[float, list[torch.Tensor]], plain: tuple[float, list[torch.Tensor]]) -> None:
    assert abs(ours[0] - plain[0]) < 1e-12
    for our_grad, plain_grad in zip(ours[1], plain[1], strict=True):
        assert torch.allclose(our_grad, plain_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("local_loss", [False, True])
@pytest.mark.parametrize("use_ids", [False, True])
def test_world_size_one_clip_equals_clip_loss(local_loss, use_ids):
    image, text = embeddings(9, 5, seed=0)
    ids = torch.tensor([0, 1, 0, 2, 2, 3, 1, 4, 0]) if use_ids else None
    scale = torch.tensor(6.0, dtype=torch.float64)
    ours = value_and_grads(lambda i, t, s: distributed_clip_loss(i, t, s, local_loss=local_loss, positive_ids=ids,
                                                                 label_smoothing=0.2), image, text, scale)
    plain = value_and_grads(lambda i, t, s: clip_loss(i, t, s, positive_ids=ids, label_smoothing=0.2),
                            image, text, scale)
    assert_same(ours, plain)


@pytest.mark.parametrize("local_loss", [False, True])
@pytest.mark.parametrize("use_ids", [False, True])
def test_world_size_one_siglip_equals_siglip_loss(local_loss, use_ids):
    image, text = embeddings(9, 5, seed=1)
    ids = torch.tensor([0, 1, 0, 2, 2, 3, 1, 4, 0]) if use_ids else None
    scale, bias = torch.tensor(6.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    ours = value_and_grads(lambda i, t, s, b: distributed_siglip_loss(i, t, s, b, local_loss=local_loss,
                                                                      positive_ids=ids), image, text, scale, bias)
    plain = value_and_grads(lambda i, t, s, b: siglip_loss(i, t, s, b, positive_ids=ids), image, text, scale, bias)
    assert_same(ours, plain)


@pytest.mark.parametrize("local_loss", [False, True])
@pytest.mark.parametrize("epsilon", [-0.1, 1.5])
def test_label_smoothing_out_of_range_is_rejected(local_loss, epsilon):
    image, text = embeddings(4, 3, seed=2)
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\]"):
        distributed_clip_loss(image, text, 5.0, local_loss=local_loss, label_smoothing=epsilon)
