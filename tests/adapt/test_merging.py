"""Weight-space merging: TIES by hand, WiSE-FT, task arithmetic, soups, compatibility checks, load and save."""

import copy

import pytest
import torch
from safetensors.torch import save_file

from transferlab.adapt.merging import (
    check_compatible,
    interpolate,
    load_states,
    task_arithmetic,
    task_vector,
    ties_merge,
    uniform_soup,
)
from transferlab.checkpoints import save_checkpoint
from transferlab.errors import UserError


def model(w, b, steps=0, dtype=torch.float32):
    """A state dict with a (2, 3) weight, a (4,) bias and an integer batch-norm style counter."""
    return {"w": torch.tensor(w, dtype=dtype).reshape(2, 3), "b": torch.tensor(b, dtype=dtype),
            "n": torch.tensor(steps)}


def random_model(seed, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(2, 3, generator=generator).to(dtype), "b": torch.randn(4, generator=generator).to(dtype),
            "n": torch.tensor(seed)}


def add(pretrained, flat_tau, steps):
    """pretrained + a task vector given as 10 numbers (w's 6 entries, then b's 4)."""
    return model((pretrained["w"].flatten() + torch.tensor(flat_tau[:6])).tolist(),
                 (pretrained["b"] + torch.tensor(flat_tau[6:])).tolist(), steps)


def test_ties_matches_a_hand_worked_example():
    pretrained = model([1, 1, 1, 1, 1, 1], [-1, 0, 1, 2], steps=3)
    #        entry:  w0   w1   w2   w3   w4    w5   | b0    b1     b2   b3
    tau1 = [4.0, -2.0, 3.0, 0.5, 0.0, 0.0, 0.25, 0.25, 0.0, 0.0]
    tau2 = [1.0, 3.0, -3.0, -1.0, 1.0, 0.5, -0.5, 0.0, 0.0, 0.0]
    tau3 = [1.0, 1.0, 0.0, -2.0, -0.5, 0.0, 0.75, -0.25, 0.5, 0.0]
    finetuned = [add(pretrained, tau1, 7), add(pretrained, tau2, 9), add(pretrained, tau3, 11)]
    # TRIM, density 0.4 of N = 10 entries over the whole model -> k = 4 per task vector, keep |tau| >= 4th largest:
    #   tau1 magnitudes 4, 3, 2, 0.5, 0.25, 0.25 -> threshold 0.5 -> [4, -2, 3, 0.5, 0, 0 | 0, 0, 0, 0]
    #     (b's 0.25s are dropped; trimming b on its own would keep them, and b0 would become (0.25 + 0.75) / 2)
    #   tau2 magnitudes 3, 3, 1, 1, 1, 0.5, 0.5 -> threshold 1, three entries tied at it, all kept (5 > k):
    #     [1, 3, -3, -1, 1, 0 | 0, 0, 0, 0]
    #   tau3 magnitudes 2, 1, 1, 0.75, 0.5, 0.5, 0.25 -> threshold 0.75 -> [1, 1, 0, -2, 0, 0 | 0.75, 0, 0, 0]
    # ELECT sign of the sum, then DISJOINT MEAN of the agreeing trimmed values:
    #   w0:  4 + 1 + 1   =  6    -> +, mean(4, 1, 1)  =  2
    #   w1: -2 + 3 + 1   =  2    -> +, mean(3, 1)     =  2     (the conflicting -2 is left out)
    #   w2:  3 - 3 + 0   =  0    -> tie, no sign, none agree -> 0
    #   w3:  0.5 - 1 - 2 = -2.5  -> -, mean(-1, -2)   = -1.5   (the conflicting 0.5 is left out)
    #   w4:  0 + 1 + 0   =  1    -> +, mean(1)        =  1
    #   w5, b1, b2, b3: everything trimmed -> 0;  b0: 0.75 -> 0.75
    # theta = pretrained + 0.5 * merged:
    #   w = 1 + 0.5 * [2, 2, 0, -1.5, 1, 0] = [2, 2, 1, 0.25, 1.5, 1]
    #   b = [-1, 0, 1, 2] + 0.5 * [0.75, 0, 0, 0] = [-0.625, 0, 1, 2]
    merged = ties_merge(pretrained, finetuned, density=0.4, scale=0.5)
    assert torch.equal(merged["w"], torch.tensor([[2.0, 2.0, 1.0], [0.25, 1.5, 1.0]]))
    assert torch.equal(merged["b"], torch.tensor([-0.625, 0.0, 1.0, 2.0]))
    assert torch.equal(merged["n"], torch.tensor(7))  # integer buffers come from the first fine-tuned model


