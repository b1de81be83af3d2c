"""The CUDA paths of a training step, checked on the CPU: copies that do not make the host wait, a skipped step
decided on the device, TF32 on while training, channels-last convolutional towers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferlab.config import load_recipe
from transferlab.models.dual_encoder import DualEncoder
from transferlab.models.registry import create_image_tower
from transferlab.optim import Lion
from transferlab.runtime import tf32_matmuls, to_device
from transferlab.train import batches, loop, objectives, text_rows
from transferlab.train.device import channels_last_towers, convolutional, step_if

CUDA = torch.device("cuda")


class HostTensor:
    """What `to_device` asks of a CPU tensor, recorded (a stand-in: no CUDA here)."""

    device = torch.device("cpu")

    def __init__(self, calls: list, pinned: bool = False) -> None:
        self.calls, self.pinned = calls, pinned

    def is_pinned(self) -> bool:
        return self.pinned

    def pin_memory(self) -> HostTensor:
        self.calls.append("pin_memory")
        return HostTensor(self.calls, pinned=True)

    def to(self, device, non_blocking=False):
        self.calls.append(("to", torch.device(device).type, "non_blocking" if non_blocking else "blocking",
                           "pinned" if self.pinned else "pageable"))
        return self


def test_to_cuda_goes_through_pinned_memory_without_blocking():
    calls = []
    to_device(HostTensor(calls), CUDA)
    assert calls == ["pin_memory", ("to", "cuda", "non_blocking", "pinned")]
    calls.clear()
    to_device(HostTensor(calls, pinned=True), CUDA)  # the loader's pinned images: no second copy
    assert calls == [("to", "cuda", "non_blocking", "pinned")]
    calls.clear()
    to_device(HostTensor(calls), torch.device("cpu"))
    assert calls == [("to", "cpu", "blocking", "pageable")]


@pytest.mark.parametrize("extra", [[], ["model.text.name=minilm-l6", "model.text.locked=true"]],
                         ids=["trained text tower", "locked text tower"])
def test_every_tensor_a_step_uses_reaches_the_device_through_to_device(tiny_overrides, tmp_path, monkeypatch, extra):
    copied: set[int] = set()

    def recording(tensor, device):
        moved = to_device(tensor, device)
        copied.add(id(moved))
        return moved
    monkeypatch.setattr(batches, "to_device", recording)
    monkeypatch.setattr(text_rows, "to_device", recording)
    made = []
    real_batch = loop.Training.batch
    monkeypatch.setattr(loop.Training, "batch", lambda self, step: made.append(real_batch(self, step)) or made[-1])
    loop.pretrain(load_recipe(None, tiny_overrides + ["train.steps=2"] + extra), tmp_path / "run")
    for batch in made:
        device_tensors = [batch.index, batch.labels, batch.row_image, batch.positive_ids,
                          *[v for rows in batch.text_rows.values()
                            for v in (rows.values() if isinstance(rows, dict) else [rows])]]
        assert all(id(t) in copied for t in device_tensors if isinstance(t, torch.Tensor))
        assert batch.caption_ids.device.type == "cpu"  # read on the host (tokens, cache ids), never on the device


def test_a_skipped_step_is_decided_on_the_device_by_fused_adamw():
    param = nn.Parameter(torch.ones(4))
    param.grad = torch.ones(4)
    fused = torch.optim.AdamW([param], lr=0.1, fused=True)

    def never() -> bool:
        raise AssertionError("the host read the verdict")
    step_if(fused, torch.tensor(False), never)
    assert torch.equal(param.detach(), torch.ones(4)) and fused.state[param]["step"].item() == 0
    step_if(fused, torch.tensor(True), never)
    assert (param.detach() < 1).all() and fused.state[param]["step"].item() == 1
    assert not hasattr(fused, "found_inf")

    reads = []
    lion = Lion([param], lr=0.1)
    step_if(lion, torch.tensor(False), lambda: reads.append("read") or False)
    assert reads == ["read"] and lion.state[param] == {}  # other optimizers read it, once


def test_training_runs_with_tf32_matmuls_unless_told_not_to(tiny_overrides, tmp_path, monkeypatch):
    seen = []
    real_step = loop.Training.step

    def step(self, number, batch, stop):
        seen.append(torch.backends.cuda.matmul.fp32_precision if hasattr(torch.backends.cudnn, "conv")
                    else torch.backends.cuda.matmul.allow_tf32)
        real_step(self, number, batch, stop)
    monkeypatch.setattr(loop.Training, "step", step)
    with tf32_matmuls(False):
        loop.pretrain(load_recipe(None, tiny_overrides + ["train.steps=2"]), tmp_path / "on")
        after = list(seen)
        assert torch.backends.cuda.matmul.fp32_precision in ("ieee", False)  # restored when training ends
    loop.pretrain(load_recipe(None, tiny_overrides + ["train.steps=2", "train.tf32=false"]), tmp_path / "off")
    assert after in (["tf32", "tf32"], [True, True]) and seen[2:] in (["ieee", "ieee"], [False, False])


def test_convolutional_towers_go_channels_last_on_cuda_with_the_same_outputs():
    cnn, vit = (create_image_tower(name, in_channels=3, image_size=32) for name in ("cnn-small", "vit-tiny"))
    assert convolutional(cnn) and not convolutional(vit)  # a ViT's patch embedding is its only convolution
    images = torch.randn(4, 3, 32, 32)
    before = cnn.eval()(images)
    assert channels_last_towers([cnn, vit], torch.device("cpu")) == []
    assert channels_last_towers([cnn, vit], CUDA) == [cnn]  # the conversion itself runs on the CPU tensors
    kernels = [m.weight for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert kernels and all(w.is_contiguous(memory_format=torch.channels_last) for w in kernels)
    torch.testing.assert_close(cnn(images), before, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_runs_the_towers_and_float32_the_loss_and_temperature(tiny_overrides, tmp_path, monkeypatch):
    seen: dict[str, set] = {"towers": set(), "loss inputs": set(), "loss": set(), "scale": set(), "autocast": set()}
    real_encode, real_loss = DualEncoder.encode_image, objectives.ImageText.loss

    def encode_image(self, images, normalize=True):
        out = real_encode(self, images, normalize)
        seen["towers"].add(out.dtype)
        return out

    def loss(self, embeddings, batch, model, with_params):
        seen["loss inputs"].update(e.dtype for e in embeddings)
        seen["autocast"].add(torch.is_autocast_enabled("cpu"))
        out = real_loss(self, embeddings, batch, model, with_params)
        seen["loss"].add(out.dtype)
        seen["scale"].add(model.logit_scale.dtype)
        return out
    monkeypatch.setattr(DualEncoder, "encode_image", encode_image)
    monkeypatch.setattr(objectives.ImageText, "loss", loss)
    loop.pretrain(load_recipe(None, tiny_overrides + ["train.steps=2", "train.precision=bf16"]), tmp_path / "run")
    assert seen == {"towers": {torch.bfloat16}, "loss inputs": {torch.float32}, "loss": {torch.float32},
                    "scale": {torch.float32}, "autocast": {False}}
