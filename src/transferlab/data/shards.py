"""Read and write webdataset tar shards: members `<key>.<ext>`, consecutive members with one key forming
one sample.

Shards are how large image-text collections (LAION, DataComp, CC12M) are distributed, so reading them
lets a recipe use such data directly; writing them lets a curated collection be handed to any
webdataset-based trainer. Tar files are streamed member by member and never extracted: a member with an
absolute path, a '..' component, or that is not a regular file (a symlink, a device) is skipped and
counted as an "unsafe tar member", so a hostile shard cannot touch the file system. Members are read into
memory only when a sample needs them, and only up to a size limit, so a hostile shard cannot exhaust it.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from braceexpand import braceexpand

from transferlab.config import WebDatasetSource
from transferlab.config.schema import placeholder_template
from transferlab.data.dataset import DataReport, ImageTextData
from transferlab.data.images import BadImage, decode_image, encode_png
from transferlab.data.lazy import LazyImages
from transferlab.data.limits import CLASSNAMES, IMAGE_EXTS, MAX_IMAGE_BYTES, TEMPLATES
from transferlab.data.remote import is_url, local_path, open_url, stamp
from transferlab.data.samples import (
    MAX_CAPTION_CHARS,
    BadSamples,
    Sample,
    assemble,
    check_fits,
    clean_captions,
    progress,
)
from transferlab.data.shard_index import cached_samples
from transferlab.data.shard_paths import expand_shards
from transferlab.data.tar_layout import KEY_EXT, group_samples, is_compressed, read_layout, shard_bytes
from transferlab.errors import UserError
from transferlab.fileio import atomic_open, atomic_write

MAX_MEMBER_BYTES = MAX_IMAGE_BYTES  # a larger member is skipped unread
MAX_TEXT_BYTES = 4 * MAX_CAPTION_CHARS  # text members are read this far: MAX_CAPTION_CHARS characters of UTF-8


class ByteRange(NamedTuple):
    """Where a member's bytes lie in its (uncompressed) shard: read them later with `RangeReader.read`."""

    offset: int
    size: int


def expand_sources(pattern: str) -> list[Path | str]:
    """The shards `pattern` names: local files as `expand_shards` finds them, or URLs (a brace pattern is
    expanded; a URL's existence is checked when it is read)."""
    if not is_url(pattern):
        return expand_shards(local_path(pattern))
    return list(dict.fromkeys(braceexpand(pattern)))


def stored_bytes(pattern: str) -> float:
    """The bytes the shards `pattern` names take on disk (infinite for URLs: remote pools are streamed)."""
    sources = expand_sources(pattern)
    return float("inf") if any(is_url(s) for s in sources) else sum(Path(s).stat().st_size for s in sources)


def _beside(source: Path | str, name: str) -> Path | str:
    """The file `name` in the folder of the shard `source` (a path, or a URL)."""
    return f"{str(source).rsplit('/', 1)[0]}/{name}" if is_url(source) else Path(source).parent / name


def iter_samples(paths: list[Path | str], bad: BadSamples | None = None, keep: Callable[[str], bool] | None = None,
                 text: Collection[str] = (), locate: Collection[str] = ()) -> Iterator[dict[str, bytes | str]]:
    """Stream the samples of `paths`, one dict at a time: {"__key__": key, "__shard__": path, ext: bytes...}.

    Only the extensions `keep` accepts are read (default: all); those in `text` are read up to
    MAX_TEXT_BYTES, cut at a character boundary; those in `locate` (lower-cased) are not read but given as a
    ByteRange. Unsafe members, other members larger than MAX_MEMBER_BYTES and a second member with the same
    key and extension are skipped unread and counted in `bad.report`.
    A corrupt or truncated shard raises a UserError naming it, or, when `bad` skips, ends that shard where
    the damage starts and is counted.
    """
    bad = bad or BadSamples(None, "error", DataReport(), "sample")
    for path in paths:
        yield from _shard_samples(path if is_url(path) else Path(path), bad, keep, text, locate)


