"""Metadata files and token-boundary matching, checked against a regex tokeniser and a sublist search."""

import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transferlab.curate import metadata as metadata_module
from transferlab.curate.metadata import PUNCTUATION, Matcher, normalise, read_metadata
from transferlab.errors import UserError

MARKS = re.escape(PUNCTUATION)
TOKEN = re.compile(rf"[{MARKS}]|[^\s{MARKS}]+")


def tokens(text: str, case_sensitive: bool = False) -> list[str]:
    return TOKEN.findall(text if case_sensitive else text.lower())


def reference_matches(caption: str, entries: list[str], case_sensitive: bool = False) -> list[int]:
    """Entries whose tokens occur as a contiguous run of the caption's tokens: the definition, by brute force."""
    words = tokens(caption, case_sensitive)
    found = []
    for i, entry in enumerate(entries):
        run = tokens(entry, case_sensitive)
        if any(words[start:start + len(run)] == run for start in range(len(words) - len(run) + 1)):
            found.append(i)
    return found


def metadata_file(tmp_path, text: str):
    path = tmp_path / "entries.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_token_boundaries(tmp_path):
    metadata = read_metadata(metadata_file(tmp_path, "cat\nhot dog\nt-shirt\nnew york\n"))
    match = Matcher(metadata)
    assert match("a cat.") == [0]
    assert match("Concatenate the CAT!") == [0]
    assert match("concatenate") == [] and match("cats") == [] and match("cat-like") == []
    assert match("(cat) and a hot   dog in New\tYork") == [0, 1, 3]
    assert match("a hotdog, a t-shirt") == [2]
    assert match("cat cat cat") == [0]  # each entry once


def test_case_sensitive_matching(tmp_path):
    metadata = read_metadata(metadata_file(tmp_path, "Apple\napple\n"), case_sensitive=True)
    assert len(metadata.entries) == 2
    assert Matcher(metadata)("an Apple phone, an apple pie") == [0, 1]
    assert Matcher(metadata)("APPLE") == []
    folded = read_metadata(metadata_file(tmp_path, "Apple\napple\n"))
    assert folded.entries == ["Apple"] and folded.duplicates == [(2, 1, "apple")]
    assert folded.fingerprint != metadata.fingerprint


FRAGMENTS = ["cat", "Cat", "a", "concatenate", "dog", "hot", "hot-dog", "t-shirt", "new", "york", "é", "ÉTÉ"]
SEPARATORS = [" ", "  ", "\t", "\n", "", *PUNCTUATION, "-"]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from(SEPARATORS)), max_size=14).map("".join)


@given(captions=st.lists(texts, min_size=1, max_size=5), entries=st.lists(texts, min_size=1, max_size=8),
       case_sensitive=st.booleans())
def test_matcher_agrees_with_a_brute_force_reference(tmp_path_factory, captions, entries, case_sensitive):
    lines = [e.replace("\n", " ") for e in entries]
    path = tmp_path_factory.mktemp("meta") / "entries.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        metadata = read_metadata(path, case_sensitive)
    except UserError:
        assert all(not tokens(line) for line in lines)  # refused only when every line is blank
        return
    # the kept entries are the first of each distinct token sequence; blank ones are counted, not kept
    distinct = list(dict.fromkeys(tuple(tokens(line, case_sensitive)) for line in lines if tokens(line)))
    assert [tuple(tokens(e, case_sensitive)) for e in metadata.entries] == distinct
    assert metadata.blank_lines + len(metadata.duplicates) + len(metadata.entries) == len(lines)
    match = Matcher(metadata)
    for caption in captions:
        assert match(caption) == reference_matches(caption, metadata.entries, case_sensitive)


@given(caption=st.text(max_size=60))
def test_any_text_matches_like_the_reference(tmp_path_factory, caption):
    path = tmp_path_factory.mktemp("meta") / "entries.txt"
    entries = ["a", "b c", "é", ".", "x-y", "σ"]
    path.write_text("\n".join(entries), encoding="utf-8")
    assert Matcher(read_metadata(path))(caption) == reference_matches(caption, entries)


def test_blank_and_duplicate_lines_are_counted(tmp_path):
    metadata = read_metadata(metadata_file(tmp_path, "\ufeffcat\n\n  \ndog\nCat \n cat.\ndog\n\t\n"))
    assert metadata.entries == ["cat", "dog", "cat."]
    assert metadata.blank_lines == 3
    assert metadata.duplicates == [(5, 1, "Cat"), (7, 4, "dog")]


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("", "holds no entries"),
    ("\n \n\t\n", "holds no entries (3 blank lines)"),
    (b"cat\ndog\n\xff\xfe\n", "line 3 is not valid UTF-8"),
])
def test_unusable_metadata_files(tmp_path, content, message):
    path = tmp_path / "entries.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        read_metadata(path)
    assert str(path) in str(err.value)


def test_a_missing_matcher_package_is_a_clear_error(tmp_path, monkeypatch):
    metadata = read_metadata(metadata_file(tmp_path, "cat\n"))
    monkeypatch.setitem(sys.modules, "ahocorasick", None)  # as if it were not installed
    monkeypatch.setattr(metadata_module, "_native", None)  # and the C matcher not built
    with pytest.raises(UserError, match="pip install pyahocorasick"):
        Matcher(metadata)


TRICKY = ["A Cat.", "dog\tand\ncat", "  spaced   out  ", "ΟΔΟΣ Σ", "t-shirt (cat)!", "a\u2028b\u00a0c", "x\x1cy",
          "İstanbul", "cat,dog;bird:fish?", "\u3000cat\u3000"]


def test_normalising_a_whole_shard_at_once_equals_one_caption_at_a_time():
    from transferlab.curate.metadata import normalise_joined

    for case_sensitive in (False, True):
        joined = normalise_joined(TRICKY, case_sensitive)
        assert joined.split("\0") == [normalise(c, case_sensitive) for c in TRICKY]
    assert normalise_joined(["a\0b", "c"]) is None  # a NUL in a caption: each is normalised alone


def test_one_scan_over_a_shard_finds_what_one_scan_per_caption_finds(tmp_path):
    from transferlab.curate.metadata import normalise_joined

    path = tmp_path / "entries.txt"
    path.write_text("cat\ndog\nt-shirt\n, dog\nistanbul\nfish ?\nb c\n")
    matcher = Matcher(read_metadata(path))
    captions = TRICKY + ["cat cat dog", "", "dog"]
    ptr, ids = matcher.batch(normalise_joined(captions))
    assert [ids[ptr[i]:ptr[i + 1]].tolist() for i in range(len(captions))] == [matcher(c) for c in captions]
