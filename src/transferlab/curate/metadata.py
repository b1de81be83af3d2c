"""Metadata entries and matching them in captions at token boundaries, as MetaCLIP does.

A metadata file lists the concepts to balance over, one per line (MetaCLIP used WordNet synsets and
Wikipedia titles). An entry matches a caption when it occurs in it as a run of whole tokens: both are
normalised alike — lower-cased (unless case-sensitive), punctuation spaced out into tokens of its own,
whitespace collapsed — and padded with a space, so " cat " is a substring of " a cat . " but not of
" concatenate ". All entries are matched in one scan of the caption with an Aho-Corasick automaton
(pyahocorasick), whose cost grows with the caption's length and the matches found, not with the number
of entries: a loop testing each entry would do 100,000 substring searches per caption. Where the optional
C extension `_native` is built, a token matcher does the same faster (a hash of each entry's token
prefixes, extended token by token from each token of the caption, each match confirmed byte for byte), and
ASCII captions are normalised in C; both give exactly what the Python code does.

Hyphens, slashes and other inner punctuation stay inside their token ("t-shirt" is one token, and "cat"
does not match "cat-like").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab.curate.native import kernels as _native
from transferlab.errors import UserError

PUNCTUATION = ",.;:!?\"'`()[]{}<>"  # each becomes a token of its own
SPACED = str.maketrans({mark: f" {mark} " for mark in PUNCTUATION})


def normalise(text: str, case_sensitive: bool = False) -> str:
    """`text` as space-separated tokens with a space before and after: ' a cat . '."""
    text = text if case_sensitive else text.lower()
    return " " + " ".join(text.translate(SPACED).split()) + " "


def normalise_joined(captions: list[str], case_sensitive: bool = False) -> str | None:
    """`normalise` of every caption, joined by NUL characters, computed on the joined text at once (one
    lower-casing, one translation, one whitespace collapse for a whole shard): splitting the result at NUL
    gives each caption's `normalise`. None when a caption holds a NUL itself (then normalise each)."""
    joined = "\0".join(captions)
    if joined.count("\0") != len(captions) - 1:
        return None
    if _native is None:
        return _normalise_joined(captions, case_sensitive)
    text, flagged = _native.normalise_ascii(joined.encode("utf-8", "surrogatepass"), not case_sensitive)
    text = text.decode("ascii")
    if flagged:  # the captions with non-ASCII characters: Unicode's cases and spaces, in Python
        parts, unicode = text.split("\0"), _normalise_joined([captions[i] for i in flagged], case_sensitive)
        for index, normalised in zip(flagged, unicode.split("\0"), strict=True):
            parts[index] = normalised
        text = "\0".join(parts)
    return text


def _normalise_joined(captions: list[str], case_sensitive: bool) -> str:
    joined = " \0 ".join(captions)
    joined = joined if case_sensitive else joined.lower()
    for mark in PUNCTUATION:  # on a long text, a replace per mark is 5x faster than translate
        joined = joined.replace(mark, f" {mark} ")
    # the NULs, not whitespace, stay tokens of their own: " a cat . \0 dog "
    return " " + " ".join(joined.split()) + " "


@dataclass
class Metadata:
    """The entries of a metadata file (as written, and normalised for matching), and the lines skipped."""

    path: Path
    case_sensitive: bool
    entries: list[str]
    normalised: list[str]
    blank_lines: int = 0
    duplicates: list[tuple[int, int, str]] = field(default_factory=list)  # (line, line it repeats, entry)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the normalised entries: equal for two files that match alike, wherever they are."""
        text = "\n".join([f"case_sensitive={self.case_sensitive}", *self.normalised])
        return hashlib.sha256(text.encode()).hexdigest()


