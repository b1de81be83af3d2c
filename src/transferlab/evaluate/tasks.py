"""The evaluation tasks of a suite, each reading a dataset's cached embeddings.

Every task takes an `EmbeddedDataset` (one dataset's splits and lazily computed, cached embeddings) and the
suite's options, and returns its metrics (accuracies as fractions) and, for classifiers, the predictions
on the evaluation split (for the report's confusion matrices). The maths of each lives with its
estimator: `zeroshot`, `knn`, `ncm`, `fewshot`, `retrieval`, `clustering` here; the linear probe and the
few-shot adaptation methods in adapt/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from transferlab.adapt.coop import CoOp
from transferlab.adapt.finetune_classifier import FineTuneClassifier
from transferlab.adapt.gda import GDA
from transferlab.adapt.linear_probe import LinearProbe, probe_with_validation
from transferlab.adapt.tip_adapter import TipAdapter, TipAdapterF
from transferlab.adapt.zeroshot_probe import ZeroShotInitProbe
from transferlab.config import EvalSpec
from transferlab.config.catalog import ZEROSHOT_START_METHODS, methods_fitted_on
from transferlab.data.dataset import ImageTextData
from transferlab.data.stream.loader import decode_all
from transferlab.errors import UserError
from transferlab.evaluate.association import association_metrics, cue_prompt, jaccard_scores
from transferlab.evaluate.clustering import cluster_metrics
from transferlab.evaluate.fewshot import fewshot_curve
from transferlab.evaluate.group_metrics import PROTOCOLS, group_metrics
from transferlab.evaluate.knn import KNNClassifier, select_k_on_validation
from transferlab.evaluate.metrics import mean_per_class_recall
from transferlab.evaluate.ncm import NearestClassMean
from transferlab.evaluate.retrieval import retrieval_recall
from transferlab.evaluate.zeroshot import ZeroShotClassifier, zeroshot_classify
from transferlab.models.dual_encoder import DualEncoder
from transferlab.models.encoder import zeroshot_weights

Result = tuple[dict[str, float], torch.Tensor | None]


@dataclass
class EmbeddedDataset:
    """One dataset of a suite as one model sees it: its splits, and the model's embeddings of them, computed on
    first use."""

    name: str
    split: str  # the evaluation split
    splits: dict[str, ImageTextData]
    embed: Callable[[str], torch.Tensor]  # split -> image embeddings
    embed_captions: Callable[[str], tuple[torch.Tensor, torch.Tensor]]  # split -> (captions, caption's image)
    encode_text: Callable[[list[str]], torch.Tensor] | None
    model: torch.nn.Module | None = None  # the encoder's module (CoOp prompts its text tower)
    group_metadata: Callable[[str], np.ndarray | None] = lambda split: None  # split -> each sample's metadata row
    _classifiers: dict = field(default_factory=dict)  # zero-shot weights by (class names, templates)

    @property
    def data(self) -> ImageTextData:
        return self.splits[self.split]

    def labelled(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        data = self.splits[split]
        if data.labels is None:
            raise UserError(f"Task {task} needs class labels but dataset '{self.name}' has none. Set its "
                            f"label_column (folder) or label_key (webdataset), or drop {task} from eval.tasks.")
        if len(data) == 0:
            raise UserError(f"Task {task} needs the {split} split of dataset '{self.name}', which is empty. Give "
                            f"it a non-zero fraction in datasets.{self.name}.splits.")
        return self.embed(split).numpy(), data.labels.numpy()

    def zeroshot_templates(self, suite_templates: list[str]) -> list[str]:
        """The templates the dataset publishes (CLIP_benchmark's zeroshot_classification_templates.txt), else
        the suite's `eval.templates`."""
        return self.data.templates or suite_templates

    def text_classifier(self, templates: list[str], task: str) -> torch.Tensor:
        """Zero-shot class weights [K, D] from the class names and the templates (the dataset's own, when it
        publishes some, else `templates`); row c is label c."""
        if self.encode_text is None:
            raise UserError(f"{task} needs a text encoder; this model has none. Drop it from eval.tasks (or "
                            f"eval.fewshot.methods) for this model.")
        if self.data.labels is not None and self.data.classnames_from is None:
            raise UserError(f"{task} needs class names, but dataset '{self.name}' names its classes only by their "
                            f"integer labels (no class-name file was found: its data report says where it looked). "
                            f"Add the names, one per line in label order (classnames.txt for shards), or drop {task} "
                            f"for this dataset.")
        templates = self.zeroshot_templates(templates)
        names = self.data.classnames
        top = max(int(s.labels.max()) for s in self.splits.values() if s.labels is not None and len(s))
        if names is None or len(names) <= top:
            raise UserError(f"Dataset '{self.name}' has labels up to {top} but {0 if names is None else len(names)} "
                            f"class names; {task} needs a name per class. Fix the dataset's labels or class names.")
        key = (tuple(names), tuple(templates))
        if key not in self._classifiers:
            self._classifiers[key] = zeroshot_weights(self.encode_text, names, templates)
        return self._classifiers[key]

    def fit_split(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels to fit a classifier on: train + val (the evaluation split excluded)."""
        parts = [self.labelled(s, task) for s in ("train", "val") if s != self.split and len(self.splits[s])]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def classification_scores(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted_t, labels_t = torch.as_tensor(predicted), torch.as_tensor(labels)
    return {"acc1": (predicted_t == labels_t).double().mean().item(),
            "mean_per_class_recall": mean_per_class_recall(predicted_t, labels_t)}


def zeroshot_classification(embedded: EmbeddedDataset, spec: EvalSpec) -> Result:
    """acc1, acc5, mean per-class recall; with `eval.group_metrics` naming the dataset, DataComp's metrics of its
    WILDS or fairness protocol on the same scores too."""
    features, labels = embedded.labelled(embedded.split, "zeroshot_classification")
    weights = embedded.text_classifier(spec.templates, "zeroshot_classification")
    metrics, predicted = zeroshot_classify(torch.as_tensor(features), weights, torch.as_tensor(labels))
    protocol = spec.group_metrics.get(embedded.name)
    if protocol is not None:
        scores = (torch.as_tensor(features) @ weights.T).numpy()
        metadata = embedded.group_metadata(embedded.split) if PROTOCOLS[protocol].worst else None
        metrics.update(group_metrics(protocol, scores, labels, metadata, f"dataset '{embedded.name}'"))
    return metrics, predicted


def linear_probe(embedded: EmbeddedDataset, spec: EvalSpec) -> Result:
    if embedded.split == "val" or not len(embedded.splits["val"]):
        raise UserError(f"linear_probe chooses its penalty on the val split, but dataset '{embedded.name}' has none "
                        f"(or evaluates on it). Set datasets.{embedded.name}.splits.val above 0.")
    train_x, train_y = embedded.labelled("train", "linear_probe")
    val_x, val_y = embedded.labelled("val", "linear_probe")
    test_x, test_y = embedded.labelled(embedded.split, "linear_probe")
    probe, _ = probe_with_validation(train_x, train_y, val_x, val_y, spec.linear_probe.weight_decays,
                                     spec.linear_probe.max_iter, refine=spec.linear_probe.refine)
    predicted = probe.predict(test_x)
    return {**classification_scores(predicted, test_y), "weight_decay": probe.weight_decay}, torch.as_tensor(predicted)


def knn(embedded: EmbeddedDataset, spec: EvalSpec) -> Result:
    train_x, train_y = embedded.labelled("train", "knn")
    test_x, test_y = embedded.labelled(embedded.split, "knn")
    if embedded.split != "val" and len(embedded.splits["val"]):
        val_x, val_y = embedded.labelled("val", "knn")
        model, _ = select_k_on_validation(train_x, train_y, val_x, val_y, spec.knn.ks,
                                          temperature=spec.knn.temperature)
    else:
        model = KNNClassifier(k=max(spec.knn.ks), temperature=spec.knn.temperature).fit(train_x, train_y)
    predicted = model.predict(test_x)
    return {**classification_scores(predicted, test_y), "k": model.k}, torch.as_tensor(predicted)


def ncm(embedded: EmbeddedDataset, spec: EvalSpec) -> Result:
    fit_x, fit_y = embedded.fit_split("ncm")
    test_x, test_y = embedded.labelled(embedded.split, "ncm")
    predicted = NearestClassMean().fit(fit_x, fit_y).predict(test_x)
    return classification_scores(predicted, test_y), torch.as_tensor(predicted)


IMAGE_METHODS = methods_fitted_on("images", "fewshot")  # fine-tuning: fit on images, not on cached embeddings


def fewshot(embedded: EmbeddedDataset, spec: EvalSpec) -> Result:
    """`<method>@<k>shot` (mean accuracy over seeds) and `<method>@<k>shot_ci95` (95% half-width).

    Methods that tune hyperparameters get k shots per class of the val split as their validation set; the
    methods of `ZEROSHOT_START_METHODS` start from the zero-shot classifier of the suite's templates; those of
    `IMAGE_METHODS` fine-tune the model on the images of the draw (their X: row numbers into train + test)."""
    options = spec.fewshot
    train_x, train_y = embedded.labelled("train", "fewshot")
    test_x, test_y = embedded.labelled(embedded.split, "fewshot")
    val = embedded.labelled("val", "fewshot") if embedded.split != "val" and len(embedded.splits["val"]) else None
    metrics = {}
    for method in options.methods:
        starts_zeroshot = method in ZEROSHOT_START_METHODS
        weights = embedded.text_classifier(spec.templates, f"few-shot {method}") if starts_zeroshot else None
        if method in IMAGE_METHODS:
            factory = _finetune_factory(method, embedded, spec)
            n_train, n_test = len(train_y), len(test_y)
            curve = fewshot_curve(factory, np.arange(n_train)[:, None], train_y,
                                  n_train + np.arange(n_test)[:, None], test_y, options.shots, options.seeds)
        else:
            factory = fewshot_estimator(method, spec, weights, embedded.data.classnames, embedded.model)
            curve = fewshot_curve(factory, train_x, train_y, test_x, test_y, options.shots, options.seeds, val)
        for shots, point in curve.items():
            metrics[f"{method}@{shots}shot"] = point["mean"]
            metrics[f"{method}@{shots}shot_ci95"] = point["ci95"]
    return metrics, None


def fewshot_estimator(method: str, spec: EvalSpec, weights: torch.Tensor | None, classnames: list[str] | None,
                      model=None) -> Callable:
    """A function returning a fresh, unfitted estimator of a few-shot `method` on image features: `weights` are
    the zero-shot classifier (for ZEROSHOT_START_METHODS), `model` the DualEncoder whose text tower CoOp prompts."""
    options = spec.fewshot
    factories = {
        "zeroshot": lambda: ZeroShotClassifier(weights),
        "linear_probe": lambda: LinearProbe(options.weight_decay, max_iter=500),
        "linear_probe_zs": lambda: ZeroShotInitProbe(weights, weight_decay=options.weight_decay, max_iter=500),
        "knn": lambda: KNNClassifier(k=options.k, temperature=spec.knn.temperature),
        "ncm": NearestClassMean,
        "gda": lambda: GDA(zeroshot_weights=weights),
        "tip_adapter": lambda: TipAdapter(zeroshot_weights=weights),
        "tip_adapter_f": lambda: TipAdapterF(zeroshot_weights=weights),
        "coop": lambda: _coop(model, classnames),
    }
    return factories[method]


def _finetune_factory(method: str, embedded: EmbeddedDataset, spec: EvalSpec) -> Callable:
    if not isinstance(embedded.model, DualEncoder):
        raise UserError(f"Few-shot method {method} fine-tunes the model, so it needs a transferlab model (a run or "
                        f"checkpoint directory). Drop it from eval.fewshot.methods for this model.")
    size, channels = embedded.model.spec.image_size, embedded.model.spec.channels
    images = torch.cat([decode_all(embedded.splits["train"].images, size, channels, strict=True),
                        decode_all(embedded.data.images, size, channels, strict=True)])
    kind = "lora" if method == "lora" else "full"
    alpha = spec.fewshot.wise_alpha if method == "wise_ft" else None
    templates = embedded.zeroshot_templates(spec.templates)
    return lambda: FineTuneClassifier(embedded.model, images, embedded.data.classnames, templates, kind, alpha,
                                      spec.fewshot.epochs)


def _coop(model, classnames: list[str] | None):
    return CoOp(model, classnames, progress=False)


def without_text(task: str, spec: EvalSpec, model: str) -> tuple[EvalSpec | None, str | None]:
    """What of `task` a model without a text tower (an image backbone) can run: the spec to run it with (None:
    nothing) and what is skipped and why (None: nothing). Zero-shot classification, retrieval and association
    need text; so do the few-shot methods that start from the zero-shot classifier (`ZEROSHOT_START_METHODS`)."""
    reason = f"model '{model}' has no text encoder"
    if task in ("zeroshot_classification", "retrieval", "association"):
        return None, f"{task} needs a text encoder; {reason}"
    text = [m for m in spec.fewshot.methods if m in ZEROSHOT_START_METHODS] if task == "fewshot" else []
    if not text:
        return spec, None
    plural = len(text) > 1
    skipped = f"few-shot method{'s' if plural else ''} {', '.join(text)} need{'' if plural else 's'} a text encoder; " \
              f"{reason}"
    rest = [m for m in spec.fewshot.methods if m not in ZEROSHOT_START_METHODS]
    if not rest:
        return None, skipped
    return spec.model_copy(update={"fewshot": spec.fewshot.model_copy(update={"methods": rest})}), skipped


def retrieval(embedded: EmbeddedDataset, spec: EvalSpec) -> Result:
    images = embedded.embed(embedded.split)
    captions, owner = embedded.embed_captions(embedded.split)
    return retrieval_recall(images, captions, owner, ks=spec.retrieval.ks), None


def association(embedded: EmbeddedDataset, spec: EvalSpec) -> Result:
    """WinoGAViL's: choose the candidate images that fit each cue (evaluate/association.py)."""
    instances = embedded.data.instances
    with torch.no_grad():
        cues = embedded.encode_text([cue_prompt(instance.cue) for instance in instances])
    scores = jaccard_scores(embedded.embed(embedded.split), cues.cpu(), instances)
    return association_metrics(scores, np.array([len(instance.fits) for instance in instances])), None


def clustering(embedded: EmbeddedDataset, spec: EvalSpec) -> Result:
    features, labels = embedded.labelled(embedded.split, "clustering")
    metrics = cluster_metrics(features, labels, seeds=range(spec.clustering.seeds))
    return {k: v for k, v in metrics.items() if k in ("nmi", "nmi_std", "ari", "ari_std", "n_clusters")}, None


TASKS: dict[str, Callable[[EmbeddedDataset, EvalSpec], Result]] = {
    "zeroshot_classification": zeroshot_classification, "linear_probe": linear_probe, "knn": knn, "ncm": ncm,
    "fewshot": fewshot, "retrieval": retrieval, "clustering": clustering, "association": association,
}