def _shard_samples(path: Path | str, bad: BadSamples, keep: Callable[[str], bool] | None,
                   text: Collection[str], locate: Collection[str]) -> Iterator[dict[str, bytes | str]]:
    try:
        laid_out = not is_url(path) and not _starts_compressed(path)
    except OSError:
        laid_out = False  # the streaming reader reports it
    if laid_out:
        yield from _laid_out_samples(Path(path), bad, keep, text, locate)
        return
    sample: dict[str, bytes | str] | None = None
    with contextlib.ExitStack() as stack:  # a URL's file object is closed with the shard
        try:
            opened = _open_stream(stack.enter_context(open_url(str(path))) if is_url(path) else path)
        except OSError as err:
            if isinstance(err, gzip.BadGzipFile):
                return _corrupt(bad, path, err)
            return bad("unreachable shard", str(path), f"the shard cannot be opened ({err})",
                       fix="Check the path or URL (and the network), or leave the shard out of `shards`")
        except (tarfile.TarError, EOFError, zlib.error) as err:
            return _corrupt(bad, path, err)
        try:
            with opened as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    name = PurePosixPath(member.name)
                    if not member.isfile() or name.is_absolute() or ".." in name.parts:
                        bad.report.skip("unsafe tar member")
                        continue
                    match = KEY_EXT.match(member.name)
                    if match is None or match[2].startswith("__"):  # no extension, or one like __key__ of ours
                        continue
                    key, ext = match.groups()
                    if sample is not None and sample["__key__"] != key:
                        yield sample
                        sample = None
                    if sample is None:
                        sample = {"__key__": key, "__shard__": str(path)}
                    if keep is not None and not keep(ext):
                        continue
                    if ext in sample:
                        bad.report.skip("duplicate tar member")
                    elif ext in text:
                        sample[ext] = _text_head(tar.extractfile(member).read(MAX_TEXT_BYTES), member.size)
                    elif member.size > MAX_MEMBER_BYTES:
                        bad.report.skip("oversized tar member")
                    elif ext.lower() in locate:
                        sample[ext] = ByteRange(member.offset_data, member.size)
                    else:
                        sample[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            return _corrupt(bad, path, err)  # the sample being read when the damage began is incomplete: drop it
        if sample is not None:
            yield sample


def _starts_compressed(shard: Path | str) -> bool:
    """Whether a shard (local or URL) begins with a compressed file's magic."""
    with (open_url(str(shard)) if is_url(shard) else open(local_path(shard), "rb")) as file:
        return is_compressed(file.read(6))


def _laid_out_samples(path: Path, bad: BadSamples, keep: Callable[[str], bool] | None, text: Collection[str],
                      locate: Collection[str]) -> Iterator[dict[str, bytes | str]]:
    """`_shard_samples` for an uncompressed local shard, from its headers read in place (data/tar_layout.py):
    the same samples, skips and errors, several times faster than tarfile's stream."""
    wanted = keep or (lambda ext: True)
    with shard_bytes(path) as data:
        layout = read_layout(data)
        samples = group_samples(layout, wanted)
        for reason, count in layout.skipped.items():
            bad.report.skipped[reason] += count
        for key, members in samples:
            sample: dict[str, bytes | str] = {"__key__": key, "__shard__": str(path)}
            for ext, member in members.items():
                if not wanted(ext):
                    continue
                if ext in text:
                    sample[ext] = _text_head(data[member.offset:member.offset + min(member.size, MAX_TEXT_BYTES)],
                                             member.size)
                elif member.size > MAX_MEMBER_BYTES:
                    bad.report.skip("oversized tar member")
                elif ext.lower() in locate:
                    sample[ext] = ByteRange(member.offset, member.size)
                else:
                    sample[ext] = data[member.offset:member.offset + member.size]
            yield sample
    if layout.corrupt:
        _corrupt(bad, path, tarfile.ReadError(layout.corrupt))


def _corrupt(bad: BadSamples, path: Path | str, err: Exception) -> None:
    bad("corrupt shard", str(path), f"the shard is corrupt or truncated ({type(err).__name__}: {err}), so the "
                                    f"samples from there on cannot be read",
        fix="Re-create or re-download the shard, or leave it out of `shards`")


def _open_stream(source: Path | BinaryIO) -> tarfile.TarFile:
    """The tar (a path, or an open file) as a stream ("r|*": any compression), never seeked or extracted."""
    try:
        if isinstance(source, Path):
            return tarfile.open(source, mode="r|*")
        return tarfile.open(fileobj=source, mode="r|*")
    except TypeError as err:  # CPython's tarfile: a gzip header cut short fails in ord(b"") with a TypeError
        raise tarfile.ReadError(f"gzip header cut short ({err})") from None


def _text_head(head: bytes, size: int) -> bytes:
    """The first MAX_TEXT_BYTES of a text member of `size` bytes, without a character the cut split."""
    if size > len(head):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as err:
            if err.end == len(head) and err.reason == "unexpected end of data":
                return head[:err.start]
    return head


def read_webdataset(spec: WebDatasetSource, name: str, size: int, channels: int, stream: bool = False) -> ImageTextData:
    """The samples of the shards `spec.shards` names: their images decoded into memory at [C, size, size], or,
    with `stream`, located (`LazyImages`: shard and byte range) and decoded later, batch by batch."""
    sources = expand_sources(spec.shards)
    bad = BadSamples(name, spec.bad_samples, DataReport(), "sample")
    known_from, known = _dataset_file(sources[0], CLASSNAMES, bad.report) if spec.label_key else (None, None)
    labelled = spec.label_key is not None  # label-only samples are kept: classification needs no caption
    text = {key for key in (spec.caption_key, spec.label_key) if key}
    wanted = {*text, "json"}
    def keep(ext: str) -> bool:
        return ext in wanted or ext.lower() in IMAGE_EXTS
    if stream:  # each shard's index is cached: a resumed or repeated run does not read the pool again
        signature = f"{sorted(wanted)}\n{sorted(text)}\n{IMAGE_EXTS}"
        samples_in = (sample for source in sources for sample in cached_samples(
            source, signature, bad, functools.partial(iter_samples, [source], bad, keep, text, IMAGE_EXTS)))
    else:
        samples_in = iter_samples(sources, bad, keep, text)
    located = Located(sources)

    def image(member: bytes | ByteRange, shard: str) -> torch.Tensor | int:
        return located.add(member, shard) if stream else decode_image(member, size, channels)
    samples, lines = [], Counter()
    for sample in progress(samples_in, Path(spec.shards).name):
        parsed = _parse_sample(sample, spec, name, labelled, bad, image, lines)
        if parsed is not None:
            samples.append(parsed)
            if not stream and len(samples) % 4096 == 0:  # the count is unknown until the last shard: check as it grows
                check_fits(2 * len(samples), channels, size, name, spec.shards, streams=True)
    if lines["several"]:
        bad.report.note(f"dataset '{name}': {lines['several']} caption members (.{spec.caption_key}) hold several "
                        f"lines; each line is read as one caption (CLIP_benchmark's layout). Set "
                        f"`datasets.{name}.caption_lines: false` to keep each text whole.")
    data = assemble(name, spec.shards, samples, bad, spec.templates, spec.label_key is not None, known,
                    str(known_from), stack=located.images if stream else torch.stack)
    if data.labels is not None and data.classnames_from is None:
        bad.report.note(f"dataset '{name}': no {CLASSNAMES} beside the shards or in their parent folder, so its "
                        f"classes are named by their integer labels; zero-shot classification needs class names. Put "
                        f"the names, one per line in label order, in {_beside(sources[0], CLASSNAMES)}.")
    if data.labels is not None:
        templates_from, written = _dataset_file(sources[0], TEMPLATES, bad.report)
        if templates_from is not None:
            data.templates = [_template(line, templates_from) for line in written if line]
    return data


def _dataset_file(shard: Path | str, file_name: str,
                  report: DataReport) -> tuple[Path | str, list[str]] | tuple[None, None]:
    """A dataset-level file (class names, templates) and its lines, read beside the shards or in their parent
    folder as in CLIP_benchmark's layout (`<dataset>/<split>/*.tar`, `<dataset>/classnames.txt`); (None,
    None) when in neither. One found in the parent folder is reported: where names come from is never a
    silent guess."""
    beside = _beside(shard, file_name)
    parent = f"{str(shard).rsplit('/', 2)[0]}/{file_name}" if is_url(shard) else Path(shard).parent.parent / file_name
    for candidate in (beside, parent):
        lines = _read_lines(candidate)
        if lines is not None:
            if candidate is parent:
                report.note(f"{file_name} read from the dataset folder above the shards: {candidate}", warn=False)
            return candidate, lines
    return None, None


def _template(line: str, origin: Path | str) -> str:
    try:
        return placeholder_template(line)
    except ValueError as err:
        raise UserError(f"{origin}: {err}. Fix that line, or delete the file to use the suite's eval.templates.") \
            from None


class Located:
    """Collects where the images of kept samples lie, in the order they are kept; `images` makes them a
    LazyImages. A shard that is compressed cannot be read by byte range: that is refused."""

    def __init__(self, sources: list[Path | str]) -> None:
        self.sources = [str(source) for source in sources]
        self.number = {source: i for i, source in enumerate(self.sources)}
        self.rows: list[tuple[int, int, int]] = []
        self.stamps: dict[int, str] = {}

    def add(self, member: ByteRange, shard: str) -> int:
        number = self.number[shard]
        if number not in self.stamps:
            self.stamps[number] = stamp(shard)
            _refuse_compressed(shard)
        self.rows.append((number, member.offset, member.size))
        return len(self.rows) - 1

    def images(self, positions: list[int]) -> LazyImages:
        rows = np.array([self.rows[i] for i in positions], dtype=np.int64).reshape(-1, 3)
        return LazyImages(list(self.sources), [self.stamps.get(i, "") for i in range(len(self.sources))],
                          rows[:, 0].astype(np.int32), rows[:, 1], rows[:, 2])


def _refuse_compressed(shard: str) -> None:
    if _starts_compressed(shard):
        raise UserError(f"{shard} is compressed, and a streamed sample is read from its shard by byte offset, "
                        f"which a compressed file cannot give. Decompress the shards (gunzip), or set the "
                        f"dataset's `stream: false` to decode it whole into memory.")


def _parse_sample(sample: dict, spec: WebDatasetSource, name: str, labelled: bool, bad: BadSamples,
                  image: Callable, lines: Counter) -> Sample | None:
    where = f"{sample['__shard__']}, sample '{sample['__key__']}'"
    ext = next((key for key in sample if key.lower() in IMAGE_EXTS), None)
    if ext is None:
        members = ", ".join(f".{key}" for key in sample if not key.startswith("__"))
        return bad("no image", where, f"no image member (.{', .'.join(IMAGE_EXTS)}) among {members}")
    captions = None
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (ValueError, RecursionError) as err:
            return bad("invalid json", where, f"the .json member is not valid JSON ({err})")
        if isinstance(meta, dict) and "captions" in meta:
            captions = clean_captions(meta["captions"])
            if captions is None:
                return bad("invalid caption", where, 'the .json member\'s "captions" is not a list of strings')
    key = spec.caption_key
    if captions is None:
        try:
            captions = _captions(sample[key].decode("utf-8"), spec.caption_lines, lines) if key in sample else []
        except UnicodeDecodeError:
            return bad("invalid caption", where, f"the .{key} member is not UTF-8 text; re-encode it as UTF-8")
    if not captions and not labelled:
        state = "empty" if key in sample else "missing"
        return bad(f"{state} caption", where, f"the caption member .{key} is {state}, and the sample has no label "
                                              f"(`datasets.{name}.label_key`) to classify it by")
    label = None
    if spec.label_key:
        try:
            label = sample.get(spec.label_key, b"").decode("utf-8").strip()
        except UnicodeDecodeError:
            return bad("invalid label", where, f"the .{spec.label_key} member is not UTF-8 text")
        if not label:
            return bad("missing label", where, f"the label member .{spec.label_key} is missing or empty")
    try:
        return Sample(image(sample[ext], sample["__shard__"]), captions, label, where)
    except BadImage as err:
        return bad(err.reason, where, f"the .{ext} member cannot be decoded: {err}")


def _captions(text: str, by_line: bool | str, lines: Counter) -> list[str]:
    """The captions of a text member: one per line (as CLIP_benchmark splits them, `str.splitlines`) or the
    whole text; `lines` counts the members that `auto` split."""
    if by_line is False:
        return clean_captions(text)
    parts = clean_captions(text.splitlines())
    if len(parts) > 1 and by_line == "auto":
        lines["several"] += 1
    return parts


def _read_lines(path: Path | str) -> list[str] | None:
    """The stripped lines of a UTF-8 text file (a URL or a path) without trailing empty ones; None if it
    cannot be read or is empty."""
    try:
        if is_url(path):
            with open_url(str(path)) as file:
                raw = file.read()
        elif Path(path).is_file():
            raw = Path(path).read_bytes()
        else:
            return None
    except OSError:
        return None
    try:
        names = [line.strip() for line in raw.decode("utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8. Re-save it as UTF-8, one entry per line.") from None
    while names and not names[-1]:
        names.pop()
    return names or None


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
        if names_path.exists() and _read_lines(names_path) != names:
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
