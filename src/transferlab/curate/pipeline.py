"""`curate`: a raw image-text pool in, a balanced, deduplicated, filtered pool out, in four stages.

    count   per shard, in parallel    read each pair once: caption checks, hashes, metadata matches, embeddings
    plan    once                      pool-wide decisions (exact and near dedup, score filter), entry counts
    sample  per shard, in parallel    MetaCLIP draws with the counts; the curated shard is written
    report  once                      curation.json, entry_counts.tsv, report.html

`stage="all"` runs them in order on one machine with `workers` processes; the plan and the report read
each shard's work file here as soon as a worker has written it, while the workers go on with the rest.
Each stage can also run alone, and `count` and `sample` on any subset of the shards, so a job runner can
spread the shards over many machines sharing `out` (docs/curation.md has the recipe). The stages talk only
through the files in `<out>/work/`; each is a no-op on shards it already finished with the same options.
The pool is only read.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from tqdm import tqdm

from transferlab.curate.count import count_shard
from transferlab.curate.plan import Planner, plan
from transferlab.curate.report import Reporter, report
from transferlab.curate.sample import output_name, sample_shard
from transferlab.curate.settings import Settings
from transferlab.curate.workfiles import WORK
from transferlab.data.tar.dataset_files import CLASSNAMES, TEMPLATES
from transferlab.data.tar.paths import expand_shards
from transferlab.errors import UserError
from transferlab.fileio import atomic_write

STAGES = ("all", "count", "plan", "sample", "report")


def curate(pool: str | Path | list[Path], out: str | Path, settings: Settings | None = None, workers: int = 1,
           stage: str = "all") -> dict | None:
    """Run `stage` of the curation of `pool` (a shard pattern, as `expand_shards` takes, or a list of
    shard paths) into `out`; the curation.json record when the report was written, else None."""
    if stage not in STAGES:
        raise UserError(f"Unknown curation stage '{stage}': choose one of {', '.join(STAGES)}.")
    settings = settings or Settings()
    shards = [Path(p) for p in pool] if isinstance(pool, list) else expand_shards(str(pool))
    out = Path(out)
    _check_paths(shards, out)
    settings.fingerprint  # noqa: B018 -- read the metadata once here, not in every worker (and fail early)
    with _processes(workers if stage in ("all", "count", "sample") else 1, len(shards), settings) as run:
        if stage == "all":  # the plan reads each count file as soon as it is written, while the workers go on
            planner = Planner(out, settings)
            run(count_shard, shards, out, "count", then=planner.read)
            planner.finish(shards)
        elif stage == "count":
            run(count_shard, shards, out, "count")
        elif stage == "plan":
            plan(shards, out, settings)
        if stage in ("all", "sample"):
            reporter = Reporter(shards, out, settings) if stage == "all" else None
            run(sample_shard, shards, out, "sample", then=reporter and reporter.read)
            carry_dataset_files(shards, out)
            if reporter is not None:
                return reporter.finish()
    return report(shards, out, settings) if stage == "report" else None


def carry_dataset_files(shards: list[Path], out: Path) -> list[Path]:
    """Copy the pool's dataset-level files (class names, templates) beside the curated shards, so the output
    reads as the pool did (labels named, with `stream` or without). An existing copy must be the same."""
    copied = []
    for name in (CLASSNAMES, TEMPLATES):  # what readers look for beside shards
        source = shards[0].parent / name
        if not source.is_file():
            continue
        target = Path(out) / name
        if target.exists():
            if target.read_bytes() != source.read_bytes():
                raise UserError(f"{target} exists and differs from the pool's {source}; transferlab never overwrites "
                                f"data. Remove it, or curate into another --out.")
            continue
        atomic_write(target, source.read_bytes())
        copied.append(target)
    return copied


def _check_paths(shards: list[Path], out: Path) -> None:
    """Refuse an output that could overwrite input or someone's data, and shards whose outputs collide."""
    if not shards:
        raise UserError("The pool holds no shards. Give a .tar file, a folder of them, a glob or a brace pattern.")
    seen: dict[str, Path] = {}
    for shard in shards:
        name = output_name(shard)
        if name in seen:
            raise UserError(f"Shards {seen[name]} and {shard} would both be curated into {out / name}: shards are "
                            f"named by file name. Rename one of them.")
        seen[name] = shard
        if out.resolve() == shard.parent.resolve():
            raise UserError(f"--out {out} is the folder of the pool's shard {shard}; curation never writes into its "
                            f"input. Choose another --out.")
    if out.is_dir() and not (out / WORK).is_dir() and any(out.glob("*.tar")):
        raise UserError(f"{out} already holds .tar files and is not a curation's output (it has no {WORK}/ "
                        f"folder); transferlab never overwrites data. Choose an empty or new --out.")


_worker_settings: Settings | None = None  # a worker's copy, received once (its matcher is built once from it)


def _start_worker(settings: Settings) -> None:
    """Worker processes share the cores: one thread each for torch, should a model step import it (torch is
    imported only then: a worker that needs no model stays small and starts fast)."""
    global _worker_settings
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    _worker_settings = settings


def _in_worker(stage: Callable, out: Path, shard: Path) -> Path:
    return stage(shard, out, _worker_settings)


def start_method() -> str:
    """How workers start: forked on Linux while torch is not loaded here (a fork copies this process in
    milliseconds, with the settings and metadata already read), spawned otherwise: a forked child would
    inherit torch's threads and any CUDA state (a spawned one imports its modules again, ~0.4 s)."""
    return "fork" if sys.platform.startswith("linux") and "torch" not in sys.modules else "spawn"


@contextmanager
def _processes(workers: int, shards: int, settings: Settings) -> Iterator[Callable]:
    """A function running `stage(shard, out, settings)` for every shard, in `workers` processes (one pool,
    started once, serves every stage, and gets the settings once), or in this process for one worker."""
    pool = None
    if workers > 1 and shards > 1:
        pool = multiprocessing.get_context(start_method()).Pool(min(workers, shards), initializer=_start_worker,
                                                                initargs=(settings,))

    def run(stage: Callable, paths: list[Path], out: Path, desc: str, then: Callable | None = None) -> None:
        """`stage` on every shard; `then(shard)` here on each finished one, in order, while the rest run."""
        bar = partial(tqdm, total=len(paths), desc=desc, unit=" shards", leave=False, delay=2)
        finished = map(partial(stage, out=out, settings=settings), paths) if pool is None else \
            pool.imap(partial(_in_worker, stage, out), paths)
        for shard, _ in zip(paths, bar(finished), strict=True):
            if then is not None:
                then(shard)

    try:
        yield run
    finally:
        if pool is not None:
            pool.terminate()  # every task has finished or failed by now
