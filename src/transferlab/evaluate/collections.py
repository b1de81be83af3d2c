"""Named benchmark collections: `--suite datacomp|vtab|retrieval --data-root DIR` (or `--data-root hf-hub:OWNER`).

A collection lists its datasets by the names their benchmark reports them under, each with its kind
(classification: zero-shot by default; retrieval; association, WinoGAViL's), its main metric, DataComp's group
protocol where it has one (evaluate/group_metrics.py) and where it is published:

- CLIP_benchmark's webdatasets (its benchmark/webdatasets.txt, `wds/<name>`) are the hub repositories
  `clip-benchmark/wds_<name, / as ->`;
- DataComp's (its tasklist.yml, fetched by its download_evalsets.py) are `djghosh/wds_<task, fairness/ left
  out, / as ->_test`, except its retrieval sets and WinoGAViL (`retrieval/<name>`, `misc/<name>`): the hub
  datasets `nlphuji/<name>`, which the script loads with `datasets.load_dataset(..., cache_dir=DIR/hf_cache)`.

Under a local data root each dataset is looked for by the folder those downloads give it (`wds_<task>_test`,
`hf_cache/nlphuji___<name>`, `wds_<name>`, the plain name), in whichever format it is there (`detect_source`);
`hf-hub:OWNER` fetches each dataset OWNER publishes through the hub cache instead (offline: the cached ones).
The ones found run; the others are listed with where they come from and the command that fetches them, and
the collection's average is over what ran (DataComp's average once all 38 are there).

DataComp's list is its tasklist.yml less FairFace and UTKFace, which its 38-task average leaves out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from transferlab.config import Suite, suite_from_dict
from transferlab.data.tar.dataset_files import DATASET_TYPE
from transferlab.errors import UserError

log = logging.getLogger(__name__)

CLASSIFICATION_TASKS = ("zeroshot_classification", "linear_probe", "knn", "ncm", "fewshot", "clustering")
KIND_TASKS = {"retrieval": ["retrieval"], "association": ["association"]}
HUB = "hf-hub:"
LOADED = "nlphuji"  # the owner whose datasets DataComp loads with `datasets.load_dataset` (loading scripts)


@dataclass(frozen=True)
class Entry:
    key: str  # the name the benchmark reports, e.g. vtab/cifar100
    main: str = "acc1"
    kind: str = "classification"  # or retrieval, association
    clip_benchmark: str | None = None  # its name in CLIP_benchmark's benchmark/webdatasets.txt, if listed there
    datacomp: bool = False  # one of DataComp's tasks (tasklist.yml), published where its download script looks
    protocol: str | None = None  # DataComp's WILDS or fairness evaluator (eval.group_metrics)
    aliases: tuple[str, ...] = ()  # other folder names it is found under (another format's usual name)

    def repos(self) -> dict[str, str]:
        """The hub repositories publishing it, by owner."""
        found = {}
        if self.datacomp and self.key.startswith(("retrieval/", "misc/")):
            found[LOADED] = f"{LOADED}/{self.key.split('/', 1)[1]}"
        elif self.datacomp:
            found["djghosh"] = f"djghosh/wds_{self.key.removeprefix('fairness/').replace('/', '-')}_test"
        if self.clip_benchmark:
            found["clip-benchmark"] = f"clip-benchmark/wds_{self.clip_benchmark.replace('/', '-')}"
        return found

    def folders(self) -> list[str]:
        """Folder names it is looked for under a data root: the downloads' names first."""
        downloads = [f"hf_cache/{owner}___{repo.split('/', 1)[1]}" if owner == LOADED else repo.split("/", 1)[1]
                     for owner, repo in self.repos().items()]
        dash, short = self.key.replace("/", "-"), self.key.split("/", 1)[-1]
        plain = [f"wds_{dash}_test", f"wds_{dash}", dash, f"wds_{short}_test", f"wds_{short}", short]
        return list(dict.fromkeys([*downloads, *plain, *self.aliases]))

    def how_to_get(self, root: str) -> str:
        """Where it is published and the command that fetches each copy into `root`."""
        ways = []
        for owner, repo in self.repos().items():
            if owner == LOADED:
                ways.append(f"DataComp's download_evalsets.py (mlfoundations/datacomp) loads the hub dataset {repo}: "
                            f"`python -c \"import datasets; datasets.load_dataset('{repo}', split='test', "
                            f"cache_dir='{root}/hf_cache')\"` (a loading script, which `datasets` releases from 4.0 "
                            f"no longer run)")
            else:
                who = "DataComp's copy (mlfoundations/datacomp download_evalsets.py)" if owner == "djghosh" else \
                    "CLIP_benchmark's copy (its benchmark/webdatasets.txt)"
                ways.append(f"{who} is the hub dataset {repo}: `hf download --repo-type dataset {repo} --local-dir "
                            f"{root}/{repo.split('/', 1)[1]}`")
        return "; ".join(ways)


