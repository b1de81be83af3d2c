"""`transferlab adapt`: adapt a pretrained model to one labelled dataset with one method, into a directory.

The dataset and the zero-shot templates come from a suite (default: the model's own recipe, else the
built-in `default` suite). Every method sees `--shots` examples per class of the train split, drawn with
`--seed`, tunes what it tunes on as many per class of the val split, and is scored on the test split:

- on cached image embeddings: the zero-shot classifier (the reference), linear probes, kNN, NCM, GDA,
  Tip-Adapter(-F) and CoOp; what they learn goes to `head.safetensors`;
- on images: full or LoRA fine-tuning of the image tower with a zero-shot head;
- on weights: `wise_ft PRETRAINED FINETUNED` interpolates with `alpha` (and, when FINETUNED is an `adapt`
  output with a head, the head from the zero-shot weights to the tuned ones);
  `task_arithmetic` / `ties PRETRAINED FINETUNED...` add task vectors; `soup MODEL...` averages.

A method that yields a model writes it as a checkpoint (`OUT/checkpoints/step_0`), so `transferlab eval OUT`
evaluates it like any run. `OUT/adapt.json` records the method, models, dataset, shots, seed, parameters
and test metrics (with the starting model's zero-shot accuracy beside them, when it has a text tower).
config/catalog.py's ADAPTATION_METHODS says which method fits on what.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from transferlab.config import Suite, dump_recipe
from transferlab.config.catalog import ADAPTATION_METHODS, ZEROSHOT_START_METHODS, methods_fitted_on
from transferlab.data.readers.sources import load_splits
from transferlab.data.stream.loader import decode_all
from transferlab.errors import UserError
from transferlab.evaluate.features import image_embeddings
from transferlab.evaluate.fewshot import sample_shots
from transferlab.evaluate.tasks import EmbeddedDataset, classification_scores, fewshot_estimator
from transferlab.fileio import atomic_write, commit, temp_path
from transferlab.models.encoder import Encoder, from_dual_encoder
from transferlab.models.references import LoadedModel, load_model

FEATURE_METHODS, FINETUNE_METHODS = methods_fitted_on("features"), methods_fitted_on("images")
MODELS_TAKEN = {"wise_ft": (2, 2, "PRETRAINED FINETUNED"), "task_arithmetic": (2, None, "PRETRAINED FINETUNED..."),
                "ties": (2, None, "PRETRAINED FINETUNED..."), "soup": (2, None, "MODEL MODEL...")}


def adapt(models: list[str], method: str, data: str, shots: int, seed: int, suite: Suite | None, out: Path,
          device: torch.device, parameters: dict) -> dict:
    """Run one method; write OUT/adapt.json (returned) and what the method learned."""
    if method not in ADAPTATION_METHODS:
        raise UserError(f"Unknown adaptation method '{method}'. Choose one of: {', '.join(ADAPTATION_METHODS)}.")
    fewest, most, shape = MODELS_TAKEN.get(method, (1, 1, "MODEL"))
    if not fewest <= len(models) <= (most or len(models)):
        raise UserError(f"--method {method} takes {shape}; {len(models)} model(s) were given.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty; adapt never writes over other files. Pass a new "
                        f"--out directory.")
    base = load_model(models[0], device)
    suite = suite or _suite_of(base)
    if data not in suite.datasets:
        raise UserError(f"Dataset '{data}' is not defined in suite '{suite.name}' (it has: "
                        f"{', '.join(suite.datasets)}). Pass --data one of those, or --suite a file that defines it.")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _adapt(base, models, method, data, shots, seed, suite, out, parameters)
    except BaseException:
        if created:  # a failed request leaves nothing behind, so the same --out can be used again
            shutil.rmtree(out, ignore_errors=True)
        raise


def _adapt(base: LoadedModel, models: list[str], method: str, data: str, shots: int, seed: int, suite: Suite,
           out: Path, parameters: dict) -> dict:
    task = _Task(base.encoder, suite, data, shots, seed, out)
    record = {"method": method, "models": models, "weights": base.encoder.weights, "data": data, "shots": shots,
              "seed": seed, "parameters": parameters, "metrics": {}}
    if method in FEATURE_METHODS:
        record["metrics"] = _feature_method(task, method, parameters, out)
    elif method in FINETUNE_METHODS:
        record["metrics"] = _finetune(task, base, method, parameters, seed, out)
    else:
        record["metrics"] = _weight_method(task, base, models, method, parameters, out)
    if base.encoder.encode_text is not None and method != "zeroshot":
        record["metrics"]["zeroshot_acc1_before"] = task.score(_zeroshot(task))["acc1"]
    atomic_write(out / "adapt.json", json.dumps(record, indent=1) + "\n")
    return record


class _Task:
    """The dataset's splits, the k-shot draws and the embeddings of one encoder."""

    def __init__(self, encoder: Encoder, suite: Suite, data: str, shots: int, seed: int, out: Path) -> None:
        self.encoder, self.suite, self.out, self.data = encoder, suite, out, data
        if encoder.encode_image is None:
            raise UserError(f"Adaptation classifies images, but model '{encoder.name}' has no image encoder (a "
                            f"text-only model). Adapt an image-text model: a transferlab run, or an openclip: one.")
        self.splits = load_splits(data, suite.datasets[data], encoder.image_size, encoder.channels)
        if self.splits["train"].labels is None:
            raise UserError(f"Adaptation needs class labels, but dataset '{data}' has none. Pick a labelled "
                            f"dataset with --data (or give this one a label_column / label_key).")
        self.embedded = self.embedded_by(encoder)
        train_y = self.embedded.labelled("train", "adapt")[1]
        short = {int(c): int(n) for c, n in zip(*np.unique(train_y, return_counts=True), strict=True) if n < shots}
        if short:
            names = self.splits["train"].classnames
            listed = ", ".join(f"'{names[c] if names else c}' has {n}" for c, n in sorted(short.items()))
            raise UserError(f"--shots {shots} is more than some classes of the train split of '{data}' have "
                            f"({listed}). Use --shots {min(short.values())} or fewer.")
        self.chosen = sample_shots(train_y, shots, seed)
        val_y = self.splits["val"].labels
        self.val_chosen = sample_shots(val_y.numpy(), shots, seed) if val_y is not None and len(val_y) else None

    def embedded_by(self, encoder: Encoder) -> EmbeddedDataset:
        return EmbeddedDataset(name=self.data, split="test", splits=self.splits, embed=lambda split: image_embeddings(
            encoder, self.splits[split], split, self.out / "features"), embed_captions=None,
            encode_text=encoder.encode_text, model=encoder.module)

    def features(self, split: str, embedded: EmbeddedDataset | None = None) -> tuple[np.ndarray, np.ndarray]:
        x, y = (embedded or self.embedded).labelled(split, "adapt")
        pick = {"train": self.chosen, "val": self.val_chosen}.get(split)
        return (x, y) if pick is None else (x[pick], y[pick])

    def score(self, predicted: np.ndarray) -> dict:
        return classification_scores(predicted, self.embedded.labelled("test", "adapt")[1])


