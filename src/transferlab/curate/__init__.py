"""Curating an image-text pool into a training set: MetaCLIP metadata balancing, exact and near
deduplication, caption and model-score filters, and a report of what each step removed.

    from transferlab.curate import Settings, curate
    curate("pool/shard-{000000..000099}.tar", "curated", Settings(metadata=Path("entries.txt"), cap=20_000))

`pipeline` runs the stages (count, plan, sample, report) on one machine or, stage by stage and shard by
shard, on many; docs/curation.md describes each step and the many-machines recipe.
"""

from transferlab.curate.filters import CaptionFilter
from transferlab.curate.metadata import Matcher, Metadata, normalise, read_metadata
from transferlab.curate.pipeline import STAGES, curate
from transferlab.curate.settings import Settings

__all__ = ["STAGES", "CaptionFilter", "Matcher", "Metadata", "Settings", "curate", "normalise", "read_metadata"]