def _vtab(name: str, main: str = "acc1", *aliases: str, listed: str | None = None, datacomp: bool = False) -> Entry:
    return Entry(f"vtab/{name}", main, clip_benchmark=listed or f"vtab/{name}", datacomp=datacomp, aliases=aliases)


RECALL = "mean_per_class_recall"
VTAB_NATURAL = [_vtab("caltech101", RECALL), _vtab("cifar100", "acc1", "cifar-100-binary"), _vtab("dtd"),
                _vtab("flowers", RECALL), _vtab("pets", RECALL), _vtab("sun397", listed="sun397"), _vtab("svhn")]
VTAB_SPECIALIZED = [_vtab("eurosat"), _vtab("resisc45"), _vtab("pcam"), _vtab("diabetic_retinopathy")]
VTAB_STRUCTURED = [_vtab("clevr_count_all"), _vtab("clevr_closest_object_distance"), _vtab("dmlab"),
                   _vtab("kitti_closest_vehicle_distance"), _vtab("dsprites_label_x_position"),
                   _vtab("dsprites_label_orientation"), _vtab("smallnorb_label_azimuth"),
                   _vtab("smallnorb_label_elevation")]


def _dc(key: str, main: str = "acc1", listed: str | None = None, **options) -> Entry:
    return Entry(key, main, clip_benchmark=listed, datacomp=True, **options)


DATACOMP_VTAB = ["caltech101", "cifar100", "clevr_count_all", "clevr_closest_object_distance", "dtd", "eurosat",
                 "flowers", "kitti_closest_vehicle_distance", "pcam", "pets", "resisc45", "svhn"]
DATACOMP = [
    _dc("cifar10", listed="vtab/cifar10", aliases=("cifar-10-batches-bin",)),
    *[replace(e, datacomp=True) for e in VTAB_NATURAL + VTAB_SPECIALIZED + VTAB_STRUCTURED
      if e.key.split("/")[1] in DATACOMP_VTAB],
    *[_dc(name, listed=name) for name in ("sun397", "country211", "gtsrb", "imagenet1k", "imagenet_sketch",
                                          "imagenetv2", "imagenet-a", "imagenet-o", "imagenet-r", "mnist", "objectnet",
                                          "voc2007", "renderedsst2", "cars", "stl10")],
    _dc("fgvc_aircraft", RECALL, listed="fgvc_aircraft"), _dc("food101"),
    _dc("retrieval/flickr_1k_test_image_text_retrieval", "mean_recall@1", "flickr30k", kind="retrieval"),
    _dc("retrieval/mscoco_2014_5k_test_image_text_retrieval", "mean_recall@1", "mscoco_captions", kind="retrieval"),
    _dc("misc/winogavil", "jaccard_score_10-12", kind="association"),
    _dc("wilds/iwildcam", "F1-macro_all", protocol="iwildcam"),
    _dc("wilds/camelyon17", protocol="camelyon17"),
    _dc("wilds/fmow", "acc_worst_region", protocol="fmow"),
    _dc("fairness/dollar_street", "acc_top5_wg", protocol="dollar_street"),
    _dc("fairness/geode", "acc_wg", protocol="geode"),
]
COLLECTIONS = {
    "datacomp": DATACOMP,
    "vtab": VTAB_NATURAL + VTAB_SPECIALIZED + VTAB_STRUCTURED,
    "retrieval": [Entry(name, "mean_recall@1", "retrieval", clip_benchmark=name)
                  for name in ("flickr30k", "flickr8k", "mscoco_captions")],
}


