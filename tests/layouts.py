"""Benchmark datasets written the way their publishers' tools write them, for the readers' tests.

`write_clip_benchmark` follows `clip_benchmark.webdataset_builder.convert_dataset` / `convert_retrieval_dataset`
(clip-benchmark 1.6.2): webdataset's ShardWriter with keys "s%07d", `<split>/%d.tar`, nshards.txt, and the
dataset-level text files written with print(*lines, sep="\\n", end="\\n"). `write_load_dataset_cache` runs a
`datasets` loading script's builder offline, as `load_dataset(repo, cache_dir=...)` does, so the cache holds
what DataComp's download of its retrieval sets and WinoGAViL holds (images a script extracted stored as paths).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import webdataset
from PIL import Image


def pngs(count: int, seed: int, size: int = 12) -> list[np.ndarray]:
    """`count` random RGB images [size, size, 3] uint8."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def encode(image: np.ndarray, fmt: str = "png") -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="webp", lossless=True) if fmt == "webp" else \
        Image.fromarray(image).save(out, format=fmt)
    return out.getvalue()


def write_clip_benchmark(root: Path, splits: dict[str, list[tuple[np.ndarray, int | list[str]]]],
                         classnames: list[str] | None = None, templates: list[str] | None = None,
                         retrieval: bool = False, max_count: int = 10_000, fmt: str = "png",
                         metadata: dict[str, np.ndarray] | None = None) -> Path:
    """One dataset folder: per split, (image, label) pairs, or (image, captions) for `retrieval`; `metadata`:
    per split a row per sample, stored as its `.npy` member (np.save, as webdataset's encoder and DataComp's
    WILDS and fairness downloads store it)."""
    root.mkdir(parents=True, exist_ok=True)
    if classnames:
        with open(root / "classnames.txt", "w") as file:
            print(*classnames, sep="\n", end="\n", file=file)
    if templates:
        with open(root / "zeroshot_classification_templates.txt", "w") as file:
            print(*templates, sep="\n", end="\n", file=file)
    if retrieval:
        with open(root / "dataset_type.txt", "w") as file:
            print("retrieval", end="\n", file=file)
    for split, samples in splits.items():
        (root / split).mkdir(exist_ok=True)
        sink = webdataset.ShardWriter(str(root / split / "%d.tar"), maxcount=max_count, verbose=0)
        for index, (image, target) in enumerate(samples):
            sample = {"__key__": f"s{index:07d}", fmt: encode(image, fmt)}
            if retrieval:
                sample["txt"] = "\n".join(caption.replace("\n", r"\n") for caption in target)
            else:
                sample["cls"] = target
            if metadata is not None:
                buffer = io.BytesIO()
                np.save(buffer, metadata[split][index])
                sample["npy"] = buffer.getvalue()
            sink.write(sample)
        shards = sink.shard
        sink.close()
        with open(root / split / "nshards.txt", "w") as file:
            print(shards, end="\n", file=file)
    return root


def write_load_dataset_cache(cache_dir: Path, repo: str, features: dict, rows: list[dict], config: str = "default",
                             split: str = "test") -> Path:
    """What `datasets.load_dataset(repo, split=split, cache_dir=cache_dir)` leaves for a loading script whose
    builder has `features` and yields `rows` (an Image feature given a file path stores only the path);
    returns the build folder `<cache_dir>/<owner>___<name>/<config>/<version>/<hash>`."""
    import datasets

    class Builder(datasets.GeneratorBasedBuilder):
        VERSION = datasets.Version("1.1.0")
        BUILDER_CONFIGS = [datasets.BuilderConfig(name=config, version=VERSION)]

        def _info(self):
            return datasets.DatasetInfo(features=datasets.Features(features))

        def _split_generators(self, dl_manager):
            return [datasets.SplitGenerator(name=split, gen_kwargs={})]

        def _generate_examples(self):
            yield from enumerate(rows)

    name = repo.split("/", 1)[1]
    builder = Builder(cache_dir=str(cache_dir), dataset_name=name, repo_id=repo, config_name=config, hash="0123abcd")
    builder.download_and_prepare()
    return Path(builder.cache_dir)
