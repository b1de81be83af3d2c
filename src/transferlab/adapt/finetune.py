"""Fine-tuning a DualEncoder on labelled images: full, or low-rank (LoRA) through `peft`.

The classifier is a cosine head on the model's embedding, as in WiSE-FT (Wortsman et al., CVPR 2022,
"Robust fine-tuning of zero-shot models") and FLYP (Goyal et al., CVPR 2023, "Finetune like you pretrain"):

    logits = s · normalise(e(x)) · Wᵀ,   s = exp(logit_scale) (frozen),   W ∈ R^{K×D}

W starts as the zero-shot class weights, w_c = normalise(mean_t normalise(text(template_t(c)))), when the
model has a text tower and class names are given, so before any step the fine-tuned classifier *is* the
zero-shot classifier and training starts from its accuracy; otherwise W starts as random unit rows. The
loss is cross-entropy on the labels.

- `tower="image"` (default): the image tower is tuned and W trains with it. `method="full"` trains the
  tower, its projection and W; `method="lora"` trains only low-rank adapters and W.
- `tower="text"`: the image tower stays frozen (its embeddings are computed once) and W is recomputed every
  step from the prompts through the tuned text tower (full: tower + projection; LoRA: the adapters): the
  classifier is the text side, as in FLYP, but only the text tower learns. The returned head holds the
  final prompt weights.

LoRA (Hu et al., ICLR 2022, "LoRA: Low-Rank Adaptation of Large Language Models") adds ΔW = (α/r)·B·A to a
frozen weight W₀ (A ∈ R^{r×in} Kaiming-initialised, B ∈ R^{out×r} zero, so training starts at the pretrained
function); a k×k convolution gets A as an r-channel k×k convolution and B as a 1×1 one. A layer of in → out
features adds r·(in + out) trainable parameters (an attention block's packed q/k/v in-projection of width d
adds r·(d + 3d), its out-projection r·2d). Training runs the tuned tower in train mode (batch norm
excepted), because in eval mode torch's fused TransformerEncoderLayer reads the base weights directly and
would skip unmerged adapters. After training the adapters are merged into the base
weights (peft's `merge_and_unload`), so the result is a plain DualEncoder with exactly the pretrained
keys and shapes: WiSE-FT interpolation and task-vector merging with the pretrained model work key-for-key.
Default targets (`lora_targets=None`), per tower:

- `cnn-*`: every Conv2d (the tower has no Linear layer; all five convs are the whole feature extractor);
- `vit-*`, `text-transformer-*`: `self_attn` (the q/k/v in-projection and out-projection of each block,
  through peft's MultiheadAttention support; torch reads those weights directly, never through an
  nn.Linear) and the MLP's `linear1`, `linear2`: every matrix of every block, since these towers are
  small and trained from scratch, and LoRA on all layers is what comes close to full fine-tuning
  (Dettmers et al., NeurIPS 2023, "QLoRA");
- `minilm-l6`: `query` and `value` of each BERT layer, the original paper's choice for a large pretrained
  transformer.

Other defaults: AdamW with weight decay 0.1 on matrices only (the WiSE-FT setting; `parameter_groups`),
a linear warmup over the first 10% of steps then cosine decay to 0, gradient-norm clipping at 1, batch 32,
10 epochs; lr 3e-4 (full) or 3e-3 (LoRA, whose zero-initialised B needs larger steps). On digits with the
default model (cnn-small + MiniLM, zero-shot 0.83), one draw of 4 / 16 shots and the whole train split
(1,079 images) reached 0.93 / 0.97 / 1.00 test accuracy with full fine-tuning (lr 1e-4: 0.92 / 0.97 /
0.99; 3e-5: 0.88 / 0.93 / 0.98) and 0.93 / 0.97 / 0.99 with LoRA r = 8 (lr 1e-3: 0.91 / 0.96 / 0.98;
3e-4: 0.90 / 0.94 / 0.97). Data order, the random head and LoRA's initialisation come from `seed` alone
(the global RNG is left as it was), so a CPU fit is reproducible. The input model is not modified:
fine-tuning works on a copy.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from transferlab.errors import UserError
from transferlab.models.dual_encoder import DualEncoder
from transferlab.models.encoder import zeroshot_weights
from transferlab.optim import lr_at, parameter_groups
from transferlab.runtime import derived_generator, resolve_device

DEFAULT_LR = {"full": 3e-4, "lora": 3e-3}
WARMUP_FRACTION = 0.1
GRAD_CLIP = 1.0
EMBED_BATCH = 256


class ClassificationHead(nn.Module):
    """logits = scale · normalise(embedding) · Wᵀ for W [K, D]; `scale` is a fixed buffer."""

    def __init__(self, weight: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(embeddings, dim=-1) @ self.weight.T


@dataclass
class FineTuned:
    model: DualEncoder       # the fine-tuned copy, LoRA merged, in eval mode
    head: ClassificationHead
    config: dict             # method, parameters, seed: what adapt.json records
    losses: list[float] = field(default_factory=list)  # training loss per step


def finetune(model: DualEncoder, images: torch.Tensor, labels: torch.Tensor, classnames: list[str] | None = None,
             templates: list[str] | None = None, num_classes: int | None = None, method: str = "full",
             tower: str = "image", epochs: int = 10, lr: float | None = None, batch_size: int = 32,
             weight_decay: float = 0.1, seed: int = 0, lora_rank: int = 8, lora_alpha: float = 16,
             lora_targets: list[str] | None = None, lora_dropout: float = 0.0, device: str | None = None,
             progress: bool = True) -> FineTuned:
    """Fine-tune a copy of `model` on uint8 `images` [N, C, H, W] with `labels` [N] (indices of classnames).

    `templates` (default ["a photo of a {}."]) turn class names into prompts for the zero-shot head;
    `num_classes` is needed only without class names. `device` None keeps the model's device, else
    "auto" / "cpu" / "cuda" / ... as `--device`.
    """
    if not isinstance(model, DualEncoder):
        raise UserError(f"finetune changes a model's weights and needs a transferlab DualEncoder (a run or checkpoint "
                        f"loaded with load_model(...).encoder.module), not a {type(model).__name__}. Feature-level "
                        f"methods (linear probe, GDA, Tip-Adapter) work with any model.")
    if method not in DEFAULT_LR:
        raise UserError(f"Fine-tuning method '{method}' is not known; use 'full' or 'lora'.")
    if tower not in ("image", "text"):
        raise UserError(f"tower must be 'image' or 'text', got '{tower}'.")
    templates = list(templates or ["a photo of a {}."])
    k = len(classnames) if classnames is not None else num_classes
    if k is None:
        raise UserError("finetune needs classnames (for a zero-shot head) or num_classes (for a random head).")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"images must be uint8 [N, C, H, W] with one label each; got {images.dtype} "
                         f"{tuple(images.shape)} and {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}), got [{labels.min()}, {labels.max()}]")
    target = getattr(model, f"{tower}_tower")
    if target is None or model.image_tower is None:
        raise UserError(f"Fine-tuning the {tower} tower on images needs a model with an image tower"
                        + (" and a text tower" if tower == "text" else "") + "; this model lacks one.")
    if tower == "text" and classnames is None:
        raise UserError("tower='text' makes the classifier from class-name prompts: pass classnames.")
    lr = DEFAULT_LR[method] if lr is None else lr

    work = copy.deepcopy(model)
    if device is not None:
        work = work.to(resolve_device(device))
    device_ = work.logit_scale.device
    cuda = [device_] if device_.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)  # LoRA's A initialisation and any dropout draw from the global RNG
        return _finetune(work, target_name=tower, images=images, labels=labels, k=k, classnames=classnames,
                         templates=templates, method=method, epochs=epochs, lr=lr, batch_size=batch_size,
                         weight_decay=weight_decay, seed=seed, lora=(lora_rank, lora_alpha, lora_targets, lora_dropout),
                         progress=progress)


def _finetune(work: DualEncoder, target_name: str, images, labels, k, classnames, templates, method, epochs, lr,
              batch_size, weight_decay, seed, lora, progress) -> FineTuned:
    device = work.logit_scale.device
    target = getattr(work, f"{target_name}_tower")
    flags = {name: p.requires_grad for name, p in work.named_parameters()}
    scale = work.logit_scale.detach().exp().item()
    work.eval()
    zeroshot = classnames is not None and work.text_tower is not None
    with torch.no_grad():
        if zeroshot:
            weight = zeroshot_weights(work.encode_text, list(classnames), templates)
        else:
            weight = F.normalize(torch.randn(k, work.spec.embed_dim, generator=derived_generator(seed, "head", 0)),
                                 dim=-1)
    head = ClassificationHead(weight, scale).to(device)

    work.requires_grad_(False)
    adapter, targets = None, None
    if method == "lora":
        rank, alpha, targets, dropout = lora
        targets = list(targets) if targets is not None else default_lora_targets(target)
        adapter = _inject_lora(target, rank, alpha, targets, dropout)
        # Train mode, not eval: in eval, torch's fused TransformerEncoderLayer path reads the base weights
        # directly and would skip the adapters. Batch norm stays in eval: its statistics are frozen weights too.
        target.train()
        for module in target.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    else:
        target.requires_grad_(True)
        getattr(work, f"{target_name}_proj").requires_grad_(True)
        target.train()
    head.requires_grad_(target_name == "image")
    trainable = nn.ModuleDict({"model": work, "head": head})
    parameters = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(trainable, weight_decay), lr=lr)

    if target_name == "text":  # the frozen image tower's embeddings, once
        with torch.no_grad():
            embeddings = torch.cat([work.encode_image(work.preprocess(images[i:i + EMBED_BATCH].to(device)))
                                    for i in range(0, len(images), EMBED_BATCH)])
        texts = [template.format(name) for name in classnames for template in templates]

    per_epoch = math.ceil(len(images) / batch_size)
    total = epochs * per_epoch
    warmup = math.ceil(WARMUP_FRACTION * total)
    losses, step = [], 0
    with tqdm(total=total, desc=f"finetune {method} {target_name}", unit="step", dynamic_ncols=True,
              disable=not progress or total == 0) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=derived_generator(seed, "finetune", epoch))
            for batch in order.split(batch_size):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, lr, total, warmup, "cosine")
                y = labels[batch].to(device)
                if target_name == "image":
                    logits = head(work.encode_image(work.preprocess(images[batch].to(device))))
                else:
                    logits = scale * embeddings[batch.to(device)] @ _prompt_weights(work, texts, k).T
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, GRAD_CLIP)
                optimizer.step()
                losses.append(loss.item())
                step += 1
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")

    if adapter is not None:
        adapter.merge_and_unload()
        del adapter
    work.eval()
    if target_name == "text":
        with torch.no_grad():
            head.weight.copy_(_prompt_weights(work, texts, k))
    _restore(work, target_name, flags)
    head.requires_grad_(False)
    rank, alpha, _, dropout = lora
    config = {"method": method, "tower": target_name, "epochs": epochs, "lr": lr, "batch_size": batch_size,
              "weight_decay": weight_decay, "seed": seed, "steps": step, "num_classes": k,
              "classnames": None if classnames is None else list(classnames), "templates": templates,
              "head_init": "zeroshot" if zeroshot else "random", "logit_scale": scale,
              "trainable_parameters": sum(p.numel() for p in parameters), "train_samples": len(images),
              "final_loss": losses[-1] if losses else None}
    if method == "lora":
        config.update(lora_rank=rank, lora_alpha=alpha, lora_targets=targets, lora_dropout=dropout)
    return FineTuned(work, head, config, losses)


def _prompt_weights(model: DualEncoder, texts: list[str], k: int) -> torch.Tensor:
    """Zero-shot class weights through the (trainable) text tower: normalise(mean_t normalise(text))."""
    embeddings = model.encode_text(texts)
    return F.normalize(embeddings.view(k, -1, embeddings.shape[-1]).mean(dim=1), dim=-1)


def default_lora_targets(tower: nn.Module) -> list[str]:
    """The module names LoRA adapts by default in a transferlab tower (see the module docstring)."""
    from transferlab.models.cnn import SmallCNN
    from transferlab.models.minilm import SentenceTransformerTower
    from transferlab.models.text_transformer import TextTransformer
    from transferlab.models.vit import ViT

    if isinstance(tower, SmallCNN):
        return [name for name, module in tower.named_modules() if isinstance(module, nn.Conv2d)]
    if isinstance(tower, (ViT, TextTransformer)):
        return ["self_attn", "linear1", "linear2"]
    if isinstance(tower, SentenceTransformerTower):
        return ["query", "value"]
    raise UserError(f"No default LoRA targets for a {type(tower).__name__} tower. Pass lora_targets: names of "
                    f"its Linear/Conv2d modules ({', '.join(_adaptable(tower)[:8])}, ...).")


def _adaptable(tower: nn.Module) -> list[str]:
    return [name for name, module in tower.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.MultiheadAttention))]


def _inject_lora(tower: nn.Module, rank: int, alpha: float, targets: list[str], dropout: float):
    import peft

    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, bias="none")
    try:
        with warnings.catch_warnings():
            # peft flags its MultiheadAttention support as experimental; merging it is what we rely on, and tested
            warnings.filterwarnings("ignore", module="peft")
            return peft.LoraModel(tower, config, "default")
    except ValueError as err:
        raise UserError(f"LoRA cannot adapt {targets} in this tower ({err}). Its adaptable modules are: "
                        f"{', '.join(_adaptable(tower))}.") from None


def _restore(model: DualEncoder, target_name: str, flags: dict[str, bool]) -> None:
    """Put back each parameter's requires_grad; a tuned tower that was locked is recorded as unlocked, so the
    model is what `DualEncoder(model.spec)` with its saved weights builds (and saving keeps the tuned tower)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(flags[name])
    spec = getattr(model.spec, target_name)
    if spec.locked:
        model.spec = model.spec.model_copy(update={target_name: spec.model_copy(update={"locked": False,
                                                                                        "unlocked_blocks": 0})})
        getattr(model, f"{target_name}_tower").requires_grad_(True)
