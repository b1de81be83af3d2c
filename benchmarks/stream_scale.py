"""Pool scale (issue 24): time to the first step and memory of `transferlab pretrain` on generated pools of 1M
and 10M tiny pairs, and the data planes alone against MosaicML Streaming on the same samples.

For each pool size N (`--sizes`):

1. A webdataset pool of N tiny pairs (benchmarks/_tiny_pool.py: an 8x8 PNG and a distinct caption a sample,
   10,000 samples a shard, uncompressed; tar bytes written directly by `--processes` processes). Its writing is
   timed apart. Free disk space is checked first: the pool (~2 KB a sample, 20 GB at 10M) and its MosaicML copy
   must fit with 10 GiB to spare.
2. `transferlab pretrain` in a subprocess, per mode of `--modes` (train.sampling=epochs, shards, ...), first with
   a new, empty TRANSFERLAB_CACHE ("cold"), then again with the same one ("warm"): stream_memory.py's small
   recipe at 8 px (cnn-small, text-transformer-tiny), `--steps` steps of `--batch-size`, `--workers` loader
   workers, all of the pool for training, no evaluation, a metrics line per step. Reported: time to the first
   step (from starting the process until metrics.jsonl holds its first line, checked every 0.1 s), wall time,
   the process tree's PSS at its peak (the main process and its loader workers, sampled every 0.1 s,
   benchmarks/_proc_memory.py) and the main process's peak RSS (VmHWM). The page cache cannot be dropped without
   root, so every cold run follows a read of the whole pool: cold means "pool in page cache, no index cache"
   (a pool larger than the free memory is only partly cached). A mode the installed transferlab rejects is
   skipped, with its message as the reason.
3. The data planes alone, each in a fresh process (benchmarks/_data_planes.py), from opening the pool to the
   first batch of `--batch-size` decoded images out of a DataLoader with `--workers` workers: transferlab's
   streamed loader on the shards (cold: new cache; warm: the same again), and MosaicML Streaming's
   StreamingDataset on its own copy of the samples, written by its MDSWriter (conversion timed apart;
   cold: the first open after it). Library imports are timed apart and left out. Reported: seconds, the tree's
   PSS peak, and PSS per sample: (that peak - the process's PSS before opening the pool) / N. `--repeats`
   repeats the four runs, alternating which plane goes first; the table takes medians.

One JSON line per measurement on stdout, then two markdown tables: the runs, and the issue's targets with the
ratios against MosaicML measured in the same invocation (pass or fail). Everything written (pools, the MDS copy,
caches, runs) is deleted at the end, also on an error or Ctrl-C, unless `--keep` (pools and MDS copies kept
under `--workdir`, and reused by the next invocation with the same workdir).

MosaicML Streaming runs in its own virtual environment sharing this one's torch (`--peer-python`; without it the
MosaicML rows are skipped with the reason):

    python3 -m venv /work/wt/peers-venv
    echo /work/main/.venv/lib/python3.11/site-packages > /work/wt/peers-venv/lib/python3.11/site-packages/main.pth
    /work/wt/peers-venv/bin/pip install mosaicml-streaming   # 0.13.0; check with --dry-run that it adds no torch

    python benchmarks/stream_scale.py [--sizes 1000000,10000000 --modes epochs,shards --repeats 1 --keep]
    python benchmarks/stream_scale.py --tiny     # 5,000 samples in 2 shards, no MosaicML unless --peer-python
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _proc_memory import MIB, watch  # noqa: E402
from _stream_scale_report import tables  # noqa: E402
from _tiny_pool import pool_bytes, write_pool  # noqa: E402
from stream_memory import recipe  # noqa: E402

GIB = 2**30
SPARE = 10 * GIB
MDS_BYTES_PER_SAMPLE = 400  # MDSWriter's copy: the 268-byte PNG, the caption, offsets (323 B measured)
PEER_PYTHON = Path("/work/wt/peers-venv/bin/python")
TINY = 5_000  # --tiny: one pool of this many samples in 2 shards


def check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + SPARE:
        raise SystemExit(f"stream_scale: {folder} has {free / GIB:.1f} GiB free, and this pool needs "
                         f"{needed / GIB:.1f} GiB with {SPARE / GIB:.0f} GiB to spare. Free some space, pass "
                         f"--workdir on a larger disk, or give smaller --sizes.")


def read_through(paths: list[Path]) -> float:
    """Read every file once (into the page cache); the seconds it took."""
    started, buffer = time.perf_counter(), bytearray(16 * 2**20)
    for path in paths:
        with open(path, "rb", buffering=0) as file:
            while file.readinto(buffer):
                pass
    return round(time.perf_counter() - started, 2)


def _first_line(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return b"\n" in file.read(4096)
    except OSError:
        return False


def pretrain_run(command: list[str], cache: Path, out: Path, log: Path) -> dict:
    """Run `transferlab pretrain` with TRANSFERLAB_CACHE=cache, watching its tree; its times and peaks, or
    {"skipped": why} when it stops on its configuration before a step (a mode it does not know)."""
    env = {**os.environ, "TRANSFERLAB_CACHE": str(cache)}
    started, first = time.perf_counter(), []

    def tick() -> None:
        if not first and _first_line(out / "metrics.jsonl"):
            first.append(time.perf_counter() - started)
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        peaks = watch(proc, tick=tick)
    wall = time.perf_counter() - started
    text = log.read_text(errors="replace")
    if proc.returncode:
        if not first and "train.sampling" in text:
            return {"skipped": [line for line in text.splitlines() if line.strip()][-1][-600:]}
        raise SystemExit(f"{' '.join(command)} failed; see {log}:\n{text[-3000:]}")
    if not first:
        raise SystemExit(f"{out / 'metrics.jsonl'} holds no line after the run; see {log}")
    memory = peaks.mib()
    return {"first_step_seconds": round(first[0], 2), "wall_seconds": round(wall, 2),
            "peak_tree_pss_mib": memory["peak_tree_pss_mib"], "main_vmhwm_mib": memory["main_vmhwm_mib"],
            "peak_tree_rss_mib": memory["peak_tree_rss_mib"], "processes": memory["processes"]}


def helper_run(python: str, args: list[str], cache: Path, log: Path) -> tuple[dict, int]:
    """benchmarks/_data_planes.py in a fresh process: its JSON line and its tree's peak PSS (bytes)."""
    command = [python, str(HERE / "_data_planes.py"), *args]
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, env={**os.environ, "TRANSFERLAB_CACHE": str(cache)},
                                stdout=subprocess.PIPE, stderr=sink, text=True)
        peaks = watch(proc)
        output = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed; see {log}:\n{log.read_text(errors='replace')[-3000:]}")
    return json.loads(output.strip().splitlines()[-1]), peaks.tree_pss


