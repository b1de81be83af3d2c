"""Hostile input: a folder + CSV data set and a webdataset shard set in which 5% of the samples are each
kind of bad input. With `bad_samples: skip` every bad sample is counted under its reason, decodable images
of another mode or size are converted and kept, and the rest trains; with the default `error` the first bad
sample stops with a message naming its file and line or tar member; with nothing usable left, a clear error.
A property test feeds the tar reader arbitrary members."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import tarfile
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.data.tars import write_tar
from transferlab.config import TableSource, WebDatasetSource, load_recipe
from transferlab.data.readers.sources import load_dataset
from transferlab.data.readers.table import read_image_table
from transferlab.data.readers.webdataset import read_webdataset
from transferlab.data.stream.shard_samples import iter_samples
from transferlab.data.tar.limits import MAX_CAPTION_CHARS
from transferlab.errors import UserError
from transferlab.train.loop import pretrain

N, SHARE = 200, 10  # 200 samples, 5% of them of each hostile kind
SIZE = 28
KEPT = ["wrong mode", "wrong size", "huge caption"]  # hostile, but usable: converted, resized or truncated
FOLDER_REASONS = {"truncated image": "truncated image", "zero-byte image": "empty image",
                  "not an image": "undecodable image", "empty caption": "empty caption",
                  "missing image": "missing image", "path outside": "path outside the image folder",
                  "malformed row": "malformed row"}
SHARD_REASONS = {"truncated image": "truncated image", "zero-byte image": "empty image",
                 "not an image": "undecodable image", "invalid utf-8 caption": "invalid caption",
                 "empty caption": "empty caption", "missing image": "no image",
                 "absolute member": "unsafe tar member", "dotdot member": "unsafe tar member"}
MEMBERS_PER_UNSAFE_SAMPLE = 2  # its image and its caption, each counted as an unsafe tar member
SENTINEL = f"/tmp/transferlab-hostile-{uuid.uuid4().hex}"  # absolute member names point here: it must not appear


# ---- images of every kind, as encoded bytes

def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def noise(i: int, size: int = 8) -> bytes:
    pixels = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return encoded(Image.fromarray(pixels))


def wrong_mode(i: int) -> tuple[bytes, tuple[int, int, int], str]:
    """An image of one colour in a mode other than RGB, its RGB colour, and a suitable file extension."""
    grey16 = Image.fromarray(np.full((8, 8), 128 * 257, dtype=np.uint16))  # I;16, a 16-bit scan
    kinds = [(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", (0, 255, 255)),
             (Image.new("RGB", (8, 8), (204, 51, 102)).convert("P"), "PNG", (204, 51, 102)),
             (grey16, "PNG", (128, 128, 128)),
             (Image.new("RGBA", (8, 8), (255, 0, 0, 100)), "PNG", (255, 0, 0)),
             (Image.new("1", (8, 8), 1), "TIFF", (255, 255, 255))]
    img, fmt, rgb = kinds[i % len(kinds)]
    return encoded(img, fmt), rgb, {"JPEG": "jpg", "PNG": "png", "TIFF": "tif"}[fmt]


def wrong_size(i: int) -> tuple[bytes, tuple[int, int, int]]:
    sizes = [(1, 1), (300, 7), (7, 300), (64, 64), (3, 2000)]
    rgb = (10, 200, 30)
    return encoded(Image.new("RGB", sizes[i % len(sizes)], rgb)), rgb


def truncated(i: int) -> bytes:
    data = noise(i, 28)
    return data[: len(data) * 2 // 3]  # the header survives, the pixel data ends early


HUGE = "word " * 200_000  # a 1 MB caption


def caption(kind: str, i: int) -> str:
    return {"empty caption": "   ", "huge caption": f"huge {i} {HUGE}"}.get(kind, f"{kind} {i}")


def layout(hostile: list[str], good: int = N, seed: int = 0) -> list[str]:
    """The kind of each sample: SHARE of each hostile kind, the rest good, interleaved."""
    kinds = [kind for kind in hostile for _ in range(SHARE)]
    kinds += ["good"] * (good - len(kinds))
    random.Random(seed).shuffle(kinds)
    return kinds


# ---- a folder of images listed in a CSV

def folder_dataset(root: Path, kinds: list[str]) -> Path:
    """Images in root/images, the table root/images/captions.csv: one row per sample, of the given kinds."""
    images = root / "images"
    images.mkdir(parents=True)
    outside = root / "outside.png"
    outside.write_bytes(noise(999))  # readable, so reading it would show up as one more kept sample
    rows = [["image", "caption"]]
    for i, kind in enumerate(kinds):
        name, payload = f"{i:03d}.png", noise(i)
        if kind == "wrong mode":
            payload, _, ext = wrong_mode(i)
            name = f"{i:03d}.{ext}"
        elif kind == "wrong size":
            payload = wrong_size(i)[0]
        elif kind == "truncated image":
            payload = truncated(i)
        elif kind == "zero-byte image":
            payload = b""
        elif kind == "not an image":
            payload = b"<html>404 Not Found</html>\n"
        if kind == "path outside":
            name = "../outside.png" if i % 2 else str(outside)
        elif kind != "missing image":
            (images / name).write_bytes(payload)
        row = [name, caption(kind, i)]
        rows.append(row + ["an unquoted, comma"] if kind == "malformed row" else row)
    table = images / "captions.csv"
    with open(table, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    return table


def read_csv(table: Path, channels: int = 3, **options):
    return read_image_table(TableSource(source="table", table=table, **options), "hostile", SIZE, channels)


# ---- webdataset shards

def shard_members(i: int, kind: str) -> list[tuple[str, bytes]]:
    key = f"{i:06d}"
    image = ("png", noise(i))
    if kind == "wrong mode":
        payload, _, ext = wrong_mode(i)
        image = (ext, payload)
    elif kind == "wrong size":
        image = ("png", wrong_size(i)[0])
    elif kind == "truncated image":
        image = ("png", truncated(i))
    elif kind == "zero-byte image":
        image = ("png", b"")
    elif kind == "not an image":
        image = ("jpg", b"<html>404 Not Found</html>\n")
    text = b"caf\xe9 " + key.encode() if kind == "invalid utf-8 caption" else caption(kind, i).encode()
    members = [(f"{key}.{image[0]}", image[1]), (f"{key}.txt", text)]
    if kind == "missing image":
        members = members[1:]
    prefix = {"absolute member": f"{SENTINEL}/", "dotdot member": "../../"}.get(kind, "")
    return [(prefix + name, payload) for name, payload in members]


def shard_dataset(root: Path, kinds: list[str], shards: int = 2) -> str:
    """`kinds` written as `shards` tar files; the brace pattern that names them."""
    root.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(kinds) // shards)
    for shard in range(shards):
        members = [m for i in range(shard * per_shard, min(len(kinds), (shard + 1) * per_shard))
                   for m in shard_members(i, kinds[i])]
        write_tar(root / f"shard-{shard:06d}.tar", members)
    return str(root / f"shard-{{000000..{shards - 1:06d}}}.tar")


def read_shards(pattern: str, channels: int = 3, **options):
    return read_webdataset(WebDatasetSource(source="webdataset", shards=pattern, **options), "hostile", SIZE,
                           channels)


# ---- skip: every bad sample counted under its reason, the usable ones kept and converted

def expected_report(kinds: list[str], reasons: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in kinds:
        if kind in reasons:
            weight = MEMBERS_PER_UNSAFE_SAMPLE if reasons[kind] == "unsafe tar member" else 1
            counts[reasons[kind]] = counts.get(reasons[kind], 0) + weight
    return counts


def check_kept(data, kinds: list[str]) -> None:
    """The good and the usable hostile samples are all there, converted to RGB at SIZE, captions cut."""
    by_caption = {captions[0].split(" word")[0]: i for i, captions in enumerate(data.captions)}
    kept = [i for i, kind in enumerate(kinds) if kind in ["good", *KEPT]]
    assert data.report.kept == len(data) == len(kept)
    assert data.images.shape == (len(kept), 3, SIZE, SIZE)
    for i in kept:
        kind = kinds[i]
        image = data.images[by_caption[f"huge {i}" if kind == "huge caption" else f"{kind} {i}"]]
        if kind == "wrong mode" or kind == "wrong size":
            rgb = (wrong_mode(i) if kind == "wrong mode" else wrong_size(i))[1]
            centre = image[:, SIZE // 2, SIZE // 2].int()
            assert (centre - torch.tensor(rgb)).abs().max() <= 3, (i, kind, centre, rgb)
    huge = [c for captions in data.captions for c in captions if c.startswith("huge")]
    assert len(huge) == SHARE and all(len(c) == MAX_CAPTION_CHARS for c in huge)


def test_hostile_folder_is_skipped_and_counted_by_reason(tmp_path):
    kinds = layout([*FOLDER_REASONS, *KEPT])
    data = read_csv(folder_dataset(tmp_path, kinds), bad_samples="skip")
    assert data.report.skipped == expected_report(kinds, FOLDER_REASONS)
    assert data.report.skipped == {reason: SHARE for reason in FOLDER_REASONS.values()}
    check_kept(data, kinds)


def test_hostile_shards_are_skipped_and_counted_by_reason_and_nothing_escapes(tmp_path):
    kinds = layout([*SHARD_REASONS, *KEPT])
    pattern = shard_dataset(tmp_path / "shards", kinds)
    before = sorted(tmp_path.rglob("*"))
    data = read_shards(pattern, bad_samples="skip")
    assert data.report.skipped == expected_report(kinds, SHARD_REASONS)
    assert data.report.skipped["unsafe tar member"] == 2 * SHARE * MEMBERS_PER_UNSAFE_SAMPLE
    check_kept(data, kinds)
    assert sorted(tmp_path.rglob("*")) == before and not Path(SENTINEL).exists()


def test_a_caption_member_is_read_only_as_far_as_a_caption_is_kept(tmp_path):
    # 2 MB of a three-byte character, cut after 40,000 bytes: the cut must not split a character
    path = write_tar(tmp_path / "t.tar", [("a.png", noise(0)), ("a.txt", "€".encode() * 700_000)])
    [sample] = iter_samples([path], text={"txt"})
    assert len(sample["txt"]) < 4 * MAX_CAPTION_CHARS and sample["txt"].decode("utf-8") == "€" * 13_333
    assert read_shards(str(path)).captions == [["€" * MAX_CAPTION_CHARS]]


def test_invalid_utf8_in_a_table_stops_with_its_line_even_when_skipping(tmp_path):
    table = folder_dataset(tmp_path, layout([], good=5))
    lines = table.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"good", b"caf\xe9")
    table.write_bytes(b"\n".join(lines))
    with pytest.raises(UserError, match=r"captions\.csv line 4 is not valid UTF-8 \(byte 0xe9\)\. Re-save"):
        read_csv(table, bad_samples="skip")


def test_a_column_named_twice_is_refused(tmp_path):
    table = folder_dataset(tmp_path, layout([], good=1))
    table.write_text("image,caption,caption\n000.png,one,two\n")
    with pytest.raises(UserError, match=r"names the column 'caption' more than once.*its own name"):
        read_csv(table)


def test_an_integer_label_too_long_for_int_is_a_class_name(tmp_path):
    # int() refuses strings of more than 4,300 digits; such a label must not crash the reader
    label = "7" * 5000
    path = write_tar(tmp_path / "t.tar", [("a.png", noise(0)), ("a.txt", b"x"), ("a.cls", label.encode()),
                                          ("b.png", noise(1)), ("b.txt", b"y"), ("b.cls", b"3")])
    assert read_shards(str(path), label_key="cls").classnames == ["3", label]
    (tmp_path / "classnames.txt").write_text("zero\none\n")
    with pytest.raises(UserError, match="is neither a class index 0..1 nor a class name"):
        read_shards(str(path), label_key="cls")


def test_an_oversized_member_is_skipped_unread(tmp_path, monkeypatch):
    from transferlab.data.stream import shard_samples, shard_scan

    for module in (shard_samples, shard_scan):  # the careful reader's limit, and the one that sends shards to it
        monkeypatch.setattr(module, "MAX_MEMBER_BYTES", 100)
    path = write_tar(tmp_path / "t.tar", [("a.png", noise(0, 28)), ("a.txt", b"big"), ("a.npy", b"0" * 10**6),
                                          ("b.png", noise(1, 2)), ("b.txt", b"small")])
    data = read_shards(str(path), bad_samples="skip")
    assert data.captions == [["small"]] and data.report.skipped == {"oversized tar member": 1, "no image": 1}


def test_reserved_and_duplicate_members(tmp_path):
    path = write_tar(tmp_path / "t.tar", [("a.png", noise(0)), ("a.__key__", b"zz"), ("a.txt", b"first"),
                                          ("a.txt", b"second"), ("b.png", noise(1)), ("b.txt", b"b")])
    data = read_shards(str(path))
    assert data.captions == [["first"], ["b"]] and data.report.skipped == {"duplicate tar member": 1}


# ---- error: the first bad sample stops the read, naming where it is

@pytest.mark.parametrize("kind", FOLDER_REASONS)
def test_a_bad_row_stops_with_its_line(tmp_path, kind):
    kinds = ["good"] * 7 + [kind] + ["good"] * 4
    table = folder_dataset(tmp_path, kinds)
    with pytest.raises(UserError) as err:
        read_csv(table)
    message = str(err.value)
    assert message.startswith(f"{table} line 9: ") and "datasets.hostile.bad_samples: skip" in message


@pytest.mark.parametrize("kind", [kind for kind, reason in SHARD_REASONS.items() if reason != "unsafe tar member"])
def test_a_bad_sample_stops_with_its_shard_and_key(tmp_path, kind):
    pattern = shard_dataset(tmp_path, ["good"] * 7 + [kind] + ["good"] * 4, shards=1)
    with pytest.raises(UserError, match=r"shard-000000\.tar, sample '000007': .*datasets\.hostile\.bad_samples: skip"):
        read_shards(pattern)


def test_unsafe_members_never_stop_a_read_they_are_only_counted(tmp_path):
    pattern = shard_dataset(tmp_path, ["good", "absolute member", "dotdot member", "good"], shards=1)
    data = read_shards(pattern)
    assert len(data) == 2 and data.report.skipped == {"unsafe tar member": 4}


# ---- nothing usable left

def test_nothing_usable_left_is_a_clear_error(tmp_path):
    kinds = layout(list(FOLDER_REASONS), good=len(FOLDER_REASONS) * SHARE)
    with pytest.raises(UserError, match=r"no usable samples are left for dataset 'hostile'; 70 rows were skipped "
                                        r"\((10 [a-z -]+(, |\))){7}\. Fix those"):
        read_csv(folder_dataset(tmp_path / "folder", kinds), bad_samples="skip")
    kinds = layout([k for k, reason in SHARD_REASONS.items() if reason != "unsafe tar member"], good=6 * SHARE)
    with pytest.raises(UserError, match=r"no usable samples.*60 samples were skipped"):
        read_shards(shard_dataset(tmp_path / "shards", kinds), bad_samples="skip")


# ---- the hostile data sets train to completion

def write_recipe(path: Path, source: dict) -> Path:
    source = {**source, "bad_samples": "skip"}
    path.write_text(yaml.safe_dump({"base": "default", "datasets": {"hostile": source}}))
    return path


@pytest.mark.parametrize("source", ["folder", "webdataset"])
def test_hostile_data_trains_to_completion(tmp_path, tiny_overrides, source):
    reasons = FOLDER_REASONS if source == "folder" else SHARD_REASONS
    kinds = layout([*reasons, *KEPT])
    if source == "folder":
        spec = {"source": "table", "table": str(folder_dataset(tmp_path / "data", kinds))}
    else:
        spec = {"source": "webdataset", "shards": shard_dataset(tmp_path / "data", kinds)}
    recipe = load_recipe(write_recipe(tmp_path / "hostile.yaml", spec), [*tiny_overrides, "train.data=hostile"])
    model = recipe.model
    data = load_dataset("hostile", recipe.datasets["hostile"], model.image_size, model.channels)
    assert data.report.skipped == expected_report(kinds, reasons)
    assert data.report.kept == N - SHARE * len(reasons) and data.images.shape[1:] == (1, 28, 28)
    pretrain(recipe, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "step_8" / "model.safetensors").is_file()
    recorded = json.loads((tmp_path / "run" / "data_report.json").read_text())  # the run keeps the count
    assert recorded == {"hostile": {"kept": data.report.kept, "skipped": expected_report(kinds, reasons)}}


# ---- property: any tar members give data or a UserError, and nothing outside the shard is touched

REG = tarfile.REGTYPE
names = st.one_of(
    st.builds(lambda prefix, key, ext: prefix + key + ext,
              st.sampled_from(["", "/", "../", "a/../../", "./", "d/", "//", SENTINEL + "/", "~/"]),
              st.sampled_from(["a", "b", "a.b", ".hidden", "", "x" * 120]),
              st.sampled_from([".png", ".jpg", ".txt", ".json", ".cls", ".__key__", ".__shard__", "", ".", ".PNG"])),
    st.text(max_size=30))
payloads = st.one_of(st.binary(max_size=64), st.sampled_from([noise(0), noise(1)[:60], b"", "é".encode() * 30,
                                                             b'{"captions": ["x", 1]}', b"\xff\xfe"]))
member_types = st.sampled_from([REG] * 4 + [tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
                                       tarfile.CHRTYPE])
# a member is (name, type, payload, link target)
hostile_member = st.tuples(names, member_types, payloads, names).map(lambda member: [member])
good_sample = st.builds(lambda key, text: [(f"{key}.png", REG, noise(0), ""), (f"{key}.txt", REG, text.encode(), "")],
                        st.sampled_from(["a", "b", "d/c"]), st.text(max_size=8))
members = st.lists(st.one_of(good_sample, hostile_member), max_size=8).map(lambda groups: sum(groups, []))


def hostile_tar(members: list, compress: bool, cut: float | None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = len(payload) if kind == REG else 0
            tar.addfile(info, io.BytesIO(payload) if kind == REG else None)
    data = gzip.compress(buffer.getvalue(), mtime=0) if compress else buffer.getvalue()
    return data if cut is None else data[: int(len(data) * cut)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=members, compress=st.booleans(), cut=st.none() | st.floats(0, 1), skip=st.booleans(),
       label=st.booleans())
@example(members=[("a.png", REG, noise(0), ""), ("a.__key__", REG, b"b", ""), ("a.txt", REG, b"x", "")],
         compress=False, cut=None, skip=False, label=False)
@example(members=[("a.png", REG, noise(0), ""), ("a.txt", REG, b"x", ""), ("a.cls", REG, b"9" * 5000, "")],
         compress=True, cut=None, skip=True, label=True)
@example(members=[], compress=True, cut=0.078125, skip=False, label=False)  # gzip header cut after 4 bytes
def test_any_tar_gives_data_or_a_user_error_and_touches_nothing(members, compress, cut, skip, label):
    try:
        data = hostile_tar(members, compress, cut)
    except (ValueError, UnicodeError, tarfile.TarError):
        assume(False)  # a name tarfile itself cannot write
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "shards").mkdir()
        (root / "shards" / "s.tar").write_bytes(data)
        before = sorted(root.rglob("*"))
        try:
            assert all(isinstance(sample["__key__"], str) for sample in iter_samples([root / "shards" / "s.tar"]))
        except UserError:
            pass
        try:
            read = read_shards(str(root / "shards" / "s.tar"), bad_samples="skip" if skip else "error",
                               label_key="cls" if label else None, templates=["a {}"] if label else None)
        except UserError:
            read = None
        assert sorted(root.rglob("*")) == before
    assert not Path(SENTINEL).exists()
    if read is not None:
        assert len(read) >= 1 and read.images.shape[1:] == (3, SIZE, SIZE)
        assert all(captions and all(c == c.strip() and c for c in captions) for captions in read.captions)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=200) | st.text(max_size=120).map(str.encode), suffix=st.sampled_from(
    [".csv", ".tsv", ".jsonl"]), skip=st.booleans())
def test_any_table_bytes_give_data_or_a_user_error(body, suffix, skip):
    header = b'{"image": "a.png", "caption": "ok"}\n' if suffix == ".jsonl" else b"image,caption\na.png,ok\n"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "a.png").write_bytes(noise(0))
        table = Path(folder) / f"t{suffix}"
        table.write_bytes(header + body)
        try:
            data = read_csv(table, bad_samples="skip" if skip else "error")
        except UserError:
            return
    assert len(data) == 1 and all(c and c == c.strip() for c in data.captions[0])
