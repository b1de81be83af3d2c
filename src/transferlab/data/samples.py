"""What every reader of image-text files shares: caption cleaning, a progress bar, and turning the samples it
kept into an `ImageTextData` (labels indexed into class names, captions from templates, images stacked). The
bad-sample policy is data/report.py's `BadSamples`; whether decoded images fit, data/memory.py."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from tqdm import tqdm

from transferlab.data.dataset import ImageTextData
from transferlab.data.lazy import LazyImages
from transferlab.data.report import BadSamples, DataReport
from transferlab.data.tar.limits import MAX_CAPTION_CHARS
from transferlab.errors import UserError

PROGRESS_AFTER = 200  # a bar for fewer images would only flicker
INTEGER = re.compile(r"[+-]?\d{1,18}")  # a longer run of digits is a name: int() refuses 4,301 digits

T = TypeVar("T")


@dataclass
class Sample:
    """One decoded image (or, streamed, its position among the images located), its captions (empty: make
    them from templates), its raw label, and where it came from (for messages)."""

    image: torch.Tensor | int
    captions: list[str]
    label: str | None
    where: str


def clean_captions(value: Any) -> list[str] | None:
    """Stripped, truncated, non-empty captions from a string or a list of strings; None for anything else."""
    items = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        return None
    return [item.strip()[:MAX_CAPTION_CHARS] for item in items if item.strip()]


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """`items` with a progress bar: when more than PROGRESS_AFTER are known to come, or, for a stream of
    unknown length, once it has taken a few seconds."""
    if total is None:
        return iter(tqdm(items, desc=desc, unit=" samples", delay=3, leave=False))
    return iter(tqdm(items, desc=desc, total=total, unit=" images", disable=total <= PROGRESS_AFTER, leave=False))


def assemble(name: str, origin: str, samples: list[Sample], bad: BadSamples, templates: list[str] | None,
             labelled: bool, known: list[str] | None = None, known_from: str = "",
             stack: Callable[[list], torch.Tensor | LazyImages] = torch.stack) -> ImageTextData:
    """Index labels, fill template captions and `stack` the images of the samples a reader kept.

    `known`, when given, are the class names (read from `known_from`) that integer labels index into.
    """
    labels = classnames = named_by = None
    if labelled:
        samples, labels, classnames = _index_labels(samples, bad, known, known_from)
        named_by = known_from if known is not None else None if all(
            INTEGER.fullmatch(name) for name in classnames) else "the label values"
    if not samples:
        raise no_samples(name, origin, bad.report, bad.unit)
    captions = [sample.captions for sample in samples]
    if templates and labels is not None:
        captions = template_captions(captions, labels, classnames, templates, name)
    bad.report.kept = len(samples)
    return ImageTextData(name=name, images=stack([sample.image for sample in samples]), captions=captions,
                         labels=None if labels is None else torch.tensor(labels, dtype=torch.long),
                         classnames=classnames, classnames_from=named_by, report=bad.report)


def no_samples(name: str, origin: str, report: DataReport, unit: str = "sample") -> UserError:
    """The error for a dataset of which nothing is left: what was skipped and why, or that it holds nothing."""
    skipped = report.skipped
    if skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in skipped.most_common())
        total = skipped.total()
        counted = f"{total} {unit} was" if total == 1 else f"{total} {unit}s were"
        return UserError(f"{origin}: no usable samples are left for dataset '{name}'; {counted} skipped ({reasons}). "
                         f"Fix those, or point `datasets.{name}` at the right data.")
    return UserError(f"{origin} holds no samples. Add some, or point `datasets.{name}` at the right data.")


def fill_template(template: str, classname: str, name: str) -> str:
    """`template` with `classname` in place of '{}'; a UserError naming the dataset when it cannot be filled."""
    try:
        return template.format(classname)
    except (IndexError, KeyError, ValueError) as err:
        raise UserError(f"Template {template!r} in `datasets.{name}.templates` cannot be filled in ({err}). Use "
                        f"'{{}}' for the class name and double any other braces: '{{{{' and '}}}}'.") from None


def template_captions(captions: list[list[str]], labels: Sequence[int], classnames: list[str], templates: list[str],
                      name: str) -> list[list[str]]:
    """`captions` with each empty list replaced by the `templates` filled with that image's class name (one list
    per class, shared by its images)."""
    made: dict[int, list[str]] = {}
    filled = list(captions)
    for i, label in enumerate(labels):
        if not filled[i]:
            label = int(label)
            if label not in made:
                made[label] = [fill_template(template, classnames[label], name) for template in templates]
            filled[i] = made[label]
    return filled


def _index_labels(samples: list[Sample], bad: BadSamples, known: list[str] | None,
                  known_from: str) -> tuple[list[Sample], list[int], list[str]]:
    if known is None:
        # labels that are all integers are classes in numeric order, so '10' comes after '9'
        numeric = all(INTEGER.fullmatch(sample.label) for sample in samples)
        canonical = {s.label: str(int(s.label)) if numeric else s.label for s in samples}
        classnames = sorted(set(canonical.values()), key=int if numeric else None)
        index = {classname: i for i, classname in enumerate(classnames)}
        return samples, [index[canonical[sample.label]] for sample in samples], classnames
    index = {classname: i for i, classname in enumerate(known)}
    kept, labels = [], []
    for sample in samples:
        number = int(sample.label) if INTEGER.fullmatch(sample.label) else index.get(sample.label, -1)
        if not 0 <= number < len(known):
            bad("unknown label", sample.where, f"the label '{sample.label}' is neither a class index "
                                               f"0..{len(known) - 1} nor a class name in {known_from}")
            continue
        kept.append(sample)
        labels.append(number)
    return kept, labels, list(known)