def test_ties_keeps_ceil_of_density_times_entries():
    pretrained = {"w": torch.zeros(50), "b": torch.zeros(50)}
    finetuned = {"w": torch.arange(1.0, 51.0), "b": -torch.arange(51.0, 101.0)}
    # 0.07 * 100 is 7.000000000000001 in binary; k must still be 7, keeping b's 94..100 and nothing else
    merged = ties_merge(pretrained, [finetuned], density=0.07, scale=1.0)
    assert torch.equal(merged["w"], torch.zeros(50))
    assert torch.equal(merged["b"], torch.cat([torch.zeros(43), -torch.arange(94.0, 101.0)]))


def test_ties_with_density_one_and_agreeing_signs_is_the_mean_task_vector():
    pretrained = random_model(0)
    generator = torch.Generator().manual_seed(1)
    signs = {key: torch.randint(0, 2, value.shape, generator=generator) * 2.0 - 1.0
             for key, value in pretrained.items() if value.is_floating_point()}
    finetuned = [{**{key: pretrained[key] + sign * (torch.rand(sign.shape, generator=generator) + 0.1)
                     for key, sign in signs.items()}, "n": torch.tensor(5)} for _ in range(3)]
    merged = ties_merge(pretrained, finetuned, density=1.0, scale=0.9)
    expected = task_arithmetic(pretrained, finetuned, scale=0.9 / 3)
    for key in ("w", "b"):
        torch.testing.assert_close(merged[key], expected[key], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(merged["w"], task_arithmetic(pretrained, finetuned, scale=0.9)["w"])


def test_wise_ft_endpoints_and_midpoint():
    pretrained, finetuned = model([0, 2, 4, 6, 8, 10], [1, 1, 1, 1], 3), model([4, -2, 0, 6, 0, 1], [3, 3, 3, 3], 8)
    for alpha, source in ((0.0, pretrained), (1.0, finetuned)):
        out = interpolate(pretrained, finetuned, alpha)
        assert torch.equal(out["w"], source["w"]) and torch.equal(out["b"], source["b"])
        assert torch.equal(out["n"], torch.tensor(8))
    half = interpolate(pretrained, finetuned, 0.5)
    assert torch.equal(half["w"], torch.tensor([[2.0, 0.0, 2.0], [6.0, 4.0, 5.5]]))
    assert torch.equal(half["b"], torch.tensor([2.0, 2.0, 2.0, 2.0]))
    assert torch.equal(half["n"], torch.tensor(8))


def test_uniform_soup_is_the_elementwise_mean():
    one = random_model(3)
    soup = uniform_soup([one, copy.deepcopy(one), copy.deepcopy(one)])
    assert all(torch.equal(soup[key], one[key]) for key in one)
    models = [model([1, 2, 3, 4, 5, 6], [0, 0, 0, 1], 1), model([3, 4, 5, 6, 7, 8], [0, 1, 0, 1], 2),
              model([5, 9, 1, 2, 0, 4], [3, 2, 0, 1], 3)]
    soup = uniform_soup(models)
    assert torch.equal(soup["w"], torch.tensor([[3.0, 5.0, 3.0], [4.0, 4.0, 6.0]]))
    assert torch.equal(soup["b"], torch.tensor([1.0, 1.0, 0.0, 1.0]))
    assert torch.equal(soup["n"], torch.tensor(1))


@pytest.mark.parametrize("dtype, big", [(torch.float32, 3e38), (torch.float16, 60000.0)])
def test_computes_in_float64_and_returns_the_input_dtype(dtype, big):
    # the sum of two such values overflows the input dtype; only a wider accumulator gives the mean back
    models = [model([big] * 6, [1] * 4, dtype=dtype) for _ in range(2)]
    soup = uniform_soup(models)
    assert soup["w"].dtype == dtype and torch.equal(soup["w"], models[0]["w"])


def test_task_arithmetic_and_task_vector():
    pretrained, finetuned = random_model(0), random_model(1)
    single = task_arithmetic(pretrained, [finetuned], scale=1.0)
    assert all(torch.equal(single[key], finetuned[key]) for key in finetuned)
    tau = task_vector(pretrained, finetuned)
    assert set(tau) == {"w", "b"} and torch.equal(tau["w"], finetuned["w"] - pretrained["w"])
    base = model([1] * 6, [0] * 4)
    first, second = add(base, [1, -1, 0, 0, 0, 0, 0, 0, 0, 0], 1), add(base, [0.5, 2, 0, 0, 0, 0, 0, 0, 0, 4], 2)
    # 1 + 0.5 * (1 + 0.5) = 1.75, 1 + 0.5 * (-1 + 2) = 1.5, b3: 0 + 0.5 * 4 = 2
    out = task_arithmetic(base, [first, second], scale=0.5)
    assert torch.equal(out["w"], torch.tensor([[1.75, 1.5, 1.0], [1.0, 1.0, 1.0]]))
    assert torch.equal(out["b"], torch.tensor([0.0, 0.0, 0.0, 2.0]))


@pytest.mark.parametrize("change, what", [
    (lambda s: s.pop("b"), "'b' is in runs/a but missing from runs/b"),
    (lambda s: s.update(extra=torch.zeros(1)), "'extra' is in runs/b but missing from runs/a"),
    (lambda s: s.update(b=torch.zeros(5)), r"'b' has shape \(4,\) in runs/a but \(5,\) in runs/b"),
    (lambda s: s.update(b=s["b"].double()), "'b' has dtype torch.float32 in runs/a but torch.float64 in runs/b"),
], ids=["missing key", "extra key", "shape", "dtype"])
def test_mismatches_name_the_key_and_both_models(change, what):
    first, second = random_model(0), random_model(1)
    change(second)
    with pytest.raises(UserError, match=what) as caught:
        check_compatible({"runs/a": first, "runs/b": second})
    assert "`model:`" in str(caught.value)
    with pytest.raises(UserError, match="the pretrained model.*fine-tuned model 2"):
        ties_merge(first, [first, second])


def test_out_of_range_parameters_are_refused():
    pretrained, finetuned = random_model(0), random_model(1)
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match="alpha"):
            interpolate(pretrained, finetuned, alpha)
    for density in (0.0, -0.2, 1.01, float("nan")):
        with pytest.raises(UserError, match="density"):
            ties_merge(pretrained, [finetuned], density=density)
    with pytest.raises(UserError, match="scale"):
        task_arithmetic(pretrained, [finetuned], scale=float("inf"))
    with pytest.raises(UserError, match="at least one"):
        uniform_soup([])


