"""Curation throughput: MetaCLIP balancing of a synthetic pool of a million captions against 100,000
metadata entries, against MetaCLIP's own matcher on the same captions, and the speed-up of transferlab's
matcher (the C token matcher where the extension is built, else Aho-Corasick) over a per-entry substring scan.

The pool is written to a temporary folder (deleted at the end) as caption-only webdataset shards. The
metadata holds pseudo-words (90% single words, 10% two-word phrases); each caption mentions 2-4 of them
drawn with Zipf-like frequencies (p ∝ rank^-1.1), so entry counts have a long head and a long tail, among
filler words that match nothing, and 3% of captions mention no entry. The whole curation runs as a user
runs it (`stage="all"`: one pool of `--workers` processes serves every stage), `--repeats` times into fresh
output folders, and once more stage by stage for the time of each stage (each stage then starts its own
workers). Peak memory is the high-water resident set size (VmHWM in /proc; Linux) of this process and of its
largest worker, polled while they run (a forked worker counts the pages it shares with this process once it
touches them, so its peak private memory, RssAnon, is given too), beside that of a fresh process that only
imported the worker's modules. getrusage's ru_maxrss is not used: a forked child inherits its parent's
high-water mark.

The reference is MetaCLIP's `metaclip/metaclip1/substr_matching_ahocorasick.py` (facebookresearch/MetaCLIP),
imported from a checkout given with --metaclip (never copied here): one process runs its `substr_matching`
over every caption of the pool, already in memory (reading them is not timed), lower-cased as transferlab's
default matching is, and counts the entries it returns, `--repeats` times, alternating with transferlab's
runs so both see the same machine. Its captions/s is set against transferlab's whole curation (read shards,
normalise, match, count, plan, sample, write, report) with --workers processes and the comparison's
`--no-dedup`, median against median (the ranges are printed too); the per-entry counts must be identical.

The matcher comparison runs in the same process on a random subsample of captions: the naive scan tests
every entry as a padded substring of the normalised caption (MetaCLIP's original loop); both matchers
must return the same entries, and the time per caption of each is reported.

    git clone https://github.com/facebookresearch/MetaCLIP /tmp/MetaCLIP
    python benchmarks/curate_throughput.py --metaclip /tmp/MetaCLIP [--captions 1000000 --shards 100 --workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from transferlab.curate import Matcher, Settings, normalise, read_metadata
from transferlab.curate.pipeline import curate, start_method

CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"
FILLERS = ("a photo of the with and in on at near this is an image showing some two three small large old new "
           "my our best view from under over beside picture close up shot red blue green").split()
ZIPF = 1.1
UNMATCHED = 0.03


def pseudo_words(count: int) -> list[str]:
    """`count` distinct three-syllable words such as 'bakito'."""
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    n = len(syllables)
    return [syllables[i // (n * n)] + syllables[i // n % n] + syllables[i % n] for i in range(count)]


def zipf_probabilities(count: int) -> np.ndarray:
    weights = np.arange(1, count + 1, dtype=np.float64) ** -ZIPF
    return weights / weights.sum()


def write_pool(folder: Path, captions: int, shards: int, entries: int, rng: np.random.Generator) -> tuple[Path, list]:
    """The metadata file and the shards; returns the metadata path and a random subsample of captions."""
    words = pseudo_words(entries)
    unigrams = int(0.9 * entries)
    order = rng.permutation(unigrams)  # which word is frequent is random, not alphabetical
    pairs = rng.integers(0, unigrams, size=(entries - unigrams, 2))
    phrases = [f"{words[order[a]]} {words[order[b]]}" for a, b in pairs]
    metadata = folder / "entries.txt"
    metadata.write_text("\n".join([words[i] for i in order] + phrases) + "\n")
    word_p, phrase_p = zipf_probabilities(unigrams), zipf_probabilities(len(phrases))
    per_shard, subsample = -(-captions // shards), []
    for shard in range(shards):
        size = min(per_shard, captions - shard * per_shard)
        mentions = rng.choice(unigrams, size=(size, 4), p=word_p)
        counts = rng.integers(2, 5, size=size) * (rng.random(size) >= UNMATCHED)
        phrase = np.where(rng.random(size) < 0.2, rng.choice(len(phrases), size=size, p=phrase_p), -1)
        fillers = rng.integers(0, len(FILLERS), size=(size, 8))
        filler_counts = rng.integers(3, 9, size=size)
        with tarfile.open(folder / f"pool-{shard:05d}.tar", "w") as tar:
            for i in range(size):
                tokens = [FILLERS[f] for f in fillers[i, :filler_counts[i]]]
                tokens += [words[order[m]] for m in mentions[i, :counts[i]]]
                if phrase[i] >= 0 and counts[i]:
                    tokens.append(phrases[phrase[i]])
                rng.shuffle(tokens)
                caption = " ".join(tokens).capitalize() + ("." if i % 2 else "")
                if len(subsample) < 2000 and rng.random() < 2000 / captions:
                    subsample.append(caption)
                data = caption.encode()
                info = tarfile.TarInfo(f"{shard:05d}{i:06d}.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return metadata, subsample


def naive_matches(caption: str, padded_entries: list[str]) -> list[int]:
    text = normalise(caption)
    return [i for i, entry in enumerate(padded_entries) if entry in text]


def compare_matchers(metadata: Path, captions: list[str]) -> dict:
    entries = read_metadata(metadata)
    start = time.perf_counter()
    matcher = Matcher(entries)
    build = time.perf_counter() - start
    start = time.perf_counter()
    naive = [naive_matches(caption, entries.normalised) for caption in captions]
    naive_time = (time.perf_counter() - start) / len(captions)
    repeats = 50
    start = time.perf_counter()
    for _ in range(repeats):
        fast = [matcher(caption) for caption in captions]
    fast_time = (time.perf_counter() - start) / (repeats * len(captions))
    if fast != naive:
        raise AssertionError("the matcher and the naive scan disagree")
    return {"subsample_captions": len(captions), "naive_ms_per_caption": round(1e3 * naive_time, 3),
            "matcher": "C token matcher" if matcher.tokens is not None else "Aho-Corasick",
            "matcher_us_per_caption": round(1e6 * fast_time, 2), "speedup": round(naive_time / fast_time),
            "matcher_build_s": round(build, 2),
            "mean_entries_per_caption": round(float(np.mean([len(m) for m in naive])), 2)}


def high_water_mib() -> float:
    """This process's peak resident memory so far, in MiB."""
    return status_mib("self", "VmHWM")


