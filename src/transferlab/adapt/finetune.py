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

import abc
import copy
import math
import warnings
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.adapt.epochs import ShuffledEpochs
from transferlab.errors import UserError
from transferlab.models.dual_encoder import DualEncoder
from transferlab.models.encoder import zeroshot_weights
from transferlab.optim import parameter_groups
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


@dataclass(frozen=True)
class TrainingSettings:
    """How the loop trains: AdamW (weight decay on matrices only), the learning rate warmed up linearly over
    the first `warmup_fraction` of the steps then cosine-decayed to 0, the gradient norm clipped at
    `grad_clip`; data order (and a random head) from `seed`."""

    lr: float
    epochs: int = 10
    batch_size: int = 32
    weight_decay: float = 0.1
    seed: int = 0
    warmup_fraction: float = WARMUP_FRACTION
    grad_clip: float = GRAD_CLIP


@dataclass(frozen=True)
class LoraSettings:
    """Low-rank adapters of rank `rank`, scaled by alpha / rank, on the modules `targets` (None: the tower's
    defaults, `default_lora_targets`)."""

    rank: int = 8
    alpha: float = 16
    targets: tuple[str, ...] | None = None
    dropout: float = 0.0

    def for_tower(self, tower: nn.Module) -> LoraSettings:
        """These settings with the targets named: the given ones or the tower's defaults."""
        targets = self.targets if self.targets is not None else default_lora_targets(tower)
        return replace(self, targets=tuple(targets))


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
    if getattr(model, f"{tower}_tower") is None or model.image_tower is None:
        raise UserError(f"Fine-tuning the {tower} tower on images needs a model with an image tower"
                        + (" and a text tower" if tower == "text" else "") + "; this model lacks one.")
    if tower == "text" and classnames is None:
        raise UserError("tower='text' makes the classifier from class-name prompts: pass classnames.")
    training = TrainingSettings(lr=DEFAULT_LR[method] if lr is None else lr, epochs=epochs, batch_size=batch_size,
                                weight_decay=weight_decay, seed=seed)
    lora = None if method == "full" else LoraSettings(lora_rank, lora_alpha,
                                                      None if lora_targets is None else tuple(lora_targets),
                                                      lora_dropout)

    work = copy.deepcopy(model)
    if device is not None:
        work = work.to(resolve_device(device))
    device_ = work.logit_scale.device
    cuda = [device_] if device_.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)  # LoRA's A initialisation and any dropout draw from the global RNG
        return _finetune(work, tower, images, labels, k, classnames, templates, training, lora, progress)


