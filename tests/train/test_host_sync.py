"""No training step makes the host wait for the device, counted with a CUDA-free stand-in.

On a GPU, reading a tensor's value (`.item()`, `bool()`, `float()`, `.tolist()`, `.cpu()`, `.numpy()`) or an
operation whose output size depends on values (`nonzero`, a boolean mask, `unique`, `repeat_interleave`
without its output size) blocks the host until the device has run everything queued, and the GPU then idles
while the host prepares the next step. Inside `Training.step` (the batch made, its tensors on the device)
every tensor would live on the GPU, so any such call there is a synchronisation. The stand-in counts them on
the CPU with two torch modes: a dispatch mode for aten operations (`_local_scalar_dense` is what item, bool,
float and int call) and a function mode for the methods that read data without one (tolist, numpy, cpu).
Values are read only at log and checkpoint steps (`Training.log`, `Training.save`), outside the step.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from transferlab.config import load_recipe
from transferlab.train import loop

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten._unique.default,
           aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default, aten.equal.default,
           aten.is_nonzero.default, aten.bincount.default}
READING = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu}


class _Operations(TorchDispatchMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        masked = func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default) and any(
            i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])
        unsized = func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None
        if func in SYNCING or masked or unsized:
            self.calls.append(str(func))
        return func(*args, **kwargs)


class _Methods(TorchFunctionMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READING:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


class HostSyncs:
    """Inside `with counter:`, the calls that would make a CUDA host wait are appended to `counter.calls`."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __enter__(self) -> HostSyncs:
        self._modes = [_Methods(self.calls), _Operations(self.calls)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def syncs_per_step(overrides: list[str], tmp_path, monkeypatch) -> dict[int, list[str]]:
    """Train the recipe, counting inside each `Training.step`; {0-based step: syncing calls}."""
    counted: dict[int, list[str]] = {}
    real_step = loop.Training.step

    def step(self, number, batch, stop):
        with HostSyncs() as counter:
            real_step(self, number, batch, stop)
        counted[number] = counter.calls
    monkeypatch.setattr(loop.Training, "step", step)
    loop.pretrain(load_recipe(None, overrides), tmp_path / "run")
    return counted


def test_the_counter_sees_each_kind_of_synchronisation():
    x = torch.arange(6.0)
    for read in (lambda: x[0].item(), lambda: bool(x[0] > 1), lambda: float(x.sum()), lambda: x.tolist(),
                 lambda: x.cpu(), lambda: x.numpy(), lambda: x[x > 2], lambda: x.nonzero(),
                 lambda: torch.unique(x), lambda: x.repeat_interleave(x.long())):
        with HostSyncs() as counter:
            read()
        assert counter.calls, read
    with HostSyncs() as counter:  # a step's kind of work: none of this waits
        y = torch.where(x > 2, x, 0.0).sqrt().clamp_(0, 1)
        y.add_(x.repeat_interleave(2, output_size=12)[::2]).add_(x[x.long() % 2])  # long indices, not a mask
    assert counter.calls == []


VARIANTS = {
    "cnn + trained text tower": [],
    "bf16, no clipping": ["train.precision=bf16", "train.grad_clip=null"],
    "locked MiniLM (LiT)": ["model.text.name=minilm-l6", "model.text.locked=true"],
}


@pytest.mark.parametrize("extra", VARIANTS.values(), ids=VARIANTS.keys())
def test_no_training_step_makes_the_host_wait(tiny_overrides, tmp_path, monkeypatch, extra):
    counted = syncs_per_step(tiny_overrides + ["train.log_every=4"] + extra, tmp_path, monkeypatch)
    assert len(counted) == 8
    assert {step: calls for step, calls in counted.items() if calls} == {}


def test_a_value_read_inside_the_step_is_counted(tiny_overrides, tmp_path, monkeypatch):
    """The test above would fail if a step read its loss: here one is added (as a log line each step would)."""
    real_gradients = loop.step_gradients

    def reading(*args, **kwargs):
        loss = real_gradients(*args, **kwargs)
        loss.item()
        return loss
    monkeypatch.setattr(loop, "step_gradients", reading)
    counted = syncs_per_step(tiny_overrides + ["train.log_every=4"], tmp_path, monkeypatch)
    assert all(calls == ["aten._local_scalar_dense.default"] for calls in counted.values())
