"""Reading the samples of webdataset tar shards one by one, as dicts, and parsing each into a `Sample`: the
careful reader every shard reader shares, which knows every oddity a shard may hold.

Members `<key>.<ext>`, consecutive members with one key forming one sample. Tar files are streamed member by
member and never extracted: a member with an absolute path, a '..' component, or that is not a regular file (a
symlink, a device) is skipped and counted as an "unsafe tar member", so a hostile shard cannot touch the file
system. Members are read into memory only when a sample needs them, and only up to a size limit, so a hostile
shard cannot exhaust it. A local uncompressed shard is read from its headers in place (data/tar/layout.py);
a compressed or remote one through `tarfile`'s stream, front to back, one request for a URL.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import mmap
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NamedTuple

from transferlab.config import WebDatasetSource
from transferlab.data.images import BadImage
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import Sample, clean_captions
from transferlab.data.tar.layout import KEY_EXT, group_samples, is_compressed, read_layout, shard_bytes
from transferlab.data.tar.limits import IMAGE_EXTS, MAX_CAPTION_CHARS, MAX_IMAGE_BYTES
from transferlab.data.tar.remote import is_url, local_path, open_url
from transferlab.errors import UserError

MAX_MEMBER_BYTES = MAX_IMAGE_BYTES  # a larger member is skipped unread
MAX_TEXT_BYTES = 4 * MAX_CAPTION_CHARS  # text members are read this far: MAX_CAPTION_CHARS characters of UTF-8
RELEASE_EVERY = 16 * 2**20  # bytes of a mapped shard read before this process lets go of them
URL_BUFFER = 4 * 2**20  # bytes a shard read from a URL is read ahead by


class ByteRange(NamedTuple):
    """Where a member's bytes lie in its (uncompressed) shard: read them later with `RangeReader.read`."""

    offset: int
    size: int


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
        laid_out = not is_url(path) and not starts_compressed(path)
    except OSError:
        laid_out = False  # the streaming reader reports it
    if laid_out:
        yield from _laid_out_samples(Path(path), bad, keep, text, locate)
        return
    sample: dict[str, bytes | str] | None = None
    with contextlib.ExitStack() as stack:  # a URL's file object is closed with the shard
        try:
            # a URL's stream through a large buffer: tarfile reads in 512-byte steps, each a round trip to
            # fsspec's event loop otherwise (0.6 ms a sample over HTTP, against 0.1 ms buffered)
            source = io.BufferedReader(stack.enter_context(open_url(str(path), sequential=True)),
                                       buffer_size=URL_BUFFER) if is_url(path) else path
            opened = _open_stream(source)
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


def starts_compressed(shard: Path | str) -> bool:
    """Whether a shard (local or URL) begins with a compressed file's magic."""
    with (open_url(str(shard), sequential=True) if is_url(shard) else open(local_path(shard), "rb")) as file:
        return is_compressed(file.read(6))


def _laid_out_samples(path: Path, bad: BadSamples, keep: Callable[[str], bool] | None, text: Collection[str],
                      locate: Collection[str]) -> Iterator[dict[str, bytes | str]]:
    """`_shard_samples` for an uncompressed local shard, from its headers read in place (data/tar/layout.py):
    the same samples, skips and errors, several times faster than tarfile's stream."""
    wanted = keep or (lambda ext: True)
    with shard_bytes(path) as data:
        layout = read_layout(data)
        samples = group_samples(layout, wanted)
        released = _release(data, len(data))  # the header walk mapped it all; a reader maps what it reads next
        for reason, count in layout.skipped.items():
            bad.report.skipped[reason] += count
        for key, members in samples:
            if members and max(m.end for m in members.values()) - released > RELEASE_EVERY:
                released = _release(data, min(m.start for m in members.values()))
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


def _release(data, upto: int) -> int:
    """Unmap this process's pages of a mapped shard before byte `upto` (the page cache keeps them): reading a
    1 GB shard front to back then holds a few MB of it in the process, not all of it. Returns where it is
    released to."""
    upto -= upto % mmap.PAGESIZE
    if isinstance(data, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and upto > 0:
        data.madvise(mmap.MADV_DONTNEED, 0, upto)
    return upto


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


def refuse_compressed(shard: str) -> None:
    if starts_compressed(shard):
        raise UserError(f"{shard} is compressed, and a streamed sample is read from its shard by byte offset, "
                        f"which a compressed file cannot give. Decompress the shards (gunzip), or set the "
                        f"dataset's `stream: false` to decode it whole into memory.")


def parse_sample(sample: dict, spec: WebDatasetSource, name: str, labelled: bool, bad: BadSamples,
                 image: Callable, lines: Counter) -> Sample | None:
    """The `Sample` a dict of `iter_samples` is under `spec` — its image (`image(member, shard)`: decoded, or where
    it lies), captions (a .json member's "captions", else the caption member, split into lines as
    `spec.caption_lines` says; `lines` counts members split), and raw label — or None when it is bad (`bad`
    counts it by reason, or raises)."""
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


def several_lines_note(report: DataReport, name: str, caption_key: str, several: int) -> None:
    """Say in the data report that `several` caption members were split into one caption per line."""
    if several:
        report.note(f"dataset '{name}': {several} caption members (.{caption_key}) hold several lines; each line is "
                    f"read as one caption (CLIP_benchmark's layout). Set `datasets.{name}.caption_lines: false` to "
                    f"keep each text whole.")


def _captions(text: str, by_line: bool | str, lines: Counter) -> list[str]:
    """The captions of a text member: one per line (as CLIP_benchmark splits them, `str.splitlines`) or the
    whole text; `lines` counts the members that `auto` split."""
    if by_line is False:
        return clean_captions(text)
    parts = clean_captions(text.splitlines())
    if len(parts) > 1 and by_line == "auto":
        lines["several"] += 1
    return parts
