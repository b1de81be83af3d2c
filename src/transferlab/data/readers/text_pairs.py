"""Text pairs for text-text training: a left text (title, question, summary) and its right text.

`read_text_pairs` reads them from a table (`source: text-pairs`); `docstring_pairs` builds them from the
Python standard library installed here (`source: docstrings`): for every public function, class and
method with a docstring of several sentences, its summary line (left) and the rest (right), like a title
and its abstract. The set is deterministic for a Python version and needs no download.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from dataclasses import dataclass, field

import torch

from transferlab.config import TextPairSource
from transferlab.data.readers.table_rows import read_table
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.samples import clean_captions
from transferlab.errors import UserError

DOCSTRING_MODULES = (
    "argparse", "ast", "asyncio", "bdb", "calendar", "cmd", "codecs", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis", "doctest",
    "email.message", "enum", "filecmp", "fileinput", "fractions", "ftplib", "functools", "gettext", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html.parser", "http.client", "http.server", "imaplib", "inspect", "io",
    "ipaddress", "itertools", "json", "locale", "logging", "mailbox", "mimetypes", "multiprocessing", "numbers",
    "operator", "os", "pathlib", "pdb", "pickle", "pickletools", "platform", "poplib", "pprint", "pstats",
    "queue", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal",
    "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics", "string", "struct", "subprocess",
    "sysconfig", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback",
    "types", "typing", "unittest", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "wave", "weakref",
    "wsgiref.handlers", "xml.dom.minidom", "xml.etree.ElementTree", "xmlrpc.client", "zipfile", "zoneinfo",
)


@dataclass
class TextPairData:
    name: str
    left: list[str]
    right: list[str]
    report: DataReport = field(default_factory=DataReport)
    labels = None  # no classes: splits are random, positives are the pairs themselves

    def __len__(self) -> int:
        return len(self.left)

    def subset(self, index: torch.Tensor) -> TextPairData:
        positions = torch.as_tensor(index, dtype=torch.long).tolist()
        return TextPairData(self.name, [self.left[i] for i in positions], [self.right[i] for i in positions],
                            self.report)


def load_text_pairs(spec: TextPairSource, name: str) -> TextPairData:
    data = docstring_pairs(name) if spec.source == "docstrings" else read_text_pairs(spec, name)
    if not len(data):
        raise UserError(f"Dataset '{name}' has no usable text pairs ({data.report.to_dict()}). Check its table.")
    return data


def read_text_pairs(spec: TextPairSource, name: str) -> TextPairData:
    report = DataReport()
    bad = BadSamples(name, spec.bad_samples, report, "row")
    table = read_table(spec.table, name, bad)
    table.require(spec.left_column, "left_column", "left texts")
    table.require(spec.right_column, "right_column", "right texts")
    left, right = [], []
    for line, row in table.rows:
        texts = [clean_captions(row.get(column)) for column in (spec.left_column, spec.right_column)]
        if not all(texts) or any(len(t) != 1 for t in texts):
            bad("empty text", f"{spec.table} line {line}", "a pair needs one non-empty text on each side")
            continue
        left.append(texts[0][0])
        right.append(texts[1][0])
    report.kept = len(left)
    return TextPairData(name, left, right, report)


def docstring_pairs(name: str) -> TextPairData:
    """(summary line, rest of the docstring) of documented public objects of DOCSTRING_MODULES."""
    seen, left, right = set(), [], []
    for module_name in DOCSTRING_MODULES:
        with warnings.catch_warnings():  # deprecated aliases (typing.io) warn when their docstring is read
            warnings.simplefilter("ignore", DeprecationWarning)
            docs = [inspect.getdoc(obj) or "" for obj in _public_objects(importlib.import_module(module_name))]
        for doc in docs:
            pair = _split_docstring(doc)
            if pair and pair[1] not in seen:
                seen.add(pair[1])
                left.append(pair[0])
                right.append(pair[1])
    data = TextPairData(name, left, right)
    data.report.kept = len(left)
    return data


def _public_objects(module):
    for attribute, value in sorted(vars(module).items()):
        home = getattr(value, "__module__", None) or ""
        if attribute.startswith("_") or home.split(".")[0] != module.__name__.split(".")[0]:
            continue  # private, or imported from another package
        if inspect.isfunction(value) or inspect.isclass(value):
            yield value
            if inspect.isclass(value):
                yield from (member for key, member in sorted(vars(value).items())
                            if not key.startswith("_") and inspect.isfunction(member))


def _split_docstring(doc: str) -> tuple[str, str] | None:
    """The first paragraph's first sentence, and the rest of the first two paragraphs (≥ 8 words)."""
    paragraphs = [p.strip() for p in doc.split("\n\n") if p.strip()]
    if not paragraphs:
        return None
    summary = " ".join(paragraphs[0].split())
    first, _, rest = summary.partition(". ")
    body = " ".join(" ".join(p.split()) for p in ([rest] if rest else []) + paragraphs[1:2])
    first = first.rstrip(".")
    if len(first.split()) < 3 or len(body.split()) < 8 or re.search(r"[>{}|]{2}", body) or body.startswith(first):
        return None  # too short, code or tables, or a body that repeats its summary (the answer in the query)
    return first, body[:1000]
