"""The header-level tar reader against Python's tarfile: the same members, names, data and skips, for plain
shards (the numpy path) and for long names, pax headers, links and damage (the header-by-header path)."""

import io
import tarfile

import pytest

from transferlab.data.tar.layout import _plain_layout, _walk_layout, group_samples, read_layout


def build(members, format=tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as tar:
        for name, payload, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type = {"dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
                info.linkname = "target"
                tar.addfile(info)
    return buffer.getvalue()


def by_tarfile(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def read(data: bytes) -> list[tuple[str, bytes]]:
    return [(m.name, data[m.offset:m.offset + m.size]) for m in read_layout(data).members]


PLAIN = [(f"{i:05d}.{ext}", f"payload {i} {ext}".encode() * (i % 7 + 1), "file")
         for i in range(40) for ext in ("txt", "jpg")] + [("folder/", b"", "dir"), ("folder/a.txt", b"x" * 513, "file")]


@pytest.mark.parametrize("format", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_plain_shards_read_as_tarfile_reads_them(format):
    data = build(PLAIN, format)
    assert read(data) == by_tarfile(data)
    assert _plain_layout(data) is not None  # the fast path took it
    assert _plain_layout(data).members == _walk_layout(data).members


def test_long_names_pax_and_links():
    members = [("short.txt", b"a", "file"), ("deep/" + "d" * 150 + ".txt", b"long", "file"),
               ("ünï.txt", b"pax", "file"), ("evil.txt", b"", "link"), ("hard.txt", b"", "hard"),
               ("../escape.txt", b"no", "file"), ("/abs.txt", b"no", "file"), ("last.txt", b"z", "file")]
    for format in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = build(members, format)
        assert _plain_layout(data) is None
        layout = read_layout(data)
        assert [m.name for m in layout.members] == ["short.txt", "deep/" + "d" * 150 + ".txt", "ünï.txt", "last.txt"]
        assert read(data) == [(n, p) for n, p in by_tarfile(data) if n in {m.name for m in layout.members}]
        assert layout.skipped == {"unsafe tar member": 4}


def test_copied_block_ranges_make_a_tar_with_the_same_members():
    data = build(PLAIN[:6] + [("x" * 120 + ".txt", b"long name", "file")], tarfile.GNU_FORMAT)
    layout = read_layout(data)
    copied = b"".join(data[m.start:m.end] for m in layout.members) + bytes(1024)
    assert by_tarfile(copied) == by_tarfile(data)


def test_damage_ends_the_shard_where_it_starts():
    data = build(PLAIN[:10])
    damaged = bytearray(data)
    damaged[3 * 1024 + 20] ^= 0xFF  # the fourth member's header (one data block each here)
    layout = read_layout(bytes(damaged))
    assert layout.corrupt and [m.name for m in layout.members] == [name for name, _, _ in PLAIN[:3]]
    cut = read_layout(data[:5 * 1024 + 600])  # inside the sixth member's data
    assert cut.corrupt and len(cut.members) == 5 and cut.cut == PLAIN[5][0]
    # the sample cut short is dropped; after a damaged header the sample being read is dropped too
    assert [key for key, _ in group_samples(cut)] == ["00000", "00001"]
    assert [key for key, _ in group_samples(layout)] == ["00000"]


def test_samples_group_consecutive_members_by_key_as_webdataset_does():
    data = build([("a.txt", b"1", "file"), ("a.jpg", b"2", "file"), ("a.txt", b"3", "file"), ("b.cls", b"4", "file"),
                  ("noext", b"5", "file"), ("c.__key__", b"6", "file"), ("dir/.x", b"7", "file")])
    layout = read_layout(data)
    samples = [(key, {ext: data[m.offset:m.offset + m.size] for ext, m in members.items()})
               for key, members in group_samples(layout)]
    assert samples == [("a", {"txt": b"1", "jpg": b"2"}), ("b", {"cls": b"4"}), ("dir/", {"x": b"7"})]
    assert layout.skipped == {"duplicate tar member": 1}