def _suite_of(base: LoadedModel) -> Suite:
    from transferlab.config import load_suite
    from transferlab.evaluate.suite import suite_of

    return suite_of(base.recipe) if base.recipe is not None else load_suite("default")


def _zeroshot(task: _Task, embedded: EmbeddedDataset | None = None) -> np.ndarray:
    embedded = embedded or task.embedded
    weights = embedded.text_classifier(task.suite.eval.templates, "zero-shot")
    return (torch.as_tensor(embedded.labelled("test", "adapt")[0]) @ weights.T).argmax(1).numpy()


def _set_parameters(estimator, parameters: dict, method: str) -> None:
    known = estimator.get_params()
    unknown = sorted(set(parameters) - set(known) - {"val_x", "val_y"})
    if unknown:
        settable = ", ".join(k for k in known if k not in ("val_x", "val_y", "model", "classnames",
                                                           "zeroshot_weights", "weights"))
        raise UserError(f"--method {method} has no parameter {', '.join(unknown)}; its parameters are: {settable}.")
    estimator.set_params(**parameters)


def _feature_method(task: _Task, method: str, parameters: dict, out: Path) -> dict:
    spec = task.suite.eval
    weights = task.embedded.text_classifier(spec.templates, method) if method in ZEROSHOT_START_METHODS else None
    estimator = fewshot_estimator(method, spec, weights, task.splits["test"].classnames, task.embedded.model)()
    _set_parameters(estimator, parameters, method)
    if task.val_chosen is not None and "val_x" in estimator.get_params():
        val_x, val_y = task.features("val")
        estimator.set_params(val_x=val_x, val_y=val_y)
    estimator.fit(*task.features("train"))
    _save_learned(estimator, out / "head.safetensors")
    return task.score(estimator.predict(task.embedded.labelled("test", "adapt")[0]))


