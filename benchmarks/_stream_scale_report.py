"""The markdown tables benchmarks/stream_scale.py prints after its JSON lines: every run, then issue 24's
targets beside what this invocation measured (ratios against MosaicML Streaming from the same invocation)."""

from __future__ import annotations

from statistics import median

MIB = 2**20
FIRST_STEP_BARS = {("epochs", "cold"): 90.0, ("epochs", "warm"): 10.0, ("shards", "cold"): 15.0,
                   ("shards", "warm"): 15.0}  # seconds; the issue sets them for 10M pairs on this 2-core machine
PSS_GROWTH_RATIO = 1.5  # PSS(10M) <= 1.5 x PSS(1M)
INDEX_BYTES_PER_SAMPLE = 48  # PSS(10M) - PSS(1M) <= 9M x 48 B + the captions' bytes
WARM_VS_MOSAICML, COLD_VS_MOSAICML, PSS_PER_SAMPLE_VS_MOSAICML = 2.0, 1.0, 1.0


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _runs(rows: list[dict]) -> list[str]:
    lines = ["| pool | run | cache | first step / batch (s) | wall (s) | tree PSS peak (MiB) | main RSS peak (MiB) | "
             "PSS per sample (B) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        pool, what = f"{row['samples']:,}", row["measure"]
        if what == "pool":
            lines.append(f"| {pool} | pool written ({row['shards']} shards, {row['bytes'] / 2**30:.2f} GiB, "
                         f"{row['processes']} processes{', reused' if row['reused'] else ''}) | | | "
                         f"{_fmt(row['seconds'])} | | | |")
        elif what == "mosaicml_conversion":
            lines.append(f"| {pool} | MosaicML MDSWriter conversion | | | {_fmt(row['conversion_seconds'])} | | | |")
        elif "skipped" in row:
            run = f"pretrain, sampling={row['mode']}" if what == "pretrain" else "MosaicML Streaming"
            lines.append(f"| {pool} | {run} | {row.get('cache', '')} | skipped: {row['skipped']} | | | | |")
        elif what == "pretrain":
            lines.append(f"| {pool} | pretrain, sampling={row['mode']} | {row['cache']} | "
                         f"{_fmt(row['first_step_seconds'])} | {_fmt(row['wall_seconds'])} | "
                         f"{_fmt(row['peak_tree_pss_mib'], 0)} | {_fmt(row['main_vmhwm_mib'], 0)} | |")
        elif what == "first_batch":
            lines.append(f"| {pool} | {row['plane']} data plane | {row['cache']} | "
                         f"{_fmt(row['first_batch_seconds'], 3)} | | {_fmt(row['peak_tree_pss_mib'], 0)} | | "
                         f"{_fmt(row['pss_per_sample_bytes'], 0)} |")
    return lines


def _target(pool: str, name: str, measured: float | None, bar: float, shown: str = "", unit: str = "") -> str:
    met = "–" if measured is None else ("yes" if measured <= bar else "**no**")
    return f"| {pool} | {name} | {_fmt(measured)}{unit}{shown} | ≤ {bar:,.2f}{unit} | {met} |"


def _first_steps(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        bar = FIRST_STEP_BARS.get((row.get("mode"), row.get("cache")))
        if row["measure"] == "pretrain" and "skipped" not in row and bar is not None:
            lines.append(_target(f"{row['samples']:,}", f"pretrain {row['mode']} {row['cache']}: time to first step",
                                 row["first_step_seconds"], bar, unit=" s"))
    return lines


def _growth(rows: list[dict]) -> list[str]:
    """PSS of the largest pool against the smallest, per mode and cache."""
    pss = {(r["samples"], r["mode"], r["cache"]): r["peak_tree_pss_mib"] * MIB
           for r in rows if r["measure"] == "pretrain" and "skipped" not in r}
    captions = {r["samples"]: r["caption_bytes"] for r in rows if r["measure"] == "pool"}
    sizes = sorted({size for size, _, _ in pss})
    if len(sizes) < 2:
        return []
    small, big = sizes[0], sizes[-1]
    lines, pair = [], f"{small:,} → {big:,}"
    for _, mode, cache in sorted(key for key in pss if key[0] == small):
        if (big, mode, cache) not in pss:
            continue
        a, b = pss[small, mode, cache], pss[big, mode, cache]
        allowed = (big - small) * INDEX_BYTES_PER_SAMPLE + captions[big] - captions[small]
        lines.append(_target(pair, f"pretrain {mode} {cache}: PSS({big:,}) / PSS({small:,})", b / a, PSS_GROWTH_RATIO))
        lines.append(_target(pair, f"pretrain {mode} {cache}: PSS growth (MiB)", (b - a) / MIB, allowed / MIB))
    return lines


def _median(runs: list[dict], plane: str, cache: str, key: str) -> float | None:
    values = [r[key] for r in runs if r["plane"] == plane and r["cache"] == cache]
    return median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _planes(rows: list[dict]) -> list[str]:
    """transferlab's data plane against MosaicML's, per pool: medians over the repeats."""
    lines = []
    for samples in sorted({r["samples"] for r in rows if r["measure"] == "first_batch"}):
        runs = [r for r in rows if r["measure"] == "first_batch" and r["samples"] == samples]
        seconds = {(plane, cache): _median(runs, plane, cache, "first_batch_seconds")
                   for plane in ("transferlab", "mosaicml") for cache in ("cold", "warm")}
        if seconds["mosaicml", "warm"] is None:
            continue
        per_sample = {plane: max((v for c in ("cold", "warm")
                                  if (v := _median(runs, plane, c, "pss_per_sample_bytes")) is not None), default=None)
                      for plane in ("transferlab", "mosaicml")}
        conversion = next((r["conversion_seconds"] for r in rows
                           if r["measure"] == "mosaicml_conversion" and r["samples"] == samples), None)
        tl_cold, tl_warm = seconds["transferlab", "cold"], seconds["transferlab", "warm"]
        mm_cold, mm_warm = seconds["mosaicml", "cold"], seconds["mosaicml", "warm"]
        mm_total = None if conversion is None or mm_cold is None else conversion + mm_cold
        pool = f"{samples:,}"
        lines += [
            _target(pool, "data plane warm start-up / MosaicML's", _ratio(tl_warm, mm_warm), WARM_VS_MOSAICML,
                    f" ({_fmt(tl_warm, 3)} s / {_fmt(mm_warm, 3)} s)", "×"),
            _target(pool, "data plane cold start-up / (MosaicML conversion + start-up)", _ratio(tl_cold, mm_total),
                    COLD_VS_MOSAICML, f" ({_fmt(tl_cold)} s / ({_fmt(conversion)} + {_fmt(mm_cold, 3)}) s)", "×"),
            _target(pool, "data plane PSS per sample / MosaicML's (the larger of cold, warm)",
                    _ratio(per_sample["transferlab"], per_sample["mosaicml"]), PSS_PER_SAMPLE_VS_MOSAICML,
                    f" ({_fmt(per_sample['transferlab'], 0)} B / {_fmt(per_sample['mosaicml'], 0)} B)", "×")]
    return lines


def tables(rows: list[dict]) -> str:
    targets = ["| pool | target (issue 24) | measured | bar | met |", "|---|---|---|---|---|",
               *_first_steps(rows), *_growth(rows), *_planes(rows)]
    return "\n".join([*_runs(rows), "", *targets])