def status_mib(pid: int | str, field: str) -> float:
    """A memory field of /proc/<pid>/status (VmHWM: peak resident; RssAnon: resident private memory), in MiB
    (0 once the process has exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith(f"{field}:"))
    except (OSError, StopIteration):
        return 0.0


class ChildPeak(threading.Thread):
    """Polls the memory of this process's children (the shard workers) while they run: the peak resident set
    (VmHWM; a forked worker counts the pages it shares with this process once it touches them) and the peak
    of its private memory (RssAnon)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.private, self.running = 0.0, 0.0, True

    def children(self) -> list[str]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    found.append(stat.parent.name)
            except (OSError, IndexError, ValueError):
                continue
        return found

    def run(self) -> None:
        while self.running:
            children = self.children()
            self.peak = max([self.peak, *(status_mib(pid, "VmHWM") for pid in children)])
            self.private = max([self.private, *(status_mib(pid, "RssAnon") for pid in children)])
            time.sleep(0.1)


def pool_captions(folder: Path) -> list[str]:
    captions = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            captions += [tar.extractfile(member).read().decode() for member in tar if member.isfile()]
    return captions


def reference_counts(metaclip: Path, metadata: Path, captions: list[str]) -> tuple[dict, float]:
    """MetaCLIP's Aho-Corasick matcher over `captions` in this process: its per-entry counts and seconds."""
    sys.path.insert(0, str(metaclip / "metaclip" / "metaclip1"))
    import substr_matching_ahocorasick as reference  # noqa: PLC0415 -- from the checkout, at run time

    entries = [line.strip() for line in metadata.read_text().splitlines() if line.strip()]
    counts = [0] * len(entries)
    start = time.perf_counter()
    for caption in captions:
        for entry_id in reference.substr_matching(caption.lower(), entries):
            counts[entry_id] += 1
    seconds = time.perf_counter() - start
    by_entry: dict[str, int] = {}
    for entry, count in zip(entries, counts, strict=True):
        by_entry[entry] = max(by_entry.get(entry, 0), count)  # a repeated line counts its matches once
    return by_entry, seconds


def our_counts(out: Path) -> dict:
    counts = {}
    with open(out / "entry_counts.tsv") as table:
        header = table.readline().rstrip("\n").split("\t")
        for line in table:
            row = dict(zip(header, line.rstrip("\n").split("\t"), strict=True))
            counts[row["entry"]] = int(row["before"])
    return counts


