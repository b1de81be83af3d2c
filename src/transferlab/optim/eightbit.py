"""AdamW and Lion with 8-bit states: `AdamW8bit` and `Lion8bit` (Dettmers et al. 2022).

The maths is that of `torch.optim.AdamW` and `transferlab.optim.Lion`, computed in float32. Between steps
each moment of a tensor with at least `min_8bit_size` elements is stored block-wise quantised (uint8 codes
plus one float32 absmax per 256 values, see `quantize.py`): about 1 byte per moment per parameter instead
of 4. Smaller tensors (biases, norms, the temperature) keep float32 moments, as in bitsandbytes: they cost
little and are the most sensitive to rounding. Each step dequantises, updates in float32 and re-quantises.

On the CPU, a float32 parameter with 8-bit moments takes that step in one C pass per block of 256 values
(optim/_native.c, built at install when a compiler is at hand), a large tensor's chunks shared among torch's
threads: no temporary tensors, one read and write of each array. Elsewhere (CUDA, bf16 parameters, no
compiler, TRANSFERLAB_PURE_PYTHON=1) the same step runs as torch operations. Both draw the rounding noise
from the same generators and agree to float rounding (tests/optim/test_eightbit_native.py); on a 22M-parameter
ViT-S it is faster than bitsandbytes' CPU AdamW8bit (BENCHMARKS.md, "8-bit AdamW step against bitsandbytes").

Two choices differ from bitsandbytes, both measured on a small MLP regression (tests/optim/test_eightbit.py):

* Re-quantisation rounds stochastically (unless `stochastic_rounding=False`). A moment with β = 0.99 or
  0.999 changes by 1% or 0.1% a step, less than the code's spacing (about 1.4% of the block's absmax near
  the top), so round-to-nearest snaps most coordinates back every step and the stored EMA drifts from the
  true one (Lion's momentum was 45% off after 175 steps). Unbiased rounding keeps it on course: over 200
  steps of an MLP regression (3 seeds, ReLU and tanh) the largest loss gap to the 32-bit optimizer fell
  from 1.6-14% to under 0.7% for Lion and from 1-1.7% to under 0.4% for AdamW. The noise comes from a
  generator seeded with (step, parameter index, moment), so runs are reproducible and a resumed run
  continues bit-identically.
* Adam's second moment is stored as its square root √v, with the unsigned code. √v spans half as many
  decades as v, so a coordinate whose gradient is 10⁻⁴ of its block's largest keeps a non-zero
  denominator; quantising v itself rounds it to 0 and turns m / (√v + ε) into a huge step (the
  "zero-point problem" of Li et al. 2023, "Memory Efficient Optimizers with 4-bit States").

Per-parameter state entries, all tensors so that checkpoints stay safetensors:
  step                                       float32 scalar
  8-bit:  exp_avg_codes, exp_avg_absmax      uint8 [numel], float32 [ceil(numel / 256)]
          grad_rms_codes, grad_rms_absmax    the same for √v (AdamW8bit only)
  32-bit: exp_avg [, exp_avg_sq]             float32, shaped like the parameter
`torch.optim.Optimizer.load_state_dict` casts every state tensor of a floating-point parameter but `step`
to the parameter's dtype, which would turn codes into floats and round absmax for bf16 parameters;
`load_state_dict` here restores each state tensor with its saved dtype instead.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain

import torch
from torch.optim import Optimizer

from transferlab.optim.quantize import (
    BLOCK,
    cached_code,
    dequantize_blockwise,
    kernel_codebook,
    quantize_blockwise,
    rounding_noise,
)

_native = None  # the fused CPU step (optim/_native.c), unless not built or TRANSFERLAB_PURE_PYTHON=1
if os.environ.get("TRANSFERLAB_PURE_PYTHON") != "1":
    try:
        from transferlab.optim import _native
    except ImportError:  # no C compiler at install: the torch twin runs, with the same updates
        _native = None
CHUNK_BLOCKS = 256  # blocks of 256 values a thread takes at a time: chunks many enough that a thread the machine
                   # delays leaves its share to the others, large enough (~0.5 ms) that handing them out is cheap


class _EightBit(Optimizer):
    """Moments kept as 8-bit codes or float32 tensors, and a dtype-preserving `load_state_dict`."""

    def __init__(self, params: Iterable, defaults: dict) -> None:
        lr, betas, weight_decay = defaults["lr"], defaults["betas"], defaults["weight_decay"]
        eps = defaults.get("eps", 0.0)  # Lion has none
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid {type(self).__name__} settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        super().__init__(params, defaults)

    def _parameters(self) -> Iterable[tuple[dict, int, torch.Tensor, dict, float]]:
        """(group, index, parameter, state, step) for each parameter with a gradient, its step counted."""
        index = -1
        for group in self.param_groups:
            for param in group["params"]:
                index += 1
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    quantised = param.numel() >= group["min_8bit_size"]
                    for name, signed in self._moments(quantised).items():
                        zeros = torch.zeros(param.shape, dtype=torch.float32, device=param.device)
                        if quantised:
                            self._store(state, name, zeros, signed, None)
                        else:
                            state[name] = zeros
                state["step"] += 1
                yield group, index, param, state, state["step"].item()

    @staticmethod
    def _moments(quantised: bool) -> dict[str, bool]:
        """{state name: signed code} of the moments."""
        raise NotImplementedError

    @staticmethod
    def _load(state: dict, name: str, shape: torch.Size, signed: bool) -> torch.Tensor:
        """The moment in float32: the state tensor itself (32-bit) or a dequantised copy (8-bit)."""
        if name in state:
            return state[name]
        codes = state[f"{name}_codes"]
        return dequantize_blockwise(codes, state[f"{name}_absmax"], cached_code(signed, codes.device), shape)

    @staticmethod
    def _store(state: dict, name: str, value: torch.Tensor, signed: bool, generator: torch.Generator | None) -> None:
        """Re-quantise an 8-bit moment; a 32-bit one was updated in place by the step."""
        if name not in state:
            code = cached_code(signed, value.device)
            state[f"{name}_codes"], state[f"{name}_absmax"] = quantize_blockwise(value, code, generator)

    @staticmethod
    def _generator(group: dict, step: float, index: int, moment: int, device: torch.device) -> torch.Generator | None:
        if not group["stochastic_rounding"]:
            return None
        return torch.Generator(device=device).manual_seed((int(step) * 1_000_003 + index) * 4 + moment)

    def _fused(self, param: torch.Tensor, state: dict) -> list[tuple] | None:
        """When this step can run as one C pass (float32 CPU tensors with 8-bit moments; optim/_native.c), the
        per-moment arguments it needs, else None. The caller holds them (they keep the noise alive)."""
        if (_native is None or "exp_avg_codes" not in state or param.device.type != "cpu"
                or param.dtype != torch.float32 or param.grad.dtype != torch.float32 or not param.is_contiguous()
                or not param.grad.is_contiguous()):
            return None
        books = [(name, kernel_codebook(signed)) for name, signed in self._moments(True).items()]
        return None if any(book is None for _, book in books) else books

    def _start_fused(self, kernel: Callable, group: dict, index: int, param: torch.Tensor, state: dict, t: float,
                     moments: list[tuple], *settings: float) -> tuple[list[Future], list]:
        """`kernel` over the parameter's blocks, handed to torch's threads in chunks (the C code releases the GIL;
        with one thread it runs here); the futures, and the noise they read, which must live until they are done.
        The noise bytes come from the twin's generators, so both paths round alike."""
        n = param.numel()
        noises, args = [], []
        for moment, (name, book) in enumerate(moments):  # numbered as the twin numbers them
            generator = self._generator(group, t, index, moment, param.device)
            noise = None if generator is None else rounding_noise(generator, -(-n // BLOCK) * BLOCK, param.device)
            noises.append(noise)
            args.append((state[f"{name}_codes"].data_ptr(), state[f"{name}_absmax"].data_ptr(),
                         0 if noise is None else noise.data_ptr(), book))
        blocks = -(-n // BLOCK)
        calls = [(param.data_ptr(), param.grad.data_ptr(), *args, n, first, min(first + CHUNK_BLOCKS, blocks),
                  *settings) for first in range(0, blocks, CHUNK_BLOCKS)]
        threads = torch.get_num_threads()
        if threads == 1:
            for call in calls:
                kernel(*call)
            return [], noises
        return [_threads(threads).submit(kernel, *call) for call in calls], noises

    @staticmethod
    def _write(param: torch.Tensor, value: torch.Tensor) -> None:
        if value is not param:
            param.copy_(value)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "state": {}})
        saved_ids = chain.from_iterable(group["params"] for group in state_dict["param_groups"])
        params = chain.from_iterable(group["params"] for group in self.param_groups)
        for index, param in zip(saved_ids, params, strict=True):
            if index in state_dict["state"]:  # `step` stays on the CPU: reading it must not wait for a GPU
                self.state[param] = {name: value.to(device="cpu" if name == "step" else param.device, copy=True)
                                     for name, value in state_dict["state"][index].items()}


def _closure_loss(closure: Callable[[], float] | None) -> float | None:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class AdamW8bit(_EightBit):
    """AdamW (Loshchilov & Hutter 2019) with 8-bit moments:

        m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
        θ ← θ·(1 − η·λ) − η · m / (1 − β1ᵗ) / (√v / √(1 − β2ᵗ) + ε)
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, min_8bit_size: int = 4096,
                 stochastic_rounding: bool = True) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "min_8bit_size": min_8bit_size, "stochastic_rounding": stochastic_rounding})

    @staticmethod
    def _moments(quantised: bool) -> dict[str, bool]:
        return {"exp_avg": True, "grad_rms" if quantised else "exp_avg_sq": False}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _closure_loss(closure)
        running = _Running()
        for group, index, param, state, t in self._parameters():
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            fused = self._fused(param, state)
            if fused is not None:
                running.add(*self._start_fused(_native.adamw, group, index, param, state, t, fused, lr, beta1, beta2,
                                               eps, weight_decay, t))
                continue
            grad = param.grad.float()
            exp_avg = self._load(state, "exp_avg", param.shape, signed=True).lerp_(grad, 1 - beta1)
            if "exp_avg_sq" in state:
                grad_rms = state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2).sqrt()
            else:
                exp_avg_sq = self._load(state, "grad_rms", param.shape, signed=False).square_()
                grad_rms = exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2).sqrt_()
                self._store(state, "grad_rms", grad_rms, False, self._generator(group, t, index, 1, param.device))
            self._store(state, "exp_avg", exp_avg, True, self._generator(group, t, index, 0, param.device))
            value = param if param.dtype == torch.float32 else param.float()
            value.mul_(1 - lr * weight_decay)
            denom = grad_rms.div_(math.sqrt(1 - beta2 ** t)).add_(eps)
            value.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** t))
            self._write(param, value)
        running.finish()
        return loss


class Lion8bit(_EightBit):
    """Lion (Chen et al. 2023) with an 8-bit momentum:

        c ← β1·m + (1 − β1)·g,   θ ← θ − η·(sign(c) + λ·θ),   m ← β2·m + (1 − β2)·g
    """

    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, min_8bit_size: int = 4096, stochastic_rounding: bool = True) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay,
                                  "min_8bit_size": min_8bit_size, "stochastic_rounding": stochastic_rounding})

    @staticmethod
    def _moments(quantised: bool) -> dict[str, bool]:
        return {"exp_avg": True}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = _closure_loss(closure)
        running = _Running()
        for group, index, param, state, t in self._parameters():
            lr, weight_decay = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            fused = self._fused(param, state)
            if fused is not None:
                running.add(*self._start_fused(_native.lion, group, index, param, state, t, fused, lr, beta1, beta2,
                                               weight_decay))
                continue
            grad = param.grad.float()
            exp_avg = self._load(state, "exp_avg", param.shape, signed=True)
            update = torch.lerp(grad, exp_avg, beta1).sign_()
            exp_avg.lerp_(grad, 1 - beta2)
            self._store(state, "exp_avg", exp_avg, True, self._generator(group, t, index, 0, param.device))
            value = param if param.dtype == torch.float32 else param.float()
            value.mul_(1 - lr * weight_decay).add_(update, alpha=-lr)
            self._write(param, value)
        running.finish()
        return loss


class _Running:
    """Fused steps handed to the threads, at most two tensors' at a time: while the threads work through them, this
    thread draws the next tensor's noise and takes the small tensors' steps; each tensor's noise lives until its
    chunks are done."""

    def __init__(self) -> None:
        self._tensors: deque[tuple[list[Future], list]] = deque()

    def add(self, futures: list[Future], noises: list) -> None:
        self._tensors.append((futures, noises))
        if len(self._tensors) > 2:
            self._wait_oldest()

    def finish(self) -> None:
        while self._tensors:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        futures, _ = self._tensors.popleft()
        for future in futures:
            future.result()  # raises what a chunk raised


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _threads(count: int) -> ThreadPoolExecutor:
    """A pool of `count` threads, made once."""
    if count not in _POOLS:
        _POOLS[count] = ThreadPoolExecutor(count, thread_name_prefix="eightbit")
    return _POOLS[count]
