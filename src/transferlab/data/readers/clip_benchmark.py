"""CLIP_benchmark's webdataset layout, read as its own exporter (`clip_benchmark.webdataset_builder`) writes it:

    <root>/classnames.txt, zeroshot_classification_templates.txt, dataset_type.txt
                                                    the dataset's own files: data/tar/dataset_files.py reads
                                                    each (dataset_type.txt absent: classification)
    <root>/<split>/nshards.txt                      n, the number of shards of the split
    <root>/<split>/0.tar ... <n-1>.tar              .webp/.png/.jpg images with .cls labels or .txt captions

Each split folder is one published split (train, test), read as webdataset shards (data/readers/webdataset.py);
a retrieval `.txt` holds an image's captions one per line. `root` may also be `hf-hub:<repo>` (e.g.
`hf-hub:clip-benchmark/wds_vtab-cifar10`): the dataset repository is fetched once through huggingface_hub into
its cache and read from there.
"""

from __future__ import annotations

from pathlib import Path

from transferlab.config import ClipBenchmarkSource, WebDatasetSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.readers.webdataset import read_webdataset
from transferlab.data.tar.dataset_files import read_dataset_type
from transferlab.errors import UserError

HUB_PREFIX = "hf-hub:"


def read_clip_benchmark(spec: ClipBenchmarkSource, name: str, size: int, channels: int) -> dict[str, ImageTextData]:
    """Every split folder of the dataset, by its name."""
    root = local_root(spec.root)
    kind = read_dataset_type(root)
    splits = {folder.name: shards for folder in sorted(root.iterdir()) if (shards := split_shards(folder))}
    if not splits:
        raise UserError(f"{root} holds no split folder with shards (<split>/nshards.txt and <split>/0.tar ...), so "
                        f"it is not in CLIP_benchmark's webdataset layout. Point `root` at the dataset's folder.")
    found = {}
    for split, shards in splits.items():
        source = WebDatasetSource(source="webdataset", shards=shards, caption_key="txt", caption_lines=True,
                                  label_key="cls" if kind == "classification" else None, templates=spec.templates,
                                  bad_samples=spec.bad_samples, stream=spec.stream)
        found[split] = read_webdataset(source, name, size, channels, source.stream)
        if kind == "retrieval" and any(not captions for captions in found[split].captions):
            raise UserError(f"{root / split}: a sample of retrieval dataset '{name}' has no caption (.txt).")
    return found


def split_shards(folder: Path) -> str | None:
    """The brace pattern of a split folder's shards, `<folder>/{0..n-1}.tar`, from its nshards.txt; None for
    a folder that is not a split."""
    count_file = folder / "nshards.txt"
    if not folder.is_dir() or not count_file.is_file():
        return None
    text = count_file.read_text(encoding="utf-8").strip()
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{count_file} holds {text!r}, not a positive number of shards. Write the count of "
                        f"{folder}/<i>.tar files in it.")
    return str(folder / f"{{0..{int(text) - 1}}}.tar") if int(text) > 1 else str(folder / "0.tar")


def local_root(root: str) -> Path:
    """The dataset's folder: `root` itself, or for `hf-hub:<repo>` the repository fetched into (or found in)
    the Hugging Face hub cache."""
    if not root.startswith(HUB_PREFIX):
        path = Path(root)
        if not path.is_dir():
            raise UserError(f"Dataset folder {path} does not exist. Set `root` to a folder in CLIP_benchmark's "
                            f"webdataset layout, or to hf-hub:clip-benchmark/wds_<name>.")
        return path
    repo = root[len(HUB_PREFIX):]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo, repo_type="dataset"))
    except LocalEntryNotFoundError:
        raise UserError(f"Dataset repository {repo} is not in the Hugging Face cache and the hub cannot be reached "
                        f"(offline, or HF_HUB_OFFLINE=1). Fetch it where there is a network: `hf download "
                        f"--repo-type dataset {repo}` (then copy the cache, ~/.cache/huggingface/hub, here), or "
                        f"download it to a folder and set `root` to that folder.") from None
    except OSError as err:  # a repository that does not exist, a network failure
        raise UserError(f"Dataset repository {repo} could not be fetched ({type(err).__name__}: {err}). Check the "
                        f"repository id (CLIP_benchmark's are clip-benchmark/wds_<name>) and the network.") from None
