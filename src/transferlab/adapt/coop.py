"""CoOp: context optimisation, prompt learning for a frozen image-text model (Zhou, Yang, Loy and Liu,
IJCV 2022, "Learning to Prompt for Vision-Language Models").

Zero-shot classification hand-writes a prompt ("a photo of a {}."). CoOp learns it instead: the prompt of
class c is M learned vectors followed by the embeddings of the class name's tokens,

    t_c = [START, v_1, ..., v_M, tokens(" <classname>."), END]      (v_m ∈ R^width, token embeddings)
    w_c = normalise(text_proj(text_tower(t_c)))
    p(y = c | x) = softmax_c(s · x·w_c),   s = exp(logit_scale)

where x is an image's L2-normalised embedding. Only the context vectors train, by cross-entropy on the
labelled (few-shot) images; the towers, the projections and the temperature stay frozen, so image
embeddings can be cached and a training step costs one pass of the text tower over the K class prompts.
The context is shared by all classes (unified) or, with `class_specific=True`, one per class (CSC: M·K
vectors; the paper finds it helps on some fine-grained datasets with more shots and hurts with few).

The prompt runs through the text tower from token embeddings (the tower's `embed_tokens` /
`forward_embeddings` hooks): for the byte-level `text-transformer-*` tower the context takes byte
positions after BOS; for `minilm-l6` (BERT) it takes word-piece positions after [CLS], the transformer adds
its position embeddings, the attention mask covers context and class tokens, and sentence-transformers
mean-pools and normalises as for any text. A model without such a tower (open_clip, hf:, image-only) gets
a `UserError` that names the alternatives.

Defaults, chosen for the scale here (tens of classes, 1-16 shots, cached features, CPU) and why:

- `ctx_init="a photo of a"`: the context starts as that phrase's token embeddings, so the untrained CoOp is
  exactly zero-shot with the prompt "a photo of a {}." (the paper's initialised variant; it finds the
  trained result about as good as with random initialisation, and a known starting point is easier to
  check). `n_ctx=None` takes the phrase's length in the tower's tokens: 4 word pieces on MiniLM (the
  paper's M = 4 with this init), 12 bytes on the byte-level tower. A different explicit `n_ctx` needs
  `ctx_init=None`: random N(0, 0.02²) vectors as in the paper (whose random-init default is M = 16, the
  default here too when `ctx_init=None` and `n_ctx=None`).
- AdamW, lr 5e-3, no weight decay, cosine decay to 0 over `epochs` × ceil(n / batch_size) steps after a
  one-epoch linear warmup. The paper's SGD (lr 2e-3, momentum 0.9) is `optimizer="sgd"`; it is tuned to
  CLIP's token-embedding scale and moved the context too little here in 50 epochs (digits, one draw, 1 / 4 /
  16 shots: 0.83 / 0.82 / 0.91 test accuracy, against 0.88 / 0.92 / 0.96 with AdamW at the same lr), while
  Adam's step does not depend on the scale of the tower's embeddings.
- `epochs=50`, `batch_size=32` (the paper's batch size): 50-250 steps for 1-16 shots of 10 classes. On
  digits with the default model (cnn-small + MiniLM, zero-shot 0.81), mean test accuracy over two draws at
  1 / 4 / 16 shots was 0.92 / 0.94 / 0.97 with these defaults; lr 2e-3 gave 0.90 / 0.93 / 0.96 and 25
  epochs 0.91 / 0.92 / 0.96.

Usage, on cached image embeddings (the estimator API of `transferlab.evaluate`, so it plugs into
`fewshot_curve`):

    coop = CoOp(model, classnames).fit(train_embeddings, train_labels)
    coop.score(test_embeddings, test_labels); coop.save("adapted/coop")
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from transferlab.adapt.epochs import ShuffledEpochs
from transferlab.errors import UserError
from transferlab.fileio import atomic_write, commit, temp_path
from transferlab.models.dual_encoder import DualEncoder
from transferlab.models.encoder import Encoder
from transferlab.runtime import derived_generator

CONTEXT_FILE, CONFIG_FILE = "coop.safetensors", "coop.json"
RANDOM_INIT_STD = 0.02  # the paper's N(0, 0.02²) for a context without ctx_init


class CoOp(ClassifierMixin, BaseEstimator):
    """Learned prompt context for a frozen DualEncoder; fit on L2-normalised image embeddings [n, D].

    Labels index `classnames`. Learned state: `ctx_` ([n_ctx, width], or [K, n_ctx, width] when
    class-specific), `weights_` (the class weights [K, D] the context gives), `logit_scale_`, `classes_`,
    `loss_curve_` (mean training loss per epoch), `n_iter_` (optimizer steps).
    """

    def __init__(self, model, classnames: list[str], n_ctx: int | None = None, ctx_init: str | None = "a photo of a",
                 class_specific: bool = False, epochs: int = 50, lr: float = 5e-3, batch_size: int = 32,
                 optimizer: str = "adamw", weight_decay: float = 0.0, warmup_epochs: int = 1, seed: int = 0,
                 progress: bool = True) -> None:
        self.model = model
        self.classnames = classnames
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.class_specific = class_specific
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.seed = seed
        self.progress = progress

    # ---- training
    def fit(self, X, y) -> CoOp:
        model, prompts = self._prompts()
        device = model.logit_scale.device
        features = torch.as_tensor(np.asarray(X), dtype=torch.float32).to(device)
        labels = torch.as_tensor(np.asarray(y), dtype=torch.long).to(device)
        k = len(self.classnames)
        if features.ndim != 2 or len(features) != len(labels) or len(features) == 0:
            raise ValueError(f"X must be [n, D] embeddings with one label each; got {tuple(features.shape)} and "
                             f"{len(labels)} labels")
        if labels.min() < 0 or labels.max() >= k:
            raise ValueError(f"labels must index the {k} classnames, got values in [{labels.min()}, {labels.max()}]")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")

        ctx = nn.Parameter(prompts.initial_context(self.class_specific, k, self.seed).to(device))
        if self.optimizer == "adamw":
            optimizer = torch.optim.AdamW([ctx], lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = torch.optim.SGD([ctx], lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        scale = model.logit_scale.detach().exp()
        loop = ShuffledEpochs(len(features), self.batch_size, self.epochs, self.seed, "coop")
        self.loss_curve_ = []
        with _frozen_eval(model):
            for _, batches in loop.run(optimizer, self.lr, self.warmup_epochs * loop.per_epoch, desc="coop",
                                       progress=self.progress, leave=False):
                epoch_loss = torch.zeros((), device=device)
                for batch in batches:
                    batch = batch.to(device)
                    weights = prompts.class_weights(model, ctx)
                    loss = F.cross_entropy(scale * features[batch] @ weights.T, labels[batch])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward(inputs=[ctx])  # gradients for the context only; the towers' stay untouched
                    optimizer.step()
                    epoch_loss += loss.detach() * len(batch)
                self.loss_curve_.append((epoch_loss / len(features)).item())
                loop.show(loss=f"{self.loss_curve_[-1]:.3f}")
        self.n_iter_ = loop.step
        self.classes_ = np.arange(k)
        self.logit_scale_ = scale.item()
        self._set_context(model, prompts, ctx.detach())
        return self

    def _prompts(self) -> tuple[DualEncoder, _Prompts]:
        model = prompt_model(self.model)
        return model, _Prompts(model.text_tower, list(self.classnames), self.n_ctx, self.ctx_init,
                               model.logit_scale.device)

    def _set_context(self, model: DualEncoder, prompts: _Prompts, ctx: torch.Tensor) -> None:
        with torch.no_grad(), _frozen_eval(model):
            self.weights_ = prompts.class_weights(model, ctx).float().cpu()
        self.ctx_ = ctx.float().cpu()

    # ---- prediction
    def decision_function(self, X) -> np.ndarray:
        """Logits [n, K]: logit scale · x·w_c."""
        features = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        return (self.logit_scale_ * features @ self.weights_.T).numpy()

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.decision_function(X)), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]

    # ---- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"ctx": self.ctx_.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> CoOp:
        """Take a learned context (from `state_dict` or a saved file); the class weights are recomputed."""
        model, prompts = self._prompts()
        ctx = state["ctx"].float()
        expected = (len(self.classnames),) * self.class_specific + (prompts.n_ctx, prompts.width)
        if tuple(ctx.shape) != expected:
            raise ValueError(f"context of shape {tuple(ctx.shape)} does not fit this CoOp (expected {expected})")
        self.classes_ = np.arange(len(self.classnames))
        self.logit_scale_ = model.logit_scale.detach().exp().item()
        self._set_context(model, prompts, ctx.to(model.logit_scale.device))
        return self

    def config(self) -> dict:
        params = {k: v for k, v in self.get_params().items() if k != "model"}
        model = prompt_model(self.model)
        return {"method": "coop", "params": params, "n_ctx": int(self.ctx_.shape[-2]),
                "text_tower": model.spec.text.name, "logit_scale": self.logit_scale_,
                "loss_curve": getattr(self, "loss_curve_", None)}

    def save(self, out_dir: str | Path) -> Path:
        """coop.safetensors (the context) and coop.json (parameters, class names, SHA-256 of the context file)
        into an empty or new directory, each file written atomically."""
        out_dir = Path(out_dir)
        if out_dir.exists() and any(out_dir.iterdir()):
            raise UserError(f"{out_dir} is not empty; CoOp saves into a new or empty directory. Choose another.")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / CONTEXT_FILE
        tmp = temp_path(path)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))
        commit(tmp, path)
        config = {**self.config(), "sha256": {CONTEXT_FILE: hashlib.sha256(path.read_bytes()).hexdigest()}}
        atomic_write(out_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        return out_dir

    @classmethod
    def load(cls, directory: str | Path, model) -> CoOp:
        """A fitted CoOp from `save`'s directory, over `model` (the model it was trained on)."""
        directory = Path(directory)
        config = json.loads((directory / CONFIG_FILE).read_text())
        digest = hashlib.sha256((directory / CONTEXT_FILE).read_bytes()).hexdigest()
        if digest != config["sha256"][CONTEXT_FILE]:
            raise UserError(f"{directory / CONTEXT_FILE} does not match the SHA-256 in {CONFIG_FILE}: the file "
                            f"is damaged or was replaced. Save the CoOp again.")
        coop = cls(model, **config["params"])
        coop.loss_curve_ = config.get("loss_curve")
        return coop.load_state_dict(load_file(str(directory / CONTEXT_FILE)))


