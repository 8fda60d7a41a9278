"""How long `create_model("mbm-shapes")` takes in a fresh process, offline (issue 2's bar: < 3 s; issue 16's for
`--model mbm-world`).

Each repeat starts a new Python, so imports (torch, open_clip) are counted as a user would feel them.
A second fresh process per repeat takes the imports apart: torch, then `torch._dynamo` (which torchvision
imports at its top, for `torchvision.ops`), torchvision, open_clip, then building the model; these are the
seconds `python app.py` spends on the model before the page can answer (see benchmarks/bench_page.py).
A third measures the refusal of an open_clip model that is not cached, on this machine's network with no
`HF_HUB_OFFLINE` flag and an empty Hugging Face cache: the seconds from `create_model` to its error (issue 18's
bar: < 2 s; huggingface_hub alone retries an unreachable hub for about a minute).
Run: python benchmarks/bench_load.py [--repeats 7] [--model mbm-world]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import time, json
t0 = time.perf_counter()
from mbm.models import create_model
t1 = time.perf_counter()
m = create_model(MODEL, device="cpu")
t2 = time.perf_counter()
m.encode_texts(["a red circle"])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "create": t2 - t1, "first_query": t3 - t2, "total": t3 - t0}))
"""
PARTS = """
import time, json
marks = [time.perf_counter()]
import torch
marks.append(time.perf_counter())
import torch._dynamo
marks.append(time.perf_counter())
import torchvision
marks.append(time.perf_counter())
import open_clip
marks.append(time.perf_counter())
from mbm.models import create_model
create_model(MODEL, device="cpu")
marks.append(time.perf_counter())
names = ["torch", "torch._dynamo", "torchvision", "open_clip", "create_model"]
print(json.dumps({n: b - a for n, a, b in zip(names, marks, marks[1:])}))
"""
REFUSE = """
import time, json
from mbm.models import WeightsUnavailableError, create_model
import open_clip  # imported already when a page asks for another model
t0 = time.perf_counter()
try:
    create_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
except WeightsUnavailableError:
    pass
print(json.dumps({"refused": time.perf_counter() - t0}))
"""
PART_NAMES = {"torch": "import torch", "torch._dynamo": "+ torch._dynamo (torchvision.ops imports it)",
              "torchvision": "+ torchvision", "open_clip": "+ open_clip (and timm)",
              "create_model": "+ mbm.models, create_model (build, weights)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", default="mbm-shapes", help="the embedded model to load (default mbm-shapes)")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    child = lambda code, environ=env: json.loads(subprocess.run(
        [sys.executable, "-c", f"MODEL = {args.model!r}\n" + code], cwd=ROOT, env=environ, check=True,
        capture_output=True, text=True, timeout=300).stdout.strip().splitlines()[-1])
    runs, parts, refusals = [], [], []
    with tempfile.TemporaryDirectory() as empty:
        online = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        for _ in range(args.repeats):  # interleaved, so that all see the same load
            runs.append(child(CHILD))
            parts.append(child(PARTS))
            refusals.append(child(REFUSE, online | {"HF_HOME": empty})["refused"])
    print(f"{args.model}; machine: {platform.machine()}, {os.cpu_count()} CPU threads, "
          f"Python {platform.python_version()}")
    for key in ("import", "create", "first_query", "total"):
        values = [r[key] for r in runs]
        print(f"{key:12} median {statistics.median(values):.2f} s  "
              f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")
    print("\nthe same, import by import (another fresh process each repeat):")
    for key, what in PART_NAMES.items():
        values = [r[key] for r in parts]
        print(f"{what:46} median {statistics.median(values):.2f} s  (min {min(values):.2f}, max {max(values):.2f})")
    print(f"\nuncached ViT-B-32:laion2b_s34b_b79k refused, no offline flag: median {statistics.median(refusals):.2f} s "
          f"(min {min(refusals):.2f}, max {max(refusals):.2f})")


if __name__ == "__main__":
    main()