def import_baseline_mib() -> float:
    """The peak memory of a fresh process that only imports what a shard worker imports."""
    code = ("import transferlab.curate.count; print(next(line.split()[1] for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024


def timed_curation(pool: Path, out: Path, settings: Settings, workers: int) -> tuple[float, dict]:
    """One whole curation into a fresh `out` (removed after): its seconds and record."""
    start = time.perf_counter()
    record = curate(str(pool), out, settings, workers, "all")
    seconds = time.perf_counter() - start
    shutil.rmtree(out)
    return seconds, record


def spread(values: list[float]) -> dict:
    return {"median": round(float(np.median(values)), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cap", type=int, default=500, help="MetaCLIP's t")
    parser.add_argument("--repeats", type=int, default=3, help="whole curations and reference runs, alternated")
    parser.add_argument("--naive-subsample", type=int, default=200)
    parser.add_argument("--tmp", type=Path, default=None, help="where the pool is written (default: the system's)")
    parser.add_argument("--metaclip", type=Path, default=None, help="a checkout of facebookresearch/MetaCLIP: "
                                                                     "its matcher is the reference")
    parser.add_argument("--dedup", action="store_true", help="exact dedup on (off: as the reference, which has none)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]  # other work on the machine slows every stage; it is reported
    folder = Path(tempfile.mkdtemp(prefix="curate-bench-", dir=args.tmp))
    try:
        start = time.perf_counter()
        pool = folder / "pool"
        pool.mkdir()
        metadata, subsample = write_pool(pool, args.captions, args.shards, args.entries, rng)
        generated = time.perf_counter() - start
        pool_bytes = sum(p.stat().st_size for p in pool.glob("*.tar"))
        print(f"pool: {args.captions:,} captions, {pool_bytes / 2**20:.0f} MiB in {generated:.0f} s", file=sys.stderr)
        settings = Settings(metadata=metadata, cap=args.cap, dedup=args.dedup)
        stages, workers_peak = {}, ChildPeak()
        workers_peak.start()
        for stage in ("count", "plan", "sample", "report"):
            start = time.perf_counter()
            record = curate(str(pool), folder / "out", settings, args.workers, stage)
            stages[stage] = round(time.perf_counter() - start, 2)
            print(f"{stage}: {stages[stage]} s", file=sys.stderr, flush=True)
        workers_peak.running = False
        mine = our_counts(folder / "out")
        captions = pool_captions(pool) if args.metaclip is not None else []
        totals, references = [], []
        for repeat in range(args.repeats):
            seconds, _ = timed_curation(pool, folder / f"out-{repeat}", settings, args.workers)
            totals.append(seconds)
            if args.metaclip is not None:
                counts, reference_seconds = reference_counts(args.metaclip, metadata, captions)
                references.append(reference_seconds)
            print(f"run {repeat + 1}: curation {seconds:.2f} s, reference "
                  f"{references[-1] if references else float('nan'):.2f} s", file=sys.stderr, flush=True)
        chosen = [subsample[i] for i in rng.choice(len(subsample), size=args.naive_subsample, replace=False)]
        matchers = compare_matchers(metadata, chosen)
        reference = None
        if references:
            differ = [e for e in set(counts) | set(mine) if counts.get(e, 0) != mine.get(e, 0)]
            reference = {"seconds": spread(references),
                         "captions_per_s": round(args.captions / float(np.median(references))),
                         "transferlab_over_reference": round(float(np.median(references) / np.median(totals)), 2),
                         "transferlab_over_reference_per_run": [round(r / t, 2) for r, t in zip(references, totals,
                                                                                                 strict=True)],
                         "entries_compared": len(counts), "entries_with_different_counts": len(differ)}
            print(f"reference: {reference}", file=sys.stderr)
        print(json.dumps({
            "benchmark": "curate_throughput", "captions": args.captions, "entries": args.entries,
            "shards": args.shards, "workers": args.workers, "cpus": os.cpu_count(), "cap": args.cap,
            "native_kernels": native_kernels(),
            "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
            "pool_mib": round(pool_bytes / 2**20), "seconds": {"all_stages": spread(totals), "by_stage": stages},
            "captions_per_s": round(args.captions / float(np.median(totals))),
            "count_captions_per_s": round(args.captions / stages["count"]),
            "kept": record["kept"], "removed": record["removed"],
            "entries_over_cap": record["metadata"]["entries_over_cap"],
            "entries_matched": record["metadata"]["entries_matched_before"],
            "worker_start": start_method(),
            "peak_rss_mib": {"main_process": round(high_water_mib()), "largest_worker": round(workers_peak.peak),
                             "largest_worker_private": round(workers_peak.private),
                             "after_imports_only": round(import_baseline_mib())},
            "matcher": matchers, "metaclip_reference": reference}))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def native_kernels() -> bool:
    """Whether curation's C extension is built here (else its pure-Python twins ran)."""
    from transferlab.curate import count  # noqa: PLC0415

    return count._native is not None


if __name__ == "__main__":
    main()