def prompt_model(model) -> DualEncoder:
    """The DualEncoder behind `model` (itself or a loaded Encoder's), if its text tower takes prompts."""
    module = model.module if isinstance(model, Encoder) else model
    name = getattr(model, "name", type(module).__name__)
    reason = None
    if not isinstance(module, DualEncoder):
        reason = f"'{name}' is not a transferlab model (open_clip and hf: models have no prompt hook)"
    elif module.text_tower is None:
        reason = "this model has no text tower"
    elif not all(hasattr(module.text_tower, hook) for hook in ("embed_tokens", "forward_embeddings")):
        reason = f"its text tower '{module.spec.text.name}' cannot run from token embeddings"
    if reason is not None:
        raise UserError(f"CoOp learns prompt vectors inside the text tower, so it needs a transferlab model with a "
                        f"text-transformer-* or minilm-l6 text tower, but {reason}. On this model use a method "
                        f"that works on its image embeddings instead: the linear probe, kNN or NCM "
                        f"(transferlab.evaluate), or fine-tune the image tower (transferlab.adapt.finetune).")
    return module


class _Prompts:
    """The frozen parts of the K class prompts: the start token's embedding, the class tokens' embeddings
    (" <classname>." then END and padding) and the attention mask, around n_ctx context positions."""

    def __init__(self, tower: nn.Module, classnames: list[str], n_ctx: int | None, ctx_init: str | None,
                 device: torch.device) -> None:
        with torch.no_grad():
            self.init = None
            if ctx_init is not None:
                tokens = tower.tokenize([ctx_init])
                length = int(tokens["attention_mask"][0].sum())
                # Rows read START tokens... END: the phrase's own tokens are those in between.
                self.init = tower.embed_tokens(tokens["input_ids"][:, 1:length - 1].to(device))[0].float().cpu()
                if n_ctx is not None and n_ctx != len(self.init):
                    raise ValueError(f"n_ctx={n_ctx}, but ctx_init {ctx_init!r} is {len(self.init)} tokens of this "
                                     f"tower. Leave n_ctx unset to use the phrase, or pass ctx_init=None for "
                                     f"{n_ctx} randomly initialised vectors.")
            self.n_ctx = len(self.init) if self.init is not None else (16 if n_ctx is None else n_ctx)
            if self.n_ctx < 1:
                raise ValueError(f"n_ctx must be at least 1, got {self.n_ctx}")
            tokens = tower.tokenize([f" {name}." for name in classnames])
            embeddings = tower.embed_tokens(tokens["input_ids"].to(device))
            self.width = embeddings.shape[-1]
            self.start, self.suffix = embeddings[:, :1], embeddings[:, 1:]
            mask = torch.as_tensor(tokens["attention_mask"]).to(device)
            self.mask = torch.cat([mask[:, :1], mask[:, :1].expand(-1, self.n_ctx), mask[:, 1:]], dim=1)
        limit = getattr(tower, "context_length", None)
        if limit is not None and self.mask.shape[1] > limit:
            raise UserError(f"A CoOp prompt of {self.n_ctx} context tokens and the longest class name takes "
                            f"{self.mask.shape[1]} positions but the text tower holds {limit}. Use a smaller n_ctx "
                            f"(with ctx_init=None) or shorter class names.")

    def initial_context(self, class_specific: bool, classes: int, seed: int) -> torch.Tensor:
        shape = (classes,) * class_specific + (self.n_ctx, self.width)
        if self.init is not None:
            return self.init.expand(shape).clone()
        return torch.randn(shape, generator=derived_generator(seed, "coop-init", 0)) * RANDOM_INIT_STD

    def class_weights(self, model: DualEncoder, ctx: torch.Tensor) -> torch.Tensor:
        """normalise(text_proj(tower([START, ctx, class tokens]))) for every class: [K, D]."""
        k = len(self.start)
        ctx = ctx.to(self.start.dtype)
        ctx = ctx if ctx.ndim == 3 else ctx.unsqueeze(0).expand(k, -1, -1)
        features = model.text_tower.forward_embeddings(torch.cat([self.start, ctx, self.suffix], dim=1), self.mask)
        return model.project_text(features)


class _frozen_eval:
    """The model in eval mode (no dropout, fixed normalisation statistics) for the block; its mode after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.modes = {module: module.training for module in self.model.modules()}
        self.model.eval()

    def __exit__(self, *exc) -> None:
        for module, mode in self.modes.items():
            module.training = mode
