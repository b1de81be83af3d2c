"""Weight-space adaptation: interpolate, add and merge the weights of models of one architecture.

Every function takes state dicts (``dict[str, torch.Tensor]``, as ``model.state_dict()`` or a checkpoint's
model.safetensors gives them) and returns a new one; the inputs are never changed and the output shares no
tensor with them. Floating tensors are combined in float64 and returned in their own dtype. Non-floating
tensors (integer buffers such as batch norm's ``num_batches_tracked``) have no meaningful average, so they
are copied from the fine-tuned model (the first one, when there are several).

Notation: θ_pre are the pretrained weights, θ_t (t = 1..T) the fine-tuned ones, τ_t = θ_t − θ_pre the task
vector of model t (`task_vector`).

- WiSE-FT, `interpolate` (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022):
  θ = (1 − α)·θ_pre + α·θ_ft with α ∈ [0, 1]; α = 0 is the pretrained model, α = 1 the fine-tuned one.
- Task arithmetic, `task_arithmetic` (Ilharco et al., "Editing models with task arithmetic", ICLR 2023):
  θ = θ_pre + λ·Σ_t τ_t.
- TIES merging, `ties_merge` (Yadav et al., "TIES-Merging: resolving interference when merging models",
  NeurIPS 2023):
    1. trim: keep the top-`density` fraction of each τ_t by magnitude and zero the rest, giving τ̂_t;
    2. elect a sign per entry p: γ_p = sgn(Σ_t τ̂_t,p);
    3. disjoint mean: τ_m,p = mean of {τ̂_t,p : sgn(τ̂_t,p) = γ_p}, and 0 where that set is empty (γ_p = 0);
    then θ = θ_pre + λ·τ_m.
  Trimming convention, as in the paper: the top-k is taken per task vector over the whole flattened model
  (all floating tensors together), not per tensor, with k = ⌈density·N⌉ (at least 1) of its N entries. The
  threshold is the k-th largest magnitude and every entry whose magnitude is at least the threshold is kept:
  entries tied at the threshold are all kept, so k is a lower bound and the result does not depend on the
  order of keys or entries. A zero entry has no sign and never counts in the disjoint mean.
- Uniform soup, `uniform_soup` (Wortsman et al., "Model soups: averaging weights of multiple fine-tuned
  models improves accuracy without increasing inference time", ICML 2022): θ = (1/T)·Σ_t θ_t.

`check_compatible` raises a UserError naming the first key that differs between two models. The merging
functions name their inputs by role ("the pretrained model", "fine-tuned model 2"); call
`check_compatible(load_states(paths))` first to have file names in that message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from transferlab.checkpoints import META_FILE, latest_checkpoint, read_checkpoint
from transferlab.errors import UserError

State = dict[str, torch.Tensor]


def check_compatible(states: Mapping[str, State]) -> None:
    """UserError unless every state dict has the keys, shapes and dtypes of the first one."""
    items = list(states.items())
    for name, state in items[1:]:
        difference = _first_difference(*items[0], name, state)
        if difference:
            raise UserError(f"Cannot merge {items[0][0]} and {name}: {difference}. Merging needs checkpoints of "
                            f"one architecture (trained with the same recipe `model:` section); pick models "
                            f"that share it.")


def _first_difference(name_a: str, a: State, name_b: str, b: State) -> str | None:
    for key in [*a, *(k for k in b if k not in a)]:
        if key not in b or key not in a:
            have, lack = (name_a, name_b) if key in a else (name_b, name_a)
            return f"key '{key}' is in {have} but missing from {lack}"
        if a[key].shape != b[key].shape:
            return f"key '{key}' has shape {tuple(a[key].shape)} in {name_a} but {tuple(b[key].shape)} in {name_b}"
        if a[key].dtype != b[key].dtype:
            return f"key '{key}' has dtype {a[key].dtype} in {name_a} but {b[key].dtype} in {name_b}"
    return None


def _check_inputs(pretrained: State | None, finetuned_list: Sequence[State]) -> None:
    if not finetuned_list:
        raise UserError("No fine-tuned model was given; merging needs at least one.")
    named = {"the pretrained model": pretrained} if pretrained is not None else {}
    if len(finetuned_list) == 1:
        named["the fine-tuned model"] = finetuned_list[0]
    else:
        named.update({f"fine-tuned model {i}": state for i, state in enumerate(finetuned_list, 1)})
    check_compatible(named)


def _combine(fn: Callable[..., torch.Tensor], states: Sequence[State], buffers_from: State) -> State:
    """fn(float64 tensors of one key from each state) for every floating key, in the key's dtype; every
    non-floating tensor copied from `buffers_from`."""
    out = {}
    for key, like in buffers_from.items():
        if like.is_floating_point():
            out[key] = fn(*(state[key].double() for state in states)).to(like.dtype)
        else:
            out[key] = like.clone()
    return out


def interpolate(pretrained: State, finetuned: State, alpha: float) -> State:
    """WiSE-FT: (1 − alpha)·pretrained + alpha·finetuned; integer buffers from `finetuned`."""
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha must be in [0, 1], got {alpha}: 0 keeps the pretrained weights, 1 the "
                        f"fine-tuned ones, 0.5 is halfway.")
    _check_inputs(pretrained, [finetuned])
    return _combine(lambda pre, ft: (1.0 - alpha) * pre + alpha * ft, [pretrained, finetuned], finetuned)


def task_vector(pretrained: State, finetuned: State) -> State:
    """τ = finetuned − pretrained for the floating tensors (integer buffers carry no task direction)."""
    _check_inputs(pretrained, [finetuned])
    return {key: (finetuned[key].double() - pre.double()).to(pre.dtype)
            for key, pre in pretrained.items() if pre.is_floating_point()}


def task_arithmetic(pretrained: State, finetuned_list: Sequence[State], scale: float) -> State:
    """pretrained + scale·Σ_t (finetuned_t − pretrained); integer buffers from the first fine-tuned model."""
    _check_scale(scale)
    _check_inputs(pretrained, finetuned_list)
    return _combine(lambda pre, *fts: pre + scale * sum(ft - pre for ft in fts),
                    [pretrained, *finetuned_list], finetuned_list[0])


def ties_merge(pretrained: State, finetuned_list: Sequence[State], density: float = 0.2,
               scale: float = 1.0) -> State:
    """TIES: trim each task vector to its top `density` entries (over the whole model), elect a sign per
    entry, average the agreeing entries, add scale times that to pretrained. See the module docstring."""
    if not 0.0 < density <= 1.0:
        raise UserError(f"density must be in (0, 1], got {density}: it is the fraction of each task vector's "
                        f"entries kept, by magnitude (the TIES paper uses 0.2).")
    _check_scale(scale)
    _check_inputs(pretrained, finetuned_list)
    thresholds = [_trim_threshold(pretrained, finetuned, density) for finetuned in finetuned_list]

    def merge(pre: torch.Tensor, *fts: torch.Tensor) -> torch.Tensor:
        trimmed = torch.stack([torch.where((ft - pre).abs() >= threshold, ft - pre, 0.0)
                               for ft, threshold in zip(fts, thresholds, strict=True)])
        elected = trimmed.sum(0).sign()
        agree = (trimmed.sign() == elected) & (elected != 0)
        mean = torch.where(agree, trimmed, 0.0).sum(0) / agree.sum(0).clamp(min=1)
        return pre + scale * mean

    return _combine(merge, [pretrained, *finetuned_list], finetuned_list[0])


def _trim_threshold(pretrained: State, finetuned: State, density: float) -> float:
    """The k-th largest |τ| over all floating entries of the model, k = ⌈density·N⌉ (at least 1)."""
    magnitudes = [(finetuned[key].double() - pre.double()).abs().flatten()
                  for key, pre in pretrained.items() if pre.is_floating_point()]
    flat = torch.cat(magnitudes) if magnitudes else torch.zeros(0, dtype=torch.float64)
    if flat.numel() == 0:
        return 0.0
    # round() first: density·N is computed in binary, and 0.7·10 must give 7, not 8
    k = min(flat.numel(), max(1, math.ceil(round(density * flat.numel(), 9))))
    return flat.kthvalue(flat.numel() - k + 1).values.item()


def uniform_soup(finetuned_list: Sequence[State]) -> State:
    """The elementwise mean of the models; integer buffers from the first one."""
    _check_inputs(None, finetuned_list)
    return _combine(lambda *fts: sum(fts) / len(fts), finetuned_list, finetuned_list[0])


def _check_scale(scale: float) -> None:
    if not math.isfinite(scale):
        raise UserError(f"scale (λ) must be a finite number, got {scale}.")


def load_states(paths: Iterable[str | Path]) -> dict[str, State]:
    """{str(path): model weights} for run directories (their `latest` checkpoint), checkpoint directories,
    and .safetensors files; checkpoint checksums are verified."""
    states: dict[str, State] = {}
    for path in map(Path, paths):
        if str(path) in states:
            raise UserError(f"{path} is given twice; list each model to merge once.")
        states[str(path)] = _load_state(path)
    return states


def _load_state(path: Path) -> State:
    if path.is_file() and path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as err:
            raise UserError(f"{path} cannot be read as safetensors ({err}); the file is damaged or not a "
                            f"safetensors file.") from None
    if (path / META_FILE).is_file():
        return read_checkpoint(path, with_train_state=False)[1]
    if (path / "checkpoints").is_dir():
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise UserError(f"{path / 'checkpoints'} has no complete checkpoint (`latest` is missing or names "
                            f"no step_<n> directory with a meta.json). Point at one of its step_<n> directories.")
        return read_checkpoint(checkpoint, with_train_state=False)[1]
    raise UserError(f"{path} {'is' if path.exists() else 'does not exist, so it is'} not a transferlab run "
                    f"directory, checkpoint directory (checkpoints/step_<n>) or .safetensors file.")
