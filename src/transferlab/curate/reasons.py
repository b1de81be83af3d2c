"""Why a pair left the pool: one reason per removed pair, each belonging to a step of the pipeline.

Steps run in the order listed, and a pair is removed by the first step that rejects it, so the counts per
reason add up to the pool: every pair read is either kept or has exactly one reason. A pair's fate is
stored as a one-byte code (0: kept) in the work files between stages.
"""

from __future__ import annotations

STEPS: dict[str, tuple[str, ...]] = {
    "caption": ("missing caption", "empty caption", "invalid caption"),
    "caption filter": ("caption too short", "caption too long", "too few letters", "non-printable characters"),
    "image": ("no image", "undecodable image"),
    "exact dedup": ("exact duplicate",),
    "near dedup": ("near-duplicate image", "near-duplicate caption"),
    "score filter": ("low score",),
    "balancing": ("no metadata match", "not sampled"),
}
REASONS: tuple[str, ...] = tuple(reason for reasons in STEPS.values() for reason in reasons)
KEPT = 0
CODE = {reason: code for code, reason in enumerate(REASONS, 1)}
STEP_OF = {reason: step for step, reasons in STEPS.items() for reason in reasons}


def reason_of(code: int) -> str:
    return REASONS[code - 1]
