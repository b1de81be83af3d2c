"""Named benchmark collections: `--suite datacomp|vtab|retrieval --data-root DIR`.

A collection lists its datasets by the names their benchmark reports them under, each with its kind
(classification: zero-shot by default; retrieval) and main metric. Each dataset is looked for under the
data root by the folder names the usual downloaders give it (CLIP_benchmark's `wds_<name>`, DataComp's
`wds_<name>_test`, the plain name), in whichever format it is there (`detect_source`); class names and
templates come from the dataset's own files. The ones found run; the others are listed with how to get
them, and the collection's average is over what ran (DataComp's average once all 38 are there).

DataComp's list is its tasklist.yml (mlfoundations/datacomp) less FairFace and UTKFace, which its
38-task average leaves out. Five of its tasks score a metric transferlab does not compute yet (WinoGAViL's
Jaccard score, iWildCam's macro F1, worst-group accuracies over FMoW regions, Dollar Street incomes and
GeoDE regions): they are listed as not run, with that reason, rather than scored another way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transferlab.config import Suite, suite_from_dict
from transferlab.errors import UserError

log = logging.getLogger(__name__)

CLASSIFICATION_TASKS = ("zeroshot_classification", "linear_probe", "knn", "ncm", "fewshot", "clustering")
HOW_TO_GET = ("download it in CLIP_benchmark's webdataset layout, e.g. `huggingface-cli download --repo-type dataset "
              "clip-benchmark/wds_{dash} --local-dir {root}/wds_{dash}`")


@dataclass(frozen=True)
class Entry:
    key: str  # the name the benchmark reports, e.g. vtab/cifar100
    main: str = "acc1"
    kind: str = "classification"
    aliases: tuple[str, ...] = ()
    unsupported: str | None = None  # why transferlab cannot score the benchmark's main metric

    @property
    def dash(self) -> str:
        return self.key.replace("/", "-")

    def folders(self) -> list[str]:
        short = self.key.split("/", 1)[-1]
        names = [self.dash, f"wds_{self.dash}", f"wds_{self.dash}_test", short, f"wds_{short}", f"wds_{short}_test"]
        return list(dict.fromkeys([*names, *self.aliases]))


def _vtab(name: str, main: str = "acc1", *aliases: str) -> Entry:
    return Entry(f"vtab/{name}", main, aliases=aliases)


RECALL = "mean_per_class_recall"
WORST = "a worst-group accuracy over DataComp's group metadata"
FLICKR = Entry("flickr30k", "mean_recall@1", "retrieval", ("flickr_1k_test_image_text_retrieval",))
MSCOCO = Entry("mscoco_captions", "mean_recall@1", "retrieval", ("mscoco_2014_5k_test_image_text_retrieval",))
VTAB_NATURAL = [_vtab("caltech101", RECALL), _vtab("cifar100", "acc1", "cifar-100-binary"), _vtab("dtd"),
                _vtab("flowers", RECALL), _vtab("pets", RECALL), _vtab("sun397", "acc1", "sun397"), _vtab("svhn")]
VTAB_SPECIALIZED = [_vtab("eurosat"), _vtab("resisc45"), _vtab("pcam"), _vtab("diabetic_retinopathy")]
VTAB_STRUCTURED = [_vtab("clevr_count_all"), _vtab("clevr_closest_object_distance"), _vtab("dmlab"),
                   _vtab("kitti_closest_vehicle_distance"), _vtab("dsprites_label_x_position"),
                   _vtab("dsprites_label_orientation"), _vtab("smallnorb_label_azimuth"),
                   _vtab("smallnorb_label_elevation")]
DATACOMP = [
    Entry("cifar10", aliases=("vtab-cifar10", "wds_vtab-cifar10", "cifar-10-batches-bin")),
    *[entry for entry in VTAB_NATURAL if entry.key != "vtab/sun397"],
    Entry("sun397"), Entry("country211"), Entry("fgvc_aircraft", RECALL), Entry("food101"), Entry("gtsrb"),
    Entry("imagenet1k"), Entry("imagenet_sketch"), Entry("imagenetv2"), Entry("imagenet-a"), Entry("imagenet-o"),
    Entry("imagenet-r"), Entry("mnist"), Entry("objectnet"), Entry("voc2007"), Entry("renderedsst2"),
    Entry("cars"), Entry("stl10"), _vtab("clevr_count_all"), _vtab("clevr_closest_object_distance"),
    _vtab("eurosat"), _vtab("kitti_closest_vehicle_distance"), _vtab("pcam"), _vtab("resisc45"),
    Entry("retrieval/flickr_1k_test_image_text_retrieval", "mean_recall@1", "retrieval",
          ("flickr30k", "wds_flickr30k")),
    Entry("retrieval/mscoco_2014_5k_test_image_text_retrieval", "mean_recall@1", "retrieval",
          ("mscoco_captions", "wds_mscoco_captions")),
    Entry("misc/winogavil", "jaccard_score_10-12", "retrieval", unsupported="WinoGAViL's Jaccard score"),
    Entry("wilds/iwildcam", "F1-macro_all", unsupported="a macro F1 over iWildCam's classes"),
    Entry("wilds/camelyon17"),
    Entry("wilds/fmow", "acc_worst_region", unsupported=WORST),
    Entry("fairness/dollar_street", "acc_top5_wg", unsupported=WORST),
    Entry("fairness/geode", "acc_wg", unsupported=WORST),
]
COLLECTIONS = {
    "datacomp": DATACOMP,
    "vtab": VTAB_NATURAL + VTAB_SPECIALIZED + VTAB_STRUCTURED,
    "retrieval": [FLICKR, Entry("flickr8k", "mean_recall@1", "retrieval"), MSCOCO],
}


def collection_suite(name: str, data_root: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """The suite of collection `name` over the datasets found under `data_root`; `overrides` apply to it
    (e.g. eval.tasks=[zeroshot_classification,linear_probe] for the classification datasets)."""
    if data_root is None:
        raise UserError(f"--suite {name} is a collection of benchmark datasets; say where they are with --data-root "
                        f"DIR (a folder holding them, one folder each, e.g. DIR/wds_vtab-cifar100).")
    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"--data-root {root} is not a folder.")
    datasets, tasks, mains, missing = {}, {}, {}, {}
    for entry in COLLECTIONS[name]:
        folder = next((root / f for f in entry.folders() if (root / f).is_dir()), None)
        if entry.unsupported:
            missing[entry.key] = f"not run: its main metric ({entry.main}) is {entry.unsupported}, which transferlab " \
                                 f"does not compute yet"
        elif folder is None:
            missing[entry.key] = f"not found under {root} (looked for {', '.join(entry.folders()[:3])}, ...); " \
                                 + HOW_TO_GET.format(dash=entry.dash, root=root)
        else:
            datasets[entry.key] = detect_source(folder, entry.kind)
            tasks[entry.key] = ["retrieval"] if entry.kind == "retrieval" else None
            mains[entry.key] = entry.main
    if not datasets:
        first = COLLECTIONS[name][0]
        raise UserError(f"None of the {len(COLLECTIONS[name])} datasets of collection '{name}' is under {root}. Each "
                        f"is looked for as a folder named like wds_<name> (e.g. {first.folders()[1]}); "
                        + HOW_TO_GET.format(dash=first.dash, root=root) + ".")
    raw = {"name": name, "datasets": datasets,
           "eval": {"datasets": list(datasets), "tasks": ["zeroshot_classification"], "split": "test",
                    "main_metrics": mains},
           "collection": {"name": name, "size": len(COLLECTIONS[name]), "missing": missing}}
    suite = suite_from_dict(raw, f"collection '{name}'", overrides)
    classify = [task for task in suite.eval.tasks if task in CLASSIFICATION_TASKS]
    per_dataset = {key: value or classify for key, value in tasks.items()}
    return suite.model_copy(update={"eval": suite.eval.model_copy(update={"dataset_tasks": per_dataset})})


def detect_source(folder: Path, kind: str) -> dict:
    """The data source of a dataset folder, by what is in it: CLIP_benchmark's layout (split folders with
    nshards.txt), a `datasets` save or parquet files, CIFAR's binary batches, else an ImageFolder tree."""
    def has(*patterns: str) -> bool:
        return any(next(folder.glob(pattern), None) is not None for pattern in patterns)
    if has("dataset_type.txt", "*/nshards.txt"):
        source = {"source": "clip-benchmark"}
    elif has("dataset_dict.json", "state.json", "*.parquet", "*/*.parquet", "*/state.json"):
        source = {"source": "hf-datasets", **({"label_column": None, "caption_column": "caption"}
                                              if kind == "retrieval" else {})}
    elif has("*.bin", "*/*.bin"):
        source = {"source": "cifar"}
    else:
        source = {"source": "imagefolder"}
    log.info("%s: read as %s", folder, source["source"])
    return {**source, "root": str(folder)}
