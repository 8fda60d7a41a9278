"""How long `create_model("mbm-shapes")` takes in a fresh process, offline (issue 2's bar: < 3 s).

Each repeat starts a new Python, so imports (torch, open_clip) are counted as a user would feel them.
Run: python benchmarks/bench_load.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import time, json
t0 = time.perf_counter()
from mbm.models import create_model
t1 = time.perf_counter()
m = create_model("mbm-shapes", device="cpu")
t2 = time.perf_counter()
m.encode_texts(["a red circle"])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "create": t2 - t1, "first_query": t3 - t2, "total": t3 - t0}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, check=True,
                                      capture_output=True, text=True).stdout.strip().splitlines()[-1])
            for _ in range(args.repeats)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU threads, Python {platform.python_version()}")
    for key in ("import", "create", "first_query", "total"):
        values = [r[key] for r in runs]
        print(f"{key:12} median {statistics.median(values):.2f} s  "
              f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")


if __name__ == "__main__":
    main()
