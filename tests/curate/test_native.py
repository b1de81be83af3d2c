"""The C kernels of the count stage (data/tar/_tar.c's tar reader, curate/_native.c's caption normaliser and entry
matcher) against their pure-Python twins: they must give the same results on the same input, and the count
files of a pool must be the same with and without the extensions."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.curate.pools import write_shard
from transferlab.curate import count as count_module
from transferlab.curate import metadata as metadata_module
from transferlab.curate.balance import key_hashes
from transferlab.curate.count import count_shard, read_samples
from transferlab.curate.filters import CaptionFilter
from transferlab.curate.metadata import Matcher, normalise, normalise_joined, read_metadata
from transferlab.curate.native import kernels as native
from transferlab.curate.settings import Settings
from transferlab.data.tar import kernels as tar_kernels

tar = tar_kernels.kernels
if native is None or tar is None:
    pytest.skip("the C extensions are not built here, or TRANSFERLAB_PURE_PYTHON=1 turns them off",
                allow_module_level=True)


def tar_bytes(members: list[tuple[str, bytes]], format: int = tarfile.PAX_FORMAT, kind: dict | None = None) -> bytes:
    """A tar of (name, data) members; `kind` maps a name to a tarfile member type (DIRTYPE, SYMTYPE)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.type = (kind or {}).get(name, tarfile.REGTYPE)
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buffer.getvalue()


PLAIN = [("a/s1.txt", b"a cat"), ("a/s1.jpg", b"\xff\xd8jpeg"), ("a/s1.json", b"{}"), ("s2.JPG", b"img"),
         ("s2.txt", b"  dog  "), ("s3.json", b"{}"), ("s4.en.txt", b"other caption"), ("s4.txt", b""),
         ("s5.", b"empty extension"), ("s5.txt", "ΟΔΟΣ".encode())]


def corrupted(data: bytes) -> bytes:
    broken = bytearray(data)
    broken[512 * 2 + 10] ^= 1  # a name byte of the second member's header: its checksum fails
    return bytes(broken)


FALLBACKS = {  # tars the C reader leaves to the Python one, each for one reason
    "long name (GNU)": tar_bytes([("k" * 120 + ".txt", b"x"), ("s.txt", b"y")], tarfile.GNU_FORMAT),
    "pax record": tar_bytes([("ké.txt", b"x"), ("s.txt", b"y")]),
    "ustar prefix field": tar_bytes([("d" * 90 + "/" + "e" * 20 + ".txt", b"x")], tarfile.USTAR_FORMAT),
    "folder member": tar_bytes([("dir", b""), ("s.txt", b"y")], kind={"dir": tarfile.DIRTYPE}),
    "symlink": tar_bytes([("l.txt", b""), ("s.txt", b"y")], kind={"l.txt": tarfile.SYMTYPE}),
    "dot-dot name": tar_bytes([("../s.txt", b"x"), ("t.txt", b"y")]),
    "absolute name": tar_bytes([("/s.txt", b"x"), ("t.txt", b"y")]),
    "repeated extension": tar_bytes([("s.txt", b"x"), ("s.txt", b"y"), ("t.txt", b"z")]),
    "no extension": tar_bytes([("README", b"x"), ("t.txt", b"y")]),
    "hidden extension": tar_bytes([("s.__key__", b"x"), ("s.txt", b"y")]),
    "no end-of-archive blocks": tar_bytes(PLAIN)[:512 * 19],  # the members, nothing after them
    "damaged header": corrupted(tar_bytes(PLAIN)),
}


def both_readers(data: bytes, monkeypatch) -> tuple:
    fast = read_samples(data, "txt", "shard-7.tar")
    with monkeypatch.context() as patch:
        patch.setattr(tar_kernels, "kernels", None)
        slow = read_samples(data, "txt", "shard-7.tar")
    return fast, slow