def _save_learned(estimator, path: Path) -> None:
    """Every learned numeric array of a fitted estimator (attributes ending in `_`), as safetensors."""
    tensors = {}
    for name, value in vars(estimator).items():
        if name.endswith("_") and not name.startswith("_"):
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if array.dtype.kind in "fiub" and array.size:
                tensors[name.rstrip("_")] = torch.from_numpy(np.ascontiguousarray(array))
    tmp = temp_path(path)
    save_file(tensors, str(tmp))
    commit(tmp, path)


def _finetune(task: _Task, base: LoadedModel, method: str, parameters: dict, seed: int, out: Path) -> dict:
    from transferlab.adapt.finetune import finetune

    model = _dual_encoder(base, method)
    train = task.splits["train"]
    shots = decode_all(train.images[torch.as_tensor(task.chosen)], model.spec.image_size, model.spec.channels,
                       strict=True)  # streamed data: only the few chosen images are decoded
    templates = task.embedded.zeroshot_templates(task.suite.eval.templates)
    tuned = finetune(model, shots, train.labels[torch.as_tensor(task.chosen)],
                     classnames=train.classnames, templates=templates, method=method, seed=seed,
                     **parameters)
    path = _save_model(tuned.model, base, out, {"method": method, "parameters": parameters, "seed": seed})
    save_file({k: v.detach().cpu().contiguous() for k, v in tuned.head.state_dict().items()},
              str(out / "head.safetensors"))
    embedded = task.embedded_by(from_dual_encoder(tuned.model, str(path)))
    with torch.no_grad():
        logits = tuned.head(torch.as_tensor(embedded.labelled("test", "adapt")[0]))
    return {**task.score(logits.argmax(1).numpy()), "final_loss": tuned.losses[-1] if tuned.losses else None}


def _weight_method(task: _Task, base: LoadedModel, models: list[str], method: str, parameters: dict,
                   out: Path) -> dict:
    from transferlab.adapt import merging

    states = merging.load_states(models)
    merging.check_compatible(states)
    first, *rest = states.values()
    alpha = parameters.get("alpha", 0.5)
    if method == "wise_ft":
        merged = merging.interpolate(first, rest[0], alpha)
    elif method == "task_arithmetic":
        merged = merging.task_arithmetic(first, rest, parameters.get("scale", 1.0))
    elif method == "ties":
        merged = merging.ties_merge(first, rest, parameters.get("density", 0.2), parameters.get("scale", 1.0))
    else:
        merged = merging.uniform_soup([first, *rest])
    model = copy.deepcopy(_dual_encoder(base, method))  # the loaded model keeps its weights (and cache key)
    model.load_saved_state_dict(merged)
    path = _save_model(model, base, out, {"method": method, "parameters": parameters, "models": models})
    embedded = task.embedded_by(from_dual_encoder(model, str(path)))
    head = Path(models[-1]) / "head.safetensors"
    if method == "wise_ft" and head.is_file():  # the head too: from the zero-shot weights to the fine-tuned ones
        tuned = load_file(str(head))
        zeroshot = task.embedded.text_classifier(task.suite.eval.templates, method)
        weight = (1 - alpha) * zeroshot + alpha * tuned["weight"]
        save_file({"weight": weight.contiguous(), "scale": tuned["scale"]}, str(out / "head.safetensors"))
        features = F.normalize(torch.as_tensor(embedded.labelled("test", "adapt")[0]), dim=-1)
        return task.score((features @ weight.T).argmax(1).numpy())
    if model.text_tower is None:
        return {}
    return task.score(_zeroshot(task, embedded))


def _dual_encoder(base: LoadedModel, method: str):
    from transferlab.models.dual_encoder import DualEncoder

    if not isinstance(base.encoder.module, DualEncoder) or base.recipe is None:
        raise UserError(f"--method {method} changes a model's weights, so it needs a transferlab model (a run or "
                        f"checkpoint directory), not '{base.encoder.name}'. Feature-level methods (gda, "
                        f"tip_adapter, linear_probe, ...) work with any model.")
    return base.encoder.module


def _save_model(model, base: LoadedModel, out: Path, adapt: dict) -> Path:
    from transferlab.checkpoints import save_checkpoint

    meta = {"model": model.spec.model_dump(mode="json"), "recipe": dump_recipe(base.recipe), "adapt": adapt}
    return save_checkpoint(out, 0, {k: v.detach().cpu() for k, v in model.saved_state_dict().items()}, {}, meta)