def _finetune(work: DualEncoder, tower: str, images: torch.Tensor, labels: torch.Tensor, k: int,
              classnames: list[str] | None, templates: list[str], training: TrainingSettings,
              lora: LoraSettings | None, progress: bool) -> FineTuned:
    device = work.logit_scale.device
    flags = {name: p.requires_grad for name, p in work.named_parameters()}
    scale = work.logit_scale.detach().exp().item()
    work.eval()
    zeroshot = classnames is not None and work.text_tower is not None
    with torch.no_grad():
        if zeroshot:
            weight = zeroshot_weights(work.encode_text, list(classnames), templates)
        else:
            weight = F.normalize(torch.randn(k, work.spec.embed_dim,
                                             generator=derived_generator(training.seed, "head", 0)), dim=-1)
    head = ClassificationHead(weight, scale).to(device)
    side = _ImageSide(work, images) if tower == "image" else _TextSide(work, images, classnames, templates, scale)

    work.requires_grad_(False)
    if lora is not None:
        lora = lora.for_tower(side.tower)
    adapter = _make_trainable(work, side, lora)
    head.requires_grad_(side.trains_head)
    trainable = nn.ModuleDict({"model": work, "head": head})
    parameters = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(trainable, training.weight_decay), lr=training.lr)

    method = "full" if lora is None else "lora"
    loop = ShuffledEpochs(len(images), training.batch_size, training.epochs, training.seed, "finetune")
    warmup = math.ceil(training.warmup_fraction * loop.total)
    losses = []
    for _, batches in loop.run(optimizer, training.lr, warmup, desc=f"finetune {method} {side.name}",
                               progress=progress, dynamic_ncols=True):
        for batch in batches:
            loss = F.cross_entropy(side.logits(head, batch), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, training.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            loop.show(loss=f"{losses[-1]:.3f}")

    if adapter is not None:
        adapter.merge_and_unload()
    work.eval()
    side.finish(head)
    _restore(work, side.name, flags)
    head.requires_grad_(False)
    config = {"method": method, "tower": side.name, "epochs": training.epochs, "lr": training.lr,
              "batch_size": training.batch_size, "weight_decay": training.weight_decay, "seed": training.seed,
              "steps": loop.step, "num_classes": k, "classnames": None if classnames is None else list(classnames),
              "templates": templates, "head_init": "zeroshot" if zeroshot else "random", "logit_scale": scale,
              "trainable_parameters": sum(p.numel() for p in parameters), "train_samples": len(images),
              "final_loss": losses[-1] if losses else None}
    if lora is not None:
        config.update(lora_rank=lora.rank, lora_alpha=lora.alpha, lora_targets=list(lora.targets),
                      lora_dropout=lora.dropout)
    return FineTuned(work, head, config, losses)


class _Side(abc.ABC):
    """What tuning one tower means, chosen once per fit: `tower` is what trains (all of it, or its adapters),
    `logits` the classifier's output for a batch of row indices, `finish` what the returned head holds."""

    name: str          # "image" or "text": the DualEncoder's `<name>_tower` and `<name>_proj`
    trains_head: bool  # whether the head's W is a trained parameter
    tower: nn.Module

    @abc.abstractmethod
    def logits(self, head: ClassificationHead, batch: torch.Tensor) -> torch.Tensor:
        """The classifier's logits for the images of rows `batch`."""

    @abc.abstractmethod
    def finish(self, head: ClassificationHead) -> None:
        """Set what the returned head holds; called after training, the model in eval mode."""


class _ImageSide(_Side):
    """Tuning the image tower: each step embeds its images through the tuned tower, and the head's W trains
    with it; the returned head holds the trained W."""

    name, trains_head = "image", True

    def __init__(self, work: DualEncoder, images: torch.Tensor) -> None:
        self.work, self.images = work, images
        self.tower = work.image_tower

    def logits(self, head: ClassificationHead, batch: torch.Tensor) -> torch.Tensor:
        device = self.work.logit_scale.device
        return head(self.work.encode_image(self.work.preprocess(self.images[batch].to(device))))

    def finish(self, head: ClassificationHead) -> None:
        """The head already holds the trained W."""


class _TextSide(_Side):
    """Tuning the text tower: the frozen image tower embeds the images once; each step the class weights are
    the prompts' zero-shot weights through the tuned text tower (the head's W does not train), and the
    returned head holds the final prompt weights."""

    name, trains_head = "text", False

    def __init__(self, work: DualEncoder, images: torch.Tensor, classnames: list[str], templates: list[str],
                 scale: float) -> None:
        self.work, self.scale, self.k = work, scale, len(classnames)
        self.tower = work.text_tower
        device = work.logit_scale.device
        with torch.no_grad():
            self.embeddings = torch.cat([work.encode_image(work.preprocess(images[i:i + EMBED_BATCH].to(device)))
                                         for i in range(0, len(images), EMBED_BATCH)])
        self.texts = [template.format(name) for name in classnames for template in templates]

    def logits(self, head: ClassificationHead, batch: torch.Tensor) -> torch.Tensor:
        device = self.work.logit_scale.device
        return self.scale * self.embeddings[batch.to(device)] @ _prompt_weights(self.work, self.texts, self.k).T

    def finish(self, head: ClassificationHead) -> None:
        with torch.no_grad():
            head.weight.copy_(_prompt_weights(self.work, self.texts, self.k))


def _make_trainable(work: DualEncoder, side: _Side, lora: LoraSettings | None):
    """Unfreeze what the method trains in the tuned tower (full: the tower and its projection; LoRA: new
    adapters, returned as peft's LoraModel to merge after training) and put the tower in train mode."""
    if lora is None:
        side.tower.requires_grad_(True)
        getattr(work, f"{side.name}_proj").requires_grad_(True)
        side.tower.train()
        return None
    adapter = _inject_lora(side.tower, lora.rank, lora.alpha, list(lora.targets), lora.dropout)
    # Train mode, not eval: in eval, torch's fused TransformerEncoderLayer path reads the base weights
    # directly and would skip the adapters. Batch norm stays in eval: its statistics are frozen weights too.
    side.tower.train()
    for module in side.tower.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return adapter


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
