"""What a training step optimises: the recipe's `train.objective`, turned into encoders and a loss.

An objective takes the step's `Batch` and returns the inputs to embed, each as `(encode(start, stop),
rows)` so `large_batch.backward_step` can chunk them (`Inputs`), and a loss of the full embeddings:

- image-text (clip, siglip, dcl): images and one row per caption; with `captions: all` every caption of
  a batch image is a row and the image's embedding is repeated for each of its rows. A text-text model
  takes the same losses with its left texts (queries) in the images' place.
- two views (supcon, ntxent): two augmentations of the batch; positives are the same image (ntxent) or
  the same class (supcon).
- one view with labels (look, ce): LOOK's leave-one-out kNN loss against a memory bank, or plain
  cross-entropy through a linear classifier — the supervised baseline LOOK is compared with.

An objective is an nn.Module: its parameters (the ce classifier) train with the model and its buffers
(LOOK's bank) are saved in checkpoints.

Under torchrun each rank embeds its shard of the global batch; the losses see the global batch. clip and
siglip use their distributed forms (`losses.distributed`, with `train.local_loss`); the others gather the
embeddings with gradient and the ids without, and compute the single-process loss of the global batch on
every rank. After the ranks' gradients are averaged, every objective's gradients equal the single-process
gradients of the whole batch. With one process the gathers are the identity.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.config import TrainSpec
from transferlab.config.catalog import (
    IMAGE_TEXT_OBJECTIVES,
    LABELLED_OBJECTIVES,
    OBJECTIVES,
    TWO_VIEW_OBJECTIVES,
)
from transferlab.distributed.gather import all_gather_no_grad, all_gather_with_grad
from transferlab.errors import UserError
from transferlab.losses import dcl_loss, supcon_loss
from transferlab.losses.distributed import distributed_clip_loss, distributed_siglip_loss
from transferlab.losses.look import LookLoss
from transferlab.models.dual_encoder import DualEncoder
from transferlab.train.large_batch import EncodeRows, Inputs


@dataclass
class Batch:
    """One step's samples: augmented image views, text rows and the ids that decide positives."""

    views: list[torch.Tensor]  # float images [B, C, H, W], normalised; one per augmentation
    index: torch.Tensor  # positions of the samples in the training split [B]
    labels: torch.Tensor | None  # class labels [B]
    positive_ids: torch.Tensor | None  # per text row: equal ids are matches (None: only the pair itself)
    caption_ids: torch.Tensor | None = None  # per text row: which caption [M] (on the host)
    row_image: torch.Tensor | None = None  # per text row: which batch image it describes [M]
    query_ids: torch.Tensor | None = None  # text-text models: which left text each sample has [B] (on the host)
    text_rows: dict = field(default_factory=dict)  # the text tower's inputs on the device (train/text_rows.py)


class Objective(nn.Module, abc.ABC):
    views = 1
    stateful = False  # whether after_step updates state (then a skipped step must not reach it)

    def inputs(self, model: DualEncoder, batch: Batch, text: Callable, autocast: AbstractContextManager) -> Inputs:
        def encode_view(view: torch.Tensor) -> EncodeRows:
            def encode(start: int, stop: int) -> torch.Tensor:
                with autocast:
                    return _float(model.encode_image(view[start:stop], normalize=False))
            return encode
        return [(encode_view(view), len(view)) for view in batch.views]

    @abc.abstractmethod
    def loss(self, embeddings: list[torch.Tensor], batch: Batch, model: DualEncoder, with_params: bool) -> torch.Tensor:
        """The loss of the full batch's embeddings; the model's loss parameters detached if not with_params."""

    def after_step(self, embeddings: list[torch.Tensor], batch: Batch) -> None:
        """Update state that depends on the step's (detached) embeddings."""