def assert_same_samples(fast, slow) -> None:
    assert fast.keys().tolist() == slow.keys().tolist()
    for name in ("key_hashes", "spans", "span_ptr", "captions", "images"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert (fast.layout.skipped, fast.layout.corrupt) == (slow.layout.skipped, slow.layout.corrupt)


def test_a_plain_tar_is_read_in_c_as_the_python_reader_reads_it(monkeypatch):
    data = tar_bytes(PLAIN)
    assert tar.plain_samples(data, (b"txt",), count_module.IMAGE_EXT_BYTES, 0) is not None
    fast, slow = both_readers(data, monkeypatch)
    assert_same_samples(fast, slow)
    assert fast.keys().tolist() == [b"a/s1", b"s2", b"s3", b"s4", b"s5"]
    assert fast.key_hashes.tolist() == key_hashes("shard-7.tar", fast.keys()).tolist()
    assert fast.images[:2, 1].tolist() == [6, 3] and fast.images[2:, 0].tolist() == [-1, -1, -1]  # .JPG is an image
    assert fast.captions[2].tolist() == [-1, -1] and fast.captions[3, 1] == 0  # s4.en.txt is not the caption


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_any_other_tar_is_left_to_the_python_reader(case, monkeypatch):
    data = FALLBACKS[case]
    assert tar.plain_samples(data, (b"txt",), count_module.IMAGE_EXT_BYTES, 0) is None
    assert_same_samples(*both_readers(data, monkeypatch))


def test_an_archive_of_end_blocks_alone_has_no_samples(monkeypatch):
    fast, slow = both_readers(bytes(1024), monkeypatch)
    assert len(fast.keys()) == 0 and len(fast.key_hashes) == 0 and len(fast.spans) == 0
    assert_same_samples(fast, slow)


TEXT = st.text(st.sampled_from(list("aAbZ.,;!?'()<> \t\n\x0b\x1c\x1f\x7féÉßİΣ\u00a0\u3000\u2028-/")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXT.filter(str.strip), min_size=1, max_size=6), st.booleans())
def test_normalising_in_c_equals_normalise(captions, case_sensitive):
    expected = [normalise(caption, case_sensitive) for caption in captions]
    assert normalise_joined(captions, case_sensitive).split("\0") == expected


TOKENS = ["a", "b", "ab", "ba", ".", "é", "É", "ß", "aa"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map(" ".join), min_size=1, max_size=12),
       st.lists(st.lists(st.sampled_from(TOKENS + [",", "x"]), min_size=1, max_size=10).map(" ".join), min_size=1,
                max_size=8))
def test_the_c_matcher_finds_what_aho_corasick_and_a_substring_scan_find(tmp_path_factory, entries, captions):
    path = tmp_path_factory.mktemp("entries") / "entries.txt"
    path.write_text("\n".join(entries) + "\n")
    metadata = read_metadata(path)
    fast = Matcher(metadata)
    assert fast.tokens is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metadata_module, "_native", None)
        slow = Matcher(metadata)
    joined = normalise_joined(captions)
    naive = [[i for i, entry in enumerate(metadata.normalised) if entry in normalise(c)] for c in captions]
    for matcher in (fast, slow):
        ptr, ids = matcher.batch(joined)
        assert [ids[ptr[i]:ptr[i + 1]].tolist() for i in range(len(captions))] == naive
        assert [matcher(c) for c in captions] == naive


def test_entries_the_token_matcher_cannot_take_go_to_aho_corasick():
    assert native.build_matcher([" a ", " b\0c "]) is None
    assert native.build_matcher([" a  b "]) is None
    assert native.build_matcher([" a ", " b c "]) is not None


def test_count_files_are_the_same_with_and_without_the_extension(tmp_path, monkeypatch):
    pool = tmp_path / "pool"
    captions = ["A cat on a mat.", "ΟΔΟΣ with a dog", "  ", "cat\0dog", "t-shirt (cat)!", "İstanbul cat"]
    samples = [{"__key__": f"k{i}", "txt": c, "jpg": f"img{i % 3}".encode()} for i, c in enumerate(captions)]
    samples.append({"__key__": "bad", "txt": b"\xff\xfe"})
    samples.append({"__key__": "nocaption", "jpg": b"img"})
    shards = [write_shard(pool / "plain.tar", samples),
              write_shard(pool / "long.tar", [{"__key__": "k" * 150, "txt": "a cat"}, *samples[:3]])]
    (pool / "entries.txt").write_text("cat\ndog\nistanbul\nt-shirt\na dog\n")
    # the NUL caption passes the filters, so the matcher also scans captions one by one
    settings_ = Settings(metadata=pool / "entries.txt", cap=2, filters=CaptionFilter(allow_nonprintable=True))
    for out, patched in ((tmp_path / "fast", False), (tmp_path / "slow", True)):
        with monkeypatch.context() as patch:
            if patched:
                patch.setattr(tar_kernels, "kernels", None)
                patch.setattr(metadata_module, "_native", None)
                count_module.matcher_for.cache_clear()
            for shard in shards:
                count_shard(shard, out, settings_)
        count_module.matcher_for.cache_clear()
    for shard in shards:
        name = f"{shard.name}.count.npz"
        with np.load(tmp_path / "fast" / "work" / name) as fast, np.load(tmp_path / "slow" / "work" / name) as slow:
            assert fast.files == slow.files
            for key in fast.files:
                np.testing.assert_array_equal(fast[key], slow[key], err_msg=f"{name}: {key}")
    with np.load(tmp_path / "fast" / "work" / "plain.tar.count.npz") as counted:
        assert counted["status"].tolist().count(0) == 5  # the blank, undecodable and missing captions are out
        # cat | a dog, dog | t-shirt, cat | cat ('İstanbul' lower-cased is 'i̇stanbul', not 'istanbul')
        assert counted["match_ids"].tolist() == [0, 1, 4, 0, 3, 0]


