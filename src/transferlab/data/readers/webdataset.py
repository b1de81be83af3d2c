"""webdataset tar shards as a dataset, and a dataset written as shards.

Shards are how large image-text collections (LAION, DataComp, CC12M) are distributed, so reading them lets a
recipe use such data directly; writing them lets a curated collection be handed to any webdataset-based
trainer. Reading goes through the pool's index (data/stream/pool_index.py: where each sample's image lies, its
captions and label; built once per node and cached): a streamed dataset keeps the index and decodes images
batch by batch, one held in memory decodes every image from it once. Compressed shards (which have no byte
ranges) and a remote pool held in memory are read front to back instead, by the reader both share
(data/stream/shard_samples.py).

`stream: auto` streams a remote pool, and a local one whose images, decoded at the model's size, would take
more than STREAM_ABOVE_BYTES — decided from the index's sample count, before any image is decoded.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import BinaryIO

import torch

from transferlab.config import WebDatasetSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.images import BadImage, decode_image, encode_png
from transferlab.data.memory import STREAM_ABOVE_BYTES, check_fits
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import assemble, no_samples, progress
from transferlab.data.stream.loader import decode_each
from transferlab.data.stream.pool_index import pool_index
from transferlab.data.stream.shard_samples import iter_samples, parse_sample, several_lines_note, starts_compressed
from transferlab.data.tar.dataset_files import CLASSNAMES, beside, read_classnames, read_lines, read_templates
from transferlab.data.tar.limits import IMAGE_EXTS
from transferlab.data.tar.paths import expand_sources
from transferlab.data.tar.remote import is_url
from transferlab.errors import UserError
from transferlab.fileio import atomic_open, atomic_write


def read_webdataset(spec: WebDatasetSource, name: str, size: int, channels: int,
                    stream: bool | str = False) -> ImageTextData:
    """The samples of the shards `spec.shards` names: with `stream`, located through the pool's index and decoded
    later, batch by batch; else their images decoded into memory at [C, size, size]; "auto" decides (above)."""
    sources = expand_sources(spec.shards)
    report = DataReport()
    known_from, known = read_classnames(sources[0], report) if spec.label_key else (None, None)
    remote = any(is_url(source) for source in sources)
    if stream == "auto" and remote:
        stream = True
    if stream is not True and (remote or any(_compressed(source) for source in sources)):
        data = _read_front_to_back(spec, name, size, channels, sources, report, known, known_from)
    else:
        data = pool_index(spec, name, sources, known, str(known_from or "")).dataset(name, spec, report)
        if stream == "auto":
            stream = len(data) * channels * size * size > STREAM_ABOVE_BYTES
        if not stream:
            data = _decoded(data, spec, name, size, channels)
    if data.labels is not None and data.classnames_from is None:
        report.note(f"dataset '{name}': no {CLASSNAMES} beside the shards or in their parent folder, so its classes "
                    f"are named by their integer labels; zero-shot classification needs class names. Put the "
                    f"names, one per line in label order, in {beside(sources[0], CLASSNAMES)}.")
    if data.labels is not None:
        templates_from, templates = read_templates(sources[0], report)
        if templates_from is not None:
            data.templates = templates
    return data


def _compressed(source: str) -> bool:
    try:
        return starts_compressed(source)
    except OSError:
        return False  # unreadable: the index's reader counts it, or refuses it


def _decoded(data: ImageTextData, spec: WebDatasetSource, name: str, size: int, channels: int) -> ImageTextData:
    """A streamed dataset with every image decoded into memory; an image that cannot be decoded is counted and
    left out (`bad_samples: skip`) or stops the reading, naming it."""
    check_fits(len(data), channels, size, name, spec.shards, streams=True, copies=2)
    decoded = decode_each(data.images, size, channels)
    bad = BadSamples(name, spec.bad_samples, data.report, "sample")
    kept = []
    for i, image in enumerate(decoded):
        if isinstance(image, BadImage):
            bad(image.reason, data.images.where(i), f"the image cannot be decoded: {image}")
        else:
            kept.append(i)
    data.report.kept = len(kept)
    if not kept:
        raise no_samples(name, spec.shards, data.report)
    images = torch.stack([decoded[i] for i in kept]) if kept else torch.empty(0, channels, size, size,
                                                                               dtype=torch.uint8)
    whole = len(kept) == len(data)
    part = data if whole else data.subset(torch.tensor(kept, dtype=torch.long))
    return ImageTextData(name=name, images=images, captions=list(part.captions), labels=part.labels,
                         classnames=part.classnames, classnames_from=part.classnames_from, report=data.report)


def _read_front_to_back(spec: WebDatasetSource, name: str, size: int, channels: int, sources: list[str],
                        report: DataReport, known: list[str] | None, known_from) -> ImageTextData:
    """Every sample of the shards decoded into memory as the shards are read, front to back (compressed shards,
    remote pools held in memory)."""
    bad = BadSamples(name, spec.bad_samples, report, "sample")
    labelled = spec.label_key is not None  # label-only samples are kept: classification needs no caption
    text = {key for key in (spec.caption_key, spec.label_key) if key}
    wanted = {*text, "json"}

    def keep(ext: str) -> bool:
        return ext in wanted or ext.lower() in IMAGE_EXTS

    def image(member: bytes, shard: str) -> torch.Tensor:
        return decode_image(member, size, channels)
    samples, lines = [], Counter()
    for sample in progress(iter_samples(sources, bad, keep, text), Path(spec.shards).name):
        parsed = parse_sample(sample, spec, name, labelled, bad, image, lines)
        if parsed is not None:
            samples.append(parsed)
            if len(samples) % 4096 == 0:  # the count is unknown until the last shard: check as it grows
                check_fits(len(samples), channels, size, name, spec.shards, streams=True, copies=2, more=True)
    several_lines_note(report, name, spec.caption_key, lines["several"])
    return assemble(name, spec.shards, samples, bad, spec.templates, labelled, known, str(known_from))


def write_webdataset(data: ImageTextData, pattern: str | Path, samples_per_shard: int = 1000) -> list[Path]:
    """Write `data` as shards of `samples_per_shard` samples and return their paths.

    `pattern` holds a %-placeholder for the shard number, e.g. "out/shard-%06d.tar". Without one,
    "-%06d.tar" replaces a ".tar" suffix or is appended ("out/train.tar" -> "out/train-000000.tar"), and an
    existing directory gets "shard-%06d.tar" inside it. Each sample `<key>` (its zero-padded index) gets
    `<key>.png`, `<key>.txt` (first caption), `<key>.json` ({"captions": all captions}) and, with labels,
    `<key>.cls` (the class index). Class names go to classnames.txt beside the shards. Existing files are
    never overwritten, and each shard appears under its name only once complete.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")
    form = _shard_form(pattern)
    if not len(data):
        return []
    count = -(-len(data) // samples_per_shard)
    paths = [Path(form % i) for i in range(count)]
    names = data.classnames
    names_path = paths[0].parent / CLASSNAMES
    for path in paths:
        if path.exists():
            raise UserError(f"{path} already exists, and shards are never overwritten. Choose another output "
                            f"path, or delete the file first.")
    if names is not None:
        if any("\n" in classname or "\r" in classname for classname in names):
            raise UserError(f"A class name of '{data.name}' holds a line break, which {CLASSNAMES} (one name per "
                            f"line) cannot store. Remove line breaks from the labels.")
        if names_path.exists() and read_lines(names_path) != names:
            raise UserError(f"{names_path} already exists with other class names. Write the shards to another "
                            f"folder, or delete that file first.")
    width = max(6, len(str(len(data) - 1)))
    for shard, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        indices = range(shard * samples_per_shard, min(len(data), (shard + 1) * samples_per_shard))
        with atomic_open(path) as file:
            _write_shard(file, data, indices, width)
    if names is not None and not names_path.exists():
        atomic_write(names_path, "".join(f"{n}\n" for n in names))
    return paths


def _shard_form(pattern: str | Path) -> str:
    text = str(pattern)
    if "%" not in text:
        path = Path(text)
        if path.is_dir():
            text = str(path / "shard-%06d.tar")
        else:
            text = (text[:-4] if text.endswith(".tar") else text) + "-%06d.tar"
    try:
        first, second = text % 0, text % 1
    except (TypeError, ValueError) as err:
        first = second = f"not formattable ({err})"
    if first == second:
        raise UserError(f"Output pattern '{pattern}' needs exactly one %-placeholder for the shard number, such as "
                        f"out/shard-%06d.tar (write a literal % as %%).")
    return text


def _write_shard(file: BinaryIO, data: ImageTextData, indices: range, width: int) -> None:
    with tarfile.open(fileobj=file, mode="w") as tar:
        for i in indices:
            key = f"{i:0{width}d}"
            captions = data.captions[i]
            members = {"png": encode_png(data.images[i]),
                       "txt": (captions[0] if captions else "").encode("utf-8"),
                       "json": json.dumps({"captions": captions}, ensure_ascii=False).encode("utf-8")}
            if data.labels is not None:
                members["cls"] = str(int(data.labels[i])).encode("utf-8")
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                # fixed metadata, so the same data always gives byte-identical shards
                info.size, info.mode, info.mtime = len(payload), 0o644, 0
                tar.addfile(info, io.BytesIO(payload))