def test_inputs_are_never_modified_nor_shared():
    pretrained, finetuned = random_model(0), [random_model(1), random_model(2)]
    before = copy.deepcopy((pretrained, finetuned))
    outputs = [interpolate(pretrained, finetuned[0], 0.3), task_vector(pretrained, finetuned[0]),
               task_arithmetic(pretrained, finetuned, 0.7), ties_merge(pretrained, finetuned, 0.5, 1.0),
               uniform_soup(finetuned)]
    for out in outputs:
        for value in out.values():
            value.add_(1)  # writing into a result must not reach the inputs
    for state, saved in zip([pretrained, *finetuned], [before[0], *before[1]], strict=True):
        assert all(torch.equal(state[key], saved[key]) for key in saved)


def test_load_states_reads_runs_checkpoints_and_safetensors(tmp_path):
    weights = random_model(4)
    checkpoint = save_checkpoint(tmp_path / "run", 6, weights, {}, meta={})
    save_file(weights, str(tmp_path / "w.safetensors"))
    paths = [tmp_path / "run", checkpoint, tmp_path / "w.safetensors"]
    states = load_states(paths)
    assert list(states) == [str(path) for path in paths]
    for state in states.values():
        assert all(torch.equal(state[key], weights[key]) for key in weights)


def test_load_states_refuses_damaged_or_unknown_inputs(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "run", 6, random_model(4), {}, meta={})
    data = bytearray((checkpoint / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (checkpoint / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        load_states([tmp_path / "run"])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="junk.safetensors"):
        load_states([tmp_path / "junk.safetensors"])
    with pytest.raises(UserError, match="does not exist"):
        load_states([tmp_path / "nowhere"])
    save_file(random_model(1), str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError, match="twice"):
        load_states([tmp_path / "w.safetensors", str(tmp_path / "w.safetensors")])