def read_metadata(path: str | Path, case_sensitive: bool = False) -> Metadata:
    """The entries of a UTF-8 file, one per line. Blank lines and entries that normalise to one seen
    before are skipped and counted; a missing, unreadable or entry-less file is a UserError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"Metadata file {path} does not exist. Pass --metadata a text file with one entry (a concept "
                        f"such as 'golden retriever') per line.") from None
    except OSError as err:
        raise UserError(f"Metadata file {path} cannot be read ({err.strerror}).") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UserError(f"{path} line {line} is not valid UTF-8. Re-save the metadata file as UTF-8.") from None
    metadata = Metadata(path, case_sensitive, [], [])
    lines = [line.strip() for line in text.splitlines()]
    present = [entry for entry in lines if entry]  # a stripped line that is not blank normalises to a token or more
    joined = normalise_joined(present, case_sensitive) if present else None
    normalised = joined.split("\0") if joined is not None else [normalise(entry, case_sensitive) for entry in present]
    if len(set(normalised)) == len(normalised):  # the common case: no entry repeats another
        metadata.entries, metadata.normalised, metadata.blank_lines = present, normalised, len(lines) - len(present)
    else:
        _skip_repeats(metadata, lines, normalised)
    if not metadata.entries:
        raise UserError(f"Metadata file {path} holds no entries ({metadata.blank_lines} blank lines). Put one entry "
                        f"per line, or leave --metadata out to curate without balancing.")
    return metadata


def _skip_repeats(metadata: Metadata, lines: list[str], normalised: list[str]) -> None:
    """Fill `metadata` line by line (stripped lines; `normalised`: those not blank, normalised), skipping and
    recording blank lines and entries that normalise to one seen before."""
    first_line: dict[str, int] = {}
    keys = iter(normalised)
    for number, entry in enumerate(lines, 1):
        if not entry:
            metadata.blank_lines += 1
            continue
        key = next(keys)
        if key in first_line:
            metadata.duplicates.append((number, first_line[key], entry))
        else:
            first_line[key] = number
            metadata.entries.append(entry)
            metadata.normalised.append(key)


class Matcher:
    """The ids of the entries that occur in a caption: the C token matcher where it is built, else one
    Aho-Corasick automaton."""

    def __init__(self, metadata: Metadata) -> None:
        self.case_sensitive, self.size = metadata.case_sensitive, len(metadata.normalised)
        self.tokens = None if _native is None else _native.build_matcher(metadata.normalised)
        self.automaton = _automaton(metadata.normalised) if self.tokens is None else None

    def __call__(self, caption: str) -> list[int]:
        """The ids of the entries in `caption`, each once, ascending."""
        text = normalise(caption, self.case_sensitive)
        if self.tokens is not None:
            return self.batch(text)[1].tolist()
        return sorted({entry_id for _, entry_id in self.automaton.iter(text)})

    def batch(self, joined: str) -> tuple[np.ndarray, np.ndarray]:
        """The same for many normalised captions joined by NUL characters (`normalise_joined`), in one scan:
        caption i matched the entries ids[ptr[i]:ptr[i + 1]]. No normalised entry holds a NUL, so no match
        spans two captions; in the automaton's scan, each match's end position tells its caption."""
        if self.tokens is not None:
            ptr, ids = _native.match(self.tokens, joined)
            return np.frombuffer(ptr, dtype=np.int64), np.frombuffer(ids, dtype=np.int32)
        texts = joined.split("\0")
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + 1
        starts = np.cumsum(lengths) - lengths
        found = np.fromiter((value for match in self.automaton.iter(joined) for value in match),
                            dtype=np.int64).reshape(-1, 2)
        rows = np.searchsorted(starts, found[:, 0], side="right") - 1
        pairs = np.unique(rows * self.size + found[:, 1])  # each (caption, entry) once, in caption then entry order
        rows, ids = np.divmod(pairs, self.size)
        return np.searchsorted(rows, np.arange(len(texts) + 1)), ids.astype(np.int32)


def _automaton(normalised: list[str]):  # noqa: ANN202 -- pyahocorasick's type, imported here
    try:
        import ahocorasick
    except ImportError:
        raise UserError("Matching metadata entries needs the pyahocorasick package: pip install pyahocorasick "
                        "(or leave --metadata out to curate without balancing).") from None
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for entry_id, key in enumerate(normalised):
        automaton.add_word(key, entry_id)
    automaton.make_automaton()
    return automaton
