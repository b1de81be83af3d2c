"""Dataset fingerprints read each file once: the digest cache in $TRANSFERLAB_CACHE/fingerprints/ is reused while
a file's size, mtime, ctime and inode stay, and a file rewritten at the same size is read again."""

import os

import pytest

from transferlab.config.schema import ImageFolderSource
from transferlab.data import fingerprint


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            (root / c / f"{i}.png").write_bytes(bytes([i]) * 100 + c.encode())
    return root


@pytest.fixture
def reads(monkeypatch):
    """The files whose content the fingerprint reads."""
    seen = []
    original = fingerprint._content_digest

    def counting(path, size):
        seen.append(path.name)
        return original(path, size)
    monkeypatch.setattr(fingerprint, "_content_digest", counting)
    return seen


def test_a_repeated_fingerprint_reads_no_file_again(tree, reads):
    spec = ImageFolderSource(source="imagefolder", root=str(tree))
    first = fingerprint.dataset_fingerprint(spec)
    assert len(reads) == 6
    assert fingerprint.dataset_fingerprint(spec) == first and len(reads) == 6  # all six from the cache
    (tree / "cat" / "x.lock").write_bytes(b"")  # a library's lock file is not data
    assert fingerprint.dataset_fingerprint(spec) == first
    (tree / "cat" / "3.png").write_bytes(b"new")
    assert fingerprint.dataset_fingerprint(spec) != first and reads[6:] == ["3.png"]


def test_content_changed_at_the_same_size_gives_a_new_fingerprint(tree, reads):
    spec = ImageFolderSource(source="imagefolder", root=str(tree))
    image = tree / "dog" / "1.png"
    before = fingerprint.dataset_fingerprint(spec)
    old = os.stat(image)
    image.write_bytes(b"\x07" * old.st_size)  # same size, other bytes
    os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))  # a new mtime
    changed = fingerprint.dataset_fingerprint(spec)
    assert changed != before and reads[-1] == "1.png"
    image.write_bytes(b"\x08" * old.st_size)
    os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))  # even the same mtime: ctime moved on
    assert fingerprint.dataset_fingerprint(spec) not in (before, changed)
    image.write_bytes(b"\x07" * old.st_size)
    assert fingerprint.dataset_fingerprint(spec) == changed  # content, not history, decides


def test_an_unwritable_cache_still_fingerprints(tree, tmp_path, monkeypatch, reads):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "a-file"))
    spec = ImageFolderSource(source="imagefolder", root=str(tree))
    assert fingerprint.dataset_fingerprint(spec) == fingerprint.dataset_fingerprint(spec) and len(reads) == 12


def rewrite_in_place(path, offset: int) -> None:
    """Change one byte of `path` at `offset`: the same size, and its mtime set back (only ctime moves)."""
    old = os.stat(path)
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (old.st_size, old.st_mtime_ns)


def test_shards_and_their_classnames_changed_at_the_same_size_and_mtime_give_new_fingerprints(tmp_path, monkeypatch):
    """A webdataset pool: a byte of a shard, then the order of its class names (same size, mtime set back), each
    give a new fingerprint; changed back, the first one again."""
    import io
    import tarfile

    from transferlab.config import WebDatasetSource

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    pool = tmp_path / "pool"
    pool.mkdir()
    for shard in range(2):
        with tarfile.open(pool / f"s{shard}.tar", "w") as tar:
            for i in range(3):
                data = f"caption {shard} {i}".encode()
                info = tarfile.TarInfo(f"{shard}{i:03d}.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (pool / "classnames.txt").write_text("cat\ndog\n")
    spec = WebDatasetSource(source="webdataset", shards=str(pool / "s{0..1}.tar"), label_key="cls")
    first = fingerprint.dataset_fingerprint(spec)
    shard = pool / "s1.tar"
    at = shard.read_bytes().index(b"caption 1 2")
    rewrite_in_place(shard, at)
    changed = fingerprint.dataset_fingerprint(spec)
    assert changed != first
    names = pool / "classnames.txt"
    old = os.stat(names)
    names.write_text("dog\ncat\n")
    os.utime(names, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert fingerprint.dataset_fingerprint(spec) not in (first, changed)
    rewrite_in_place(shard, at)
    names.write_text("cat\ndog\n")
    assert fingerprint.dataset_fingerprint(spec) == first


def test_a_file_above_the_sampling_size_is_told_apart_by_its_first_middle_and_last_chunk(tree, monkeypatch):
    """Over SAMPLED_ABOVE bytes a file's content is its first, middle and last CHUNK (a documented trade-off: bytes
    between them are not read); a change at the same size and mtime inside any of the three is seen."""
    monkeypatch.setattr(fingerprint, "SAMPLED_ABOVE", 4096)
    monkeypatch.setattr(fingerprint, "CHUNK", 256)
    big = tree / "cat" / "big.bin"
    big.write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    spec = ImageFolderSource(source="imagefolder", root=str(tree))
    before = fingerprint.dataset_fingerprint(spec)
    seen = {before}
    for offset in (10, 10_240 // 2 + 10, 10_240 - 10):  # inside the first, the middle and the last chunk
        rewrite_in_place(big, offset)
        seen.add(fingerprint.dataset_fingerprint(spec))
        rewrite_in_place(big, offset)
        assert fingerprint.dataset_fingerprint(spec) == before
    assert len(seen) == 4
