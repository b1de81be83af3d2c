"""LOOK: look_loss against a brute-force float64 loop, and LookLoss's leave-one-out, FIFO bank and checkpointing."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferlab.losses import NO_NEIGHBOUR_LOSS, LookLoss, look_loss


def normalised(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=generator, dtype=dtype), dim=-1)


def brute_force(anchors: np.ndarray, labels: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray, k: int,
                tau: float, self_mask: np.ndarray) -> float:
    """For each anchor: sort the non-self candidates by similarity, keep k, −log max(p, 1e-8) of the label vote."""
    total = 0.0
    for i in range(len(anchors)):
        candidates = [(float(anchors[i] @ bank[j]), bank_labels[j]) for j in range(len(bank)) if not self_mask[i, j]]
        nearest = sorted(candidates, key=lambda pair: -pair[0])[:k]
        same = sum(math.exp(s / tau) for s, label in nearest if label == labels[i])
        every = sum(math.exp(s / tau) for s, _ in nearest)
        p = same / every if nearest else 0.0
        total += -math.log(max(p, 1e-8))
    return total / len(anchors)


def bank_and_batch(seed: int, batch: int = 6, bank: int = 20, d: int = 4, classes: int = 3):
    generator = torch.Generator().manual_seed(seed)
    anchors, candidates = normalised(batch, d, seed), normalised(bank, d, seed + 100)
    labels = torch.randint(classes, (batch,), generator=generator)
    candidate_labels = torch.randint(classes, (bank,), generator=generator)
    self_mask = torch.rand(batch, bank, generator=generator) < 0.2
    return anchors, labels, candidates, candidate_labels, self_mask


@pytest.mark.parametrize(("k", "tau"), [(1, 0.1), (5, 0.07), (12, 0.5), (100, 0.2)])
def test_function_matches_brute_force(k, tau):
    """k = 100 exceeds the 20 candidates: every non-self candidate is a neighbour."""
    anchors, labels, candidates, candidate_labels, self_mask = bank_and_batch(seed=k)
    loss = look_loss(anchors, labels, candidates, candidate_labels, k, tau, self_mask)
    expected = brute_force(anchors.numpy(), labels.numpy(), candidates.numpy(), candidate_labels.numpy(), k, tau,
                           self_mask.numpy())
    assert loss.item() == pytest.approx(expected, abs=1e-10)


def test_function_floors_anchors_without_a_same_label_neighbour_or_without_any_candidate():
    anchors = normalised(3, 4, seed=1)
    candidates = normalised(5, 4, seed=2)
    labels, candidate_labels = torch.tensor([0, 1, 2]), torch.tensor([1, 1, 1, 1, 1])
    self_mask = torch.zeros(3, 5, dtype=torch.bool)
    self_mask[2] = True  # anchor 2 has no candidate at all
    loss = look_loss(anchors.requires_grad_(True), labels, candidates, candidate_labels, 3, 0.1, self_mask)
    loss.backward()
    # anchor 1 has only same-label neighbours: p = 1; the other two sit at the floor
    assert loss.item() == pytest.approx(2 * NO_NEIGHBOUR_LOSS / 3, abs=1e-10)
    assert torch.isfinite(anchors.grad).all()


def test_candidates_are_detached_and_the_gradient_matches_finite_differences():
    anchors, labels, candidates, candidate_labels, self_mask = bank_and_batch(seed=3, batch=4, bank=10)
    anchors.requires_grad_(True)
    candidates.requires_grad_(True)
    look_loss(anchors, labels, candidates, candidate_labels, 6, 0.3, self_mask).backward()
    assert candidates.grad is None
    assert torch.autograd.gradcheck(
        lambda x: look_loss(x, labels, candidates.detach(), candidate_labels, 6, 0.3, self_mask), (anchors,))


def test_module_matches_the_function_on_bank_plus_batch_with_leave_one_out_by_sample_id():
    look = LookLoss(bank_size=16, embed_dim=4, k=5, temperature=0.1).double()
    first, second = normalised(10, 4, seed=4), normalised(6, 4, seed=5)
    first_labels, second_labels = torch.arange(10) % 3, torch.tensor([0, 1, 2, 0, 1, 2])
    first_ids, second_ids = torch.arange(10), torch.tensor([3, 4, 20, 21, 22, 22])  # 3, 4 seen before; 22 twice
    look(first, first_labels, first_ids)
    loss = look(second, second_labels, second_ids)
    candidates = torch.cat([first, second])
    candidate_labels, candidate_ids = torch.cat([first_labels, second_labels]), torch.cat([first_ids, second_ids])
    expected = brute_force(second.numpy(), second_labels.numpy(), candidates.numpy(), candidate_labels.numpy(), 5,
                           0.1, (second_ids[:, None] == candidate_ids[None, :]).numpy())
    assert loss.item() == pytest.approx(expected, abs=1e-10)


def test_leave_one_out_excludes_the_samples_own_earlier_bank_entry():
    """The only same-label candidate is the sample's own entry from an earlier step: the score must be the
    no-neighbour floor, not the perfect score the sample would get by finding itself."""
    look = LookLoss(bank_size=8, embed_dim=3, k=3, temperature=0.1).double()
    point = F.normalize(torch.tensor([[1.0, 0.2, 0.0]], dtype=torch.float64), dim=-1)
    others = F.normalize(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64),
                         dim=-1)
    look(torch.cat([point, others]), torch.tensor([0, 1, 1, 2]), torch.tensor([7, 1, 2, 3]))
    again = F.normalize(point + 0.01, dim=-1)
    assert look(again, torch.tensor([0]), torch.tensor([7])).item() == pytest.approx(NO_NEIGHBOUR_LOSS, abs=1e-9)
    # the same embedding under a different sample id does find the entry, and is classified all but perfectly
    assert look(again, torch.tensor([0]), torch.tensor([99])).item() < 0.01


def test_other_samples_of_the_current_batch_are_neighbours():
    look = LookLoss(bank_size=4, embed_dim=2, k=5)
    batch = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]), dim=-1)
    # empty bank: 0 and 1 find each other (p = 1), 2 has only other-label neighbours
    loss = look(batch, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]))
    assert loss.item() == pytest.approx(NO_NEIGHBOUR_LOSS / 3, rel=1e-5)


def test_a_lone_sample_on_an_empty_bank_gives_the_floor_without_nan():
    look = LookLoss(bank_size=4, embed_dim=3, k=50)
    embedding = normalised(1, 3, seed=6, dtype=torch.float32).requires_grad_(True)
    loss = look(embedding, torch.tensor([0]), torch.tensor([0]))
    loss.backward()
    assert loss.item() == pytest.approx(NO_NEIGHBOUR_LOSS, rel=1e-6)
    assert torch.isfinite(embedding.grad).all()


def test_bank_is_filled_first_in_first_out_with_wrap_around():
    look = LookLoss(bank_size=5, embed_dim=2, k=3)
    rows = normalised(14, 2, seed=7, dtype=torch.float32)
    look(rows[:3], torch.arange(3), torch.arange(3))
    assert (int(look.count), int(look.pointer)) == (3, 3)
    look(rows[3:7], torch.arange(3, 7), torch.arange(3, 7))  # slots 3, 4, then wraps to 0, 1
    assert (int(look.count), int(look.pointer)) == (5, 2)
    assert look.bank_ids.tolist() == [5, 6, 2, 3, 4]
    assert torch.equal(look.bank_embeddings, rows[[5, 6, 2, 3, 4]])
    assert look.bank_labels.tolist() == [5, 6, 2, 3, 4]
    look(rows[7:14], torch.arange(7, 14), torch.arange(7, 14))  # larger than the bank: its last five rows stay
    assert (int(look.count), int(look.pointer)) == (5, 4)
    assert sorted(look.bank_ids.tolist()) == [9, 10, 11, 12, 13]
    assert look.bank_ids.tolist() == [10, 11, 12, 13, 9]


def test_eval_mode_scores_without_enqueueing():
    look = LookLoss(bank_size=5, embed_dim=2, k=3).eval()
    look(normalised(3, 2, seed=8, dtype=torch.float32), torch.arange(3), torch.arange(3))
    assert int(look.count) == 0


def test_bank_survives_a_state_dict_round_trip():
    look = LookLoss(bank_size=12, embed_dim=4, k=4)
    for step in range(3):
        look(normalised(5, 4, seed=10 + step, dtype=torch.float32), torch.arange(5) % 2, torch.arange(5) + 5 * step)
    assert {"bank_embeddings", "bank_labels", "bank_ids", "pointer", "count"} <= set(look.state_dict())
    restored = LookLoss(bank_size=12, embed_dim=4, k=4)
    restored.load_state_dict(look.state_dict())
    for name, buffer in look.named_buffers():
        assert torch.equal(buffer, getattr(restored, name))
    probe = normalised(4, 4, seed=20, dtype=torch.float32)
    assert torch.equal(look(probe, torch.tensor([0, 1, 0, 1]), torch.arange(100, 104)),
                       restored(probe, torch.tensor([0, 1, 0, 1]), torch.arange(100, 104)))


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        LookLoss(bank_size=0, embed_dim=4)
    with pytest.raises(ValueError):
        LookLoss(bank_size=4, embed_dim=4, temperature=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_tracks_float64_and_stays_differentiable(dtype):
    anchors, labels, candidates, candidate_labels, self_mask = bank_and_batch(seed=9, batch=8, bank=40, d=16)
    expected = look_loss(anchors, labels, candidates, candidate_labels, 10, 0.2, self_mask).item()
    look = LookLoss(bank_size=64, embed_dim=16, k=10, temperature=0.2).to(dtype)
    low = anchors.to(dtype).requires_grad_(True)
    loss = look_loss(low, labels, candidates.to(dtype), candidate_labels, 10, 0.2, self_mask)
    loss.backward()
    assert loss.dtype == dtype
    assert loss.item() == pytest.approx(expected, rel=0.05 if dtype == torch.bfloat16 else 1e-5)
    assert torch.isfinite(low.grad).all()
    module_loss = look(low, labels, torch.arange(8))
    assert module_loss.dtype == dtype and look.bank_embeddings.dtype == dtype


def test_loss_falls_when_training_a_linear_layer():
    torch.manual_seed(0)  # the layer's initialisation, independent of the tests run before
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    points = 0.5 * torch.randn(4, 16, generator=generator)[labels] + torch.randn(64, 16, generator=generator)
    layer = torch.nn.Linear(16, 8)
    look = LookLoss(bank_size=128, embed_dim=8, k=10, temperature=0.1)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        loss = look(F.normalize(layer(points), dim=-1), labels, torch.arange(64))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