def first_batch(python: str, plane: str, pool: str, samples: int, args, cache: Path, log: Path) -> dict:
    result, sampled = helper_run(python, [plane, pool, str(samples), "--batch", str(args.batch_size), "--workers",
                                          str(args.workers)], cache, log)
    peak = max(sampled / MIB, result["tree_pss_at_first_batch_mib"])
    return {**result, "peak_tree_pss_mib": round(peak, 1),
            "pss_per_sample_bytes": round((peak - result["pss_before_open_mib"]) * MIB / samples, 1)}


class Bench:
    """One invocation: where it writes, what it printed (for the tables)."""

    def __init__(self, args, work: Path) -> None:
        self.args, self.work, self.rows = args, work, []
        self.scratch = work / "scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.transferlab = str(Path(sys.executable).parent / "transferlab")

    def emit(self, **row) -> None:
        row = {"benchmark": "stream_scale", **row, "load_average": round(os.getloadavg()[0], 2)}
        print(json.dumps(row), flush=True)
        self.rows.append(row)

    def say(self, message: str) -> None:
        print(f"stream_scale: {message}", file=sys.stderr, flush=True)

    def pool(self, samples: int) -> dict:
        folder, peer = self.work / f"pool-{samples}", self.args.peer_python is not None
        needed = (0 if (folder / "pool.json").exists() else pool_bytes(samples, self.args.per_shard)) + (
            samples * MDS_BYTES_PER_SAMPLE if peer and not (self.work / f"mds-{samples}" / "index.json").exists()
            else 0)
        check_disk(self.work, needed)
        self.say(f"writing a pool of {samples:,} samples in {folder}")
        pool = write_pool(folder, samples, self.args.per_shard, self.args.processes)
        self.emit(measure="pool", **pool)
        return pool

    def pretrain(self, pool: dict, mode: str) -> None:
        samples, shards = pool["samples"], sorted((self.work / f"pool-{pool['samples']}").glob("shard-*.tar"))
        cache = self.scratch / f"cache-{samples}-{mode}"
        sets = recipe(pool["pattern"], self.args.steps, self.args.batch_size, self.args.workers) + [
            arg for s in ("model.image_size=8", "train.warmup_steps=1", "train.log_every=1",
                          f"train.sampling={mode}", "datasets.pool.splits={train: 1}") for arg in ("--set", s)]
        for temperature in ("cold", "warm"):
            read = read_through(shards) if temperature == "cold" else None
            out = self.scratch / f"run-{samples}-{mode}-{temperature}"
            self.say(f"pretrain {mode} {temperature} on {samples:,} samples")
            result = pretrain_run([self.transferlab, "pretrain", "--out", str(out), *sets], cache, out,
                                  self.scratch / f"{out.name}.log")
            extra = {"pool_in_page_cache": True, "page_cache_read_seconds": read} if read is not None else {}
            self.emit(measure="pretrain", samples=samples, mode=mode, cache=temperature, **extra, **result)
            shutil.rmtree(out, ignore_errors=True)
            if "skipped" in result:
                self.emit(measure="pretrain", samples=samples, mode=mode, cache="warm", skipped=result["skipped"])
                break
        shutil.rmtree(cache, ignore_errors=True)

    def planes(self, pool: dict) -> None:
        samples, args = pool["samples"], self.args
        folder, mds = self.work / f"pool-{samples}", self.work / f"mds-{samples}"
        peer = args.peer_python
        if peer is None:
            self.emit(measure="mosaicml", samples=samples, skipped=args.peer_reason)
        elif not (mds / "index.json").exists():
            self.say(f"converting {samples:,} samples with MosaicML's MDSWriter")
            shutil.rmtree(mds, ignore_errors=True)
            converted, _ = helper_run(peer, ["convert", str(folder), str(mds), "--processes", str(args.processes)],
                                      self.scratch, self.scratch / f"convert-{samples}.log")
            if converted["samples"] != samples:
                raise SystemExit(f"MDSWriter wrote {converted['samples']} samples of {samples}")
            self.emit(measure="mosaicml_conversion", **converted)
        else:
            self.emit(measure="mosaicml_conversion", samples=samples, reused=True, conversion_seconds=None)
        shards = sorted(folder.glob("shard-*.tar"))
        for repeat in range(args.repeats):
            cache = self.scratch / f"plane-cache-{samples}-{repeat}"
            one, other = ("transferlab", "mosaicml")[::1 if repeat % 2 == 0 else -1]  # who goes first alternates
            for plane, temperature in ((one, "cold"), (other, "cold"), (other, "warm"), (one, "warm")):
                if plane == "mosaicml" and peer is None:
                    continue
                read = read_through(sorted(mds.rglob("*.mds")) if plane == "mosaicml" else shards) \
                    if temperature == "cold" else None
                self.say(f"{plane} data plane, {temperature}, {samples:,} samples")
                python, source = (peer, str(mds)) if plane == "mosaicml" else (sys.executable, pool["pattern"])
                result = first_batch(python, plane, source, samples, args, cache,
                                     self.scratch / f"plane-{plane}-{temperature}-{samples}.log")
                self.emit(measure="first_batch", samples=samples, cache=temperature, repeat=repeat,
                          workers=args.workers, **({"page_cache_read_seconds": read} if read is not None else {}),
                          **result)
            shutil.rmtree(cache, ignore_errors=True)

    def forget(self, samples: int) -> None:
        if not self.args.keep:
            for name in (f"pool-{samples}", f"mds-{samples}"):
                shutil.rmtree(self.work / name, ignore_errors=True)


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="pool sizes, comma-separated")
    parser.add_argument("--tiny", action="store_true", help=f"one pool of {TINY:,} samples in 2 shards: the test's")
    parser.add_argument("--modes", default="epochs,shards", help="train.sampling values, comma-separated")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="loader workers (train.loader_workers)")
    parser.add_argument("--per-shard", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2, help="processes writing the pool and converting it")
    parser.add_argument("--repeats", type=int, default=1, help="data-plane comparisons per pool")
    parser.add_argument("--peer-python", default=None, help=f"Python with mosaicml-streaming (default: {PEER_PYTHON} "
                                                            f"if it exists; 'none' skips MosaicML)")
    parser.add_argument("--workdir", type=Path, default=None, help="where pools are written (default: a new "
                                                                   "folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the pools and MDS copies in --workdir")
    args = parser.parse_args(argv)
    args.sizes = [TINY] if args.tiny else [int(size) for size in args.sizes.split(",")]
    args.per_shard = TINY // 2 if args.tiny else args.per_shard
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    args.peer_reason = None
    if args.peer_python == "none":
        args.peer_python, args.peer_reason = None, "--peer-python none"
    elif args.peer_python is None and args.tiny:
        args.peer_reason = "--tiny runs without MosaicML unless --peer-python is given"
    elif args.peer_python is None:
        args.peer_python = str(PEER_PYTHON) if PEER_PYTHON.exists() else None
        args.peer_reason = f"no --peer-python and no {PEER_PYTHON}: install it as this script's docstring says"
    if args.keep and args.workdir is None:
        parser.error("--keep needs --workdir (where the kept pools go, and are found again)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the clean-up below runs
    made = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="tl-bench-scale-", dir="/tmp")) if made else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, work)
    try:
        for samples in args.sizes:
            try:
                pool = bench.pool(samples)
                for mode in args.modes:
                    bench.pretrain(pool, mode)
                bench.planes(pool)
            finally:
                bench.forget(samples)
        print("\n" + tables(bench.rows))
    finally:
        shutil.rmtree(bench.scratch, ignore_errors=True)
        if made:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