def test_the_extension_is_what_this_process_uses(tmp_path):
    assert tar_kernels.kernels is tar and metadata_module._native is native
    assert Path(native.__file__).suffix in (".so", ".pyd") and Path(tar.__file__).suffix in (".so", ".pyd")


def test_a_metadata_file_reads_the_same_with_and_without_the_extension(tmp_path, monkeypatch):
    path = tmp_path / "entries.txt"
    path.write_text("Cat\n\n  cat \nİstanbul\n\u3000\nt-shirt (red)\nnul\0entry\nDog.\ndog .\n", encoding="utf-8")
    fast = read_metadata(path)
    monkeypatch.setattr(metadata_module, "_native", None)
    slow = read_metadata(path)
    assert (fast.entries, fast.normalised, fast.blank_lines, fast.duplicates) == \
        (slow.entries, slow.normalised, slow.blank_lines, slow.duplicates)
    assert fast.blank_lines == 2 and [line for line, _, _ in fast.duplicates] == [3, 9]


def test_gather_takes_the_bytes_header_blocks_takes():
    from transferlab.data.tar.layout import header_blocks

    data = tar_bytes(PLAIN)
    offsets = np.array([0, 1024, 3072, 512 * 7], dtype=np.int64)
    assert tar.gather(data, offsets.tobytes(), 136) == header_blocks(data, offsets, 136).tobytes()
    assert tar.gather(data, b"", 136) == b""
    with pytest.raises(IndexError, match="out of the data"):
        tar.gather(data, np.array([len(data) - 100], dtype=np.int64).tobytes(), 136)


@pytest.mark.parametrize("extra", [[], [b"\xff\xfe"], [b"cat\0dog"]])  # all in C; not UTF-8; a NUL: in Python
def test_captions_read_in_c_equal_the_python_reading(extra, monkeypatch):
    from transferlab.data.tar.limits import MAX_CAPTION_CHARS

    texts = [b"  a cat  ", "\u3000cat\u3000".encode(), "ΟΔΟΣ".encode(), b"x" * (MAX_CAPTION_CHARS + 50),
             "é".encode() * MAX_CAPTION_CHARS, b" \t\n", b"\x1ccat\x1f", "\u00a0".encode(), b"", b"dog", *extra]
    members = [(f"s{i:02d}.txt", text) for i, text in enumerate(texts)] + [("s99.jpg", b"no caption")]
    data = tar_bytes(members)
    found = read_samples(data, "txt", "shard.tar")
    fast = count_module.read_captions(data, found.captions)
    monkeypatch.setattr(tar_kernels, "kernels", None)
    slow = count_module.read_captions(data, found.captions)
    assert fast[0].tolist() == slow[0].tolist() and fast[1].tolist() == slow[1].tolist()
    assert fast[0][:4].tolist() == ["a cat", "cat", "ΟΔΟΣ", "x" * MAX_CAPTION_CHARS]
    assert len(fast[0][4]) == MAX_CAPTION_CHARS and fast[0][7] == ""


def test_the_pure_python_switch_turns_the_kernels_off():
    import os
    import subprocess
    import sys

    code = "from transferlab.curate import metadata; from transferlab.data.tar import kernels as tar_kernels; " \
           "print(tar_kernels.kernels is None, metadata._native is None)"
    switched = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "TRANSFERLAB_PURE_PYTHON": "1"})
    assert switched.stdout.split() == ["True", "True"]
