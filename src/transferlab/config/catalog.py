"""The names recipes and commands accept, one table per concept; every other list derives from these.

- Objectives (`train.objective`): what each one embeds and whether it needs class labels. The schema's
  `ObjectiveName`, its checks, and train/objectives.py's builders are keyed by `OBJECTIVES`.
- Adaptation methods: how `transferlab adapt --method` fits each one (on cached image features, on images,
  or on the weights of given models), how the few-shot task runs it (`eval.fewshot.methods`; None: it is no
  few-shot method), and whether it starts from the zero-shot classifier of the suite's templates (so it
  needs a text tower). The schema's `FewShotMethod`, evaluate's few-shot task, the adapt command and the
  CLI's help derive from `ADAPTATION_METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IMAGE_TEXT_OBJECTIVES = ("clip", "siglip", "dcl")  # images (or left texts) against their captions
TWO_VIEW_OBJECTIVES = ("supcon", "ntxent")  # two augmentations of each image
IMAGE_ONLY_OBJECTIVES = (*TWO_VIEW_OBJECTIVES, "look", "ce")
LABELLED_OBJECTIVES = ("supcon", "look", "ce")  # positives or targets from class labels
OBJECTIVES = IMAGE_TEXT_OBJECTIVES + IMAGE_ONLY_OBJECTIVES


@dataclass(frozen=True)
class Method:
    adapt: Literal["features", "images", "weights"]  # what `transferlab adapt` fits it on
    fewshot: Literal["features", "images"] | None  # what the few-shot task fits it on; None: not a few-shot method
    zeroshot_start: bool = False  # starts from the zero-shot classifier (needs a text tower and class names)


ADAPTATION_METHODS = {
    "zeroshot": Method("features", "features", zeroshot_start=True),  # the reference line: fits nothing
    "linear_probe": Method("features", "features"),
    "linear_probe_zs": Method("features", "features", zeroshot_start=True),
    "knn": Method("features", "features"),
    "ncm": Method("features", "features"),
    "gda": Method("features", "features", zeroshot_start=True),
    "tip_adapter": Method("features", "features", zeroshot_start=True),
    "tip_adapter_f": Method("features", "features", zeroshot_start=True),
    "coop": Method("features", "features", zeroshot_start=True),
    "full": Method("images", "images"),
    "lora": Method("images", "images"),
    # few-shot: fine-tune fully, then interpolate with the pretrained weights; adapt: interpolate two given models
    "wise_ft": Method("weights", "images"),
    "task_arithmetic": Method("weights", None),
    "ties": Method("weights", None),
    "soup": Method("weights", None),
}
FEWSHOT_METHODS = tuple(name for name, method in ADAPTATION_METHODS.items() if method.fewshot)
ZEROSHOT_START_METHODS = tuple(name for name, method in ADAPTATION_METHODS.items() if method.zeroshot_start)


def methods_fitted_on(inputs: str, command: Literal["adapt", "fewshot"] = "adapt") -> tuple[str, ...]:
    """The methods that `command` fits on `inputs` ("features", "images" or "weights")."""
    return tuple(name for name, method in ADAPTATION_METHODS.items() if getattr(method, command) == inputs)