class ImageText(Objective):
    def __init__(self, kind: str, label_smoothing: float, local_loss: bool = False) -> None:
        super().__init__()
        self.kind, self.label_smoothing, self.local_loss = kind, label_smoothing, local_loss

    def inputs(self, model, batch, text, autocast):
        def encode_text(start: int, stop: int) -> torch.Tensor:
            with autocast:
                return _float(model.project_text(text(batch, start, stop), normalize=False))

        def encode_query(start: int, stop: int) -> torch.Tensor:
            with autocast:
                features = text(batch, start, stop, query=True)
                return _float(model.project_text(features, normalize=False, query=True))

        first = [(encode_query, len(batch.query_ids))] if batch.query_ids is not None else []
        return first + super().inputs(model, batch, text, autocast) + [(encode_text, len(batch.caption_ids))]

    def loss(self, embeddings, batch, model, with_params):
        image, text = (F.normalize(e, dim=-1) for e in embeddings)
        image = image[batch.row_image]
        scale = model.logit_scale.exp()
        bias = model.logit_bias
        if not with_params:
            scale, bias = scale.detach(), None if bias is None else bias.detach()
        ids = batch.positive_ids
        if self.kind == "siglip":
            return distributed_siglip_loss(image, text, scale, bias, self.local_loss, positive_ids=ids)
        if self.kind == "dcl":
            return dcl_loss(all_gather_with_grad(image), all_gather_with_grad(text), scale,
                            positive_ids=None if ids is None else all_gather_no_grad(ids))
        return distributed_clip_loss(image, text, scale, self.local_loss, logit_bias=bias, positive_ids=ids,
                                     label_smoothing=self.label_smoothing)


class TwoViews(Objective):
    views = 2

    def __init__(self, supervised: bool, temperature: float) -> None:
        super().__init__()
        self.supervised, self.temperature = supervised, temperature

    def loss(self, embeddings, batch, model, with_params):
        ids = all_gather_no_grad(batch.labels if self.supervised else batch.index)
        views = torch.cat([all_gather_with_grad(view) for view in embeddings])
        return supcon_loss(F.normalize(views, dim=-1), torch.cat([ids, ids]), self.temperature)


class Look(Objective):
    stateful = True

    def __init__(self, embed_dim: int, k: int, bank_size: int, temperature: float) -> None:
        super().__init__()
        # eval mode: the memory bank is filled once per step in after_step, not on every loss evaluation
        self.look = LookLoss(bank_size, embed_dim, k, temperature).eval()
        self._register_load_state_dict_pre_hook(_renamed_bank)

    def loss(self, embeddings, batch, model, with_params):
        return self.look(F.normalize(all_gather_with_grad(embeddings[0]), dim=-1), all_gather_no_grad(batch.labels),
                         all_gather_no_grad(batch.index))

    def after_step(self, embeddings, batch):
        self.look.enqueue(F.normalize(all_gather_no_grad(embeddings[0]), dim=-1), all_gather_no_grad(batch.labels),
                          all_gather_no_grad(batch.index))

    def train(self, mode: bool = True) -> Look:
        super().train(mode)
        self.look.eval()
        return self


class CrossEntropy(Objective):
    def __init__(self, embed_dim: int, classes: int, label_smoothing: float) -> None:
        super().__init__()
        self.classifier = nn.Linear(embed_dim, classes)
        self.label_smoothing = label_smoothing

    def loss(self, embeddings, batch, model, with_params):
        return F.cross_entropy(self.classifier(all_gather_with_grad(embeddings[0])), all_gather_no_grad(batch.labels),
                               label_smoothing=self.label_smoothing)


def build_objective(spec: TrainSpec, embed_dim: int, classes: int | None) -> Objective:
    if spec.objective in LABELLED_OBJECTIVES and classes is None:
        unlabelled = ", ".join(name for name in OBJECTIVES if name not in LABELLED_OBJECTIVES)
        raise UserError(f"train.objective '{spec.objective}' learns from class labels, but dataset '{spec.data_label}' "
                        f"has none. Use one of {unlabelled}, or give the dataset labels.")
    if spec.objective in IMAGE_TEXT_OBJECTIVES:
        return ImageText(spec.objective, spec.label_smoothing, spec.local_loss)
    if spec.objective in TWO_VIEW_OBJECTIVES:
        return TwoViews(spec.objective in LABELLED_OBJECTIVES, spec.temperature)
    if spec.objective == "look":
        return Look(embed_dim, spec.look.k, spec.look.bank_size, spec.look.temperature)
    return CrossEntropy(embed_dim, classes, spec.label_smoothing)  # "ce": the schema admits only OBJECTIVES


def _renamed_bank(state: dict, prefix: str, *_) -> None:
    """Checkpoints written before LOOK's loss was named `look` hold its buffers under `bank.`."""
    for key in [k for k in state if k.startswith(prefix + "bank.")]:
        state[prefix + "look." + key[len(prefix) + len("bank."):]] = state.pop(key)


def _float(embedding: torch.Tensor) -> torch.Tensor:
    """Half-precision (autocast) embeddings in float32 for the loss; float32 and float64 as they are."""
    return embedding.float() if embedding.dtype in (torch.float16, torch.bfloat16) else embedding