def collection_suite(name: str, data_root: Path | str | None, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """The suite of collection `name` over the datasets found under `data_root` (a folder, or hf-hub:OWNER);
    `overrides` apply to it (e.g. eval.tasks=[zeroshot_classification,linear_probe] for classification)."""
    if data_root is None:
        raise UserError(f"--suite {name} is a collection of benchmark datasets; say where they are with --data-root "
                        f"DIR (a folder holding them, one folder each, e.g. DIR/wds_vtab-cifar100_test), or "
                        f"--data-root hf-hub:clip-benchmark to fetch CLIP_benchmark's copies through the hub cache.")
    entries = COLLECTIONS[name]
    found, missing = (_from_hub if str(data_root).startswith(HUB) else _from_folder)(entries, str(data_root))
    if not found:
        raise UserError(f"None of the {len(entries)} datasets of collection '{name}' is at {data_root}. "
                        + _example(missing))
    present = {e.key: e for e in entries if e.key in found}
    raw = {"name": name, "datasets": found,
           "eval": {"datasets": list(found), "tasks": ["zeroshot_classification"], "split": "test",
                    "main_metrics": {key: e.main for key, e in present.items()},
                    "group_metrics": {key: e.protocol for key, e in present.items() if e.protocol}},
           "collection": {"name": name, "size": len(entries), "missing": missing}}
    suite = suite_from_dict(raw, f"collection '{name}'", overrides)
    classify = [task for task in suite.eval.tasks if task in CLASSIFICATION_TASKS]
    per_dataset = {key: KIND_TASKS.get(e.kind, classify) for key, e in present.items()}
    return suite.model_copy(update={"eval": suite.eval.model_copy(update={"dataset_tasks": per_dataset})})


def _from_folder(entries: list[Entry], root: str) -> tuple[dict[str, dict], dict[str, str]]:
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(f"--data-root {folder} is not a folder (nor hf-hub:OWNER).")
    found, missing = {}, {}
    for entry in entries:
        where = next((folder / f for f in entry.folders() if (folder / f).is_dir()), None)
        if where is None:
            missing[entry.key] = (f"not found under {folder} (looked for {', '.join(entry.folders()[:3])}, ...); "
                                  + entry.how_to_get(str(folder)))
        else:
            found[entry.key] = detect_source(where, entry.kind)
    return found, missing


def _from_hub(entries: list[Entry], root: str) -> tuple[dict[str, dict], dict[str, str]]:
    """Each dataset OWNER publishes as CLIP_benchmark's layout, fetched into (or found in) the hub cache."""
    from transferlab.data.readers.clip_benchmark import local_root

    owner = root[len(HUB):].strip("/")
    if owner not in ("clip-benchmark", "djghosh"):
        raise UserError(f"--data-root {root}: the hub owners whose datasets a collection fetches are clip-benchmark "
                        f"(CLIP_benchmark's webdatasets) and djghosh (DataComp's); use hf-hub:clip-benchmark or "
                        f"hf-hub:djghosh, or a folder.")
    found, missing = {}, {}
    for entry in entries:
        repo = entry.repos().get(owner)
        if repo is None:
            missing[entry.key] = f"not published by {owner}; " + entry.how_to_get("DIR")
            continue
        try:
            local_root(HUB + repo)
        except UserError as err:  # offline and not cached, or not fetched
            missing[entry.key] = str(err)
            continue
        found[entry.key] = {"source": "clip-benchmark", "root": HUB + repo}
    return found, missing


def _example(missing: dict[str, str]) -> str:
    """One dataset's reason for being missing, one it could be found by (not one its owner does not publish)."""
    key = next((k for k, why in missing.items() if not why.startswith("not published")), next(iter(missing)))
    return f"For example {key}: {missing[key]}."


def collection_scores(tasks: list[dict]) -> dict[str, tuple[str, str, float]]:
    """(task, main metric, value) per dataset of a results.json's tasks: the first task of each dataset that
    has its main metric (a classification dataset's first task, zero-shot unless eval.tasks says otherwise), so
    an average over them has one number per dataset."""
    scores: dict[str, tuple[str, str, float]] = {}
    for t in tasks:
        value = (t.get("metrics") or {}).get(t.get("main"))
        if value is not None:
            scores.setdefault(str(t["dataset"]), (str(t["task"]), str(t["main"]), float(value)))
    return scores


def detect_source(folder: Path, kind: str) -> dict:
    """The data source of a dataset folder, by what is in it: CLIP_benchmark's layout (split folders with
    nshards.txt), a `datasets` save, cache or parquet files, CIFAR's binary batches, else an ImageFolder tree;
    WinoGAViL (kind association) is read from any `datasets` layout."""
    def has(*patterns: str) -> bool:
        return any(next(folder.glob(pattern), None) is not None for pattern in patterns)
    if kind == "association":
        source = {"source": "winogavil"}
    elif has(DATASET_TYPE, "*/nshards.txt"):
        source = {"source": "clip-benchmark"}
    elif has("dataset_dict.json", "state.json", "*.parquet", "*/*.parquet", "*/state.json", "**/dataset_info.json"):
        source = {"source": "hf-datasets", **({"label_column": None, "caption_column": "caption"}
                                              if kind == "retrieval" else {})}
    elif has("*.bin", "*/*.bin"):
        source = {"source": "cifar"}
    else:
        source = {"source": "imagefolder"}
    log.info("%s: read as %s", folder, source["source"])
    return {**source, "root": str(folder)}
