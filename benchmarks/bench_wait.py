"""Threads that wait: spinning against passive waiting for the encoder's thread pools, as indexing and queries use
them (issue 19).

    python benchmarks/bench_wait.py [--rounds 3] [--load 0,2]

Between two parallel sections, torch's OpenMP threads (libgomp) and ONNX Runtime's intra-op threads spin by default
before they sleep. That answers the next section sooner when nothing else wants the CPU, and burns it when something
does: the threads that decode the next batch while the encoder runs, or other programs. Each policy runs in a process
of its own (libgomp reads `OMP_WAIT_POLICY` once, as it loads), on the random ViT-B-32-256 of bench_peers.py (made
once under `<mbm cache>/peers/work`), both backends:
- indexing: `Encoder.encode_pixels` on batches of its indexing size while one thread decodes and resizes JPEGs as
  the sync's decoders do: images/s and CPU seconds per image (every thread of the process, the decoding included);
  and the tower alone (the encoder ceiling);
- a query: `encode_texts(["a red circle"])`, p50 ms, on all threads (what the page does on an idle machine).
`--load N` runs N processes spinning on the CPU beside it, as other programs would. Ratios are wait / spin, from
the same round. mbm's choice: `python -m mbm index` and `embed` wait (`mbm.__main__.BATCH_COMMANDS`; ONNX image graphs
`ort_options(spin=False)`), and query processes keep the spinning default.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import statistics
import sys
import threading
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from bench_peers import (  # noqa: E402
    ARCH,
    child_env,
    images_per_s,
    make_model,
    mbm_cache_root,
    measured,
    p50_ms,
    progress,
)

POLICIES = ("spin", "wait")


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def measure(a: dict) -> dict:
    """In a process of policy `a["policy"]`: indexing with a decoder beside it, the tower alone, a query p50."""
    import numpy as np
    import torch
    from PIL import Image

    import mbm.models._onnx as onnx_module
    from mbm.models import create_model
    from mbm.models._query import ort_options
    policy_spins = a["policy"] == "spin"
    onnx_module.ort_options = lambda threads, spin=True: ort_options(threads, policy_spins)  # both graphs, one policy
    enc = create_model(a["model"], "cpu", backend=a["backend"], cache_dir=a["cache"])
    pixels = torch.randn(enc.image_batch, 3, enc.image_size, enc.image_size)
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (960, 1280, 3), np.uint8)).save(photo, "JPEG")
    stop = threading.Event()

    def decode() -> None:  # what the sync's decoders do for the next batch
        while not stop.is_set():
            Image.open(io.BytesIO(photo.getvalue())).convert("RGB").resize((enc.image_size,) * 2)
    alone = images_per_s(lambda: enc.encode_pixels(pixels), enc.image_batch, a["runs"])
    decoder = threading.Thread(target=decode, daemon=True)
    decoder.start()
    beside = images_per_s(lambda: enc.encode_pixels(pixels), enc.image_batch, a["runs"])
    stop.set()
    decoder.join()
    enc.encode_texts(["a warm-up"])
    p50 = p50_ms(lambda q: enc.encode_texts([q]), ["a red circle"] * a["queries"])
    return dict(alone_rate=alone[0], beside_rate=beside[0], beside_cpu_ms=1000 * beside[1], query_p50=p50,
                threads=torch.get_num_threads())


CHILDREN = {"measure": measure}


def child(env: dict, **kwargs) -> dict:
    """This script's `measure` in a process of its own, under `env`: its JSON answer."""
    done = measured([sys.executable, str(Path(__file__).resolve()), "--child", "measure",
                     json.dumps(kwargs, default=str)], env)
    return json.loads(done["last"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--load", default="0,2", help="busy processes beside the benchmark, per setting (default 0,2)")
    p.add_argument("--runs", type=int, default=5, help="timed batches per measure (default 5)")
    p.add_argument("--queries", type=int, default=41)
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return
    from _synthetic import machine
    work = mbm_cache_root() / "peers" / "work"
    model = (work / f"{ARCH}-seed0").resolve()
    make_model(model)
    cache = work / "mbm-onnx"  # bench_peers' exported graphs, reused (exported on first use otherwise)
    rows = {}
    for load in (int(x) for x in args.load.split(",")):
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(load)]
        for s in spinners:
            s.start()
        for r in range(args.rounds):
            for backend in ("torch", "onnx"):
                for policy in (POLICIES if r % 2 == 0 else POLICIES[::-1]):
                    env = child_env(OMP_WAIT_POLICY="PASSIVE") if policy == "wait" else child_env()
                    got = child(env, model=model, cache=cache, backend=backend,
                                policy=policy, runs=args.runs, queries=args.queries)
                    rows.setdefault((load, backend, policy), []).append(got)
                    progress(f"load {load} round {r} {backend} {policy}: " + json.dumps(
                        {k: round(v, 1) for k, v in got.items() if isinstance(v, float)}))
        stop.set()
        for s in spinners:
            s.join()
    med = lambda key, k: statistics.median(g[k] for g in rows[key])  # noqa: E731
    print(f"\n{machine()}; {args.rounds} rounds, medians; ratios wait / spin\n")
    print("| load | backend | measure | spin | wait | wait / spin |\n|---:|---|---|---:|---:|---:|")
    for load, backend, _ in [k for k in rows if k[2] == "spin"]:
        for k, what, fmt in (("beside_rate", "indexing images/s, a decoder beside", ".1f"),
                             ("beside_cpu_ms", "indexing CPU ms per image, the decoder's included", ".1f"),
                             ("alone_rate", "tower alone, images/s (the ceiling)", ".1f"),
                             ("query_p50", "batch-1 text query, p50 ms", ".1f")):
            s, w = med((load, backend, "spin"), k), med((load, backend, "wait"), k)
            print(f"| {load} | {backend} | {what} | {s:{fmt}} | {w:{fmt}} | {w / s:.2f} |")
    print(json.dumps({"/".join(map(str, key)): v for key, v in rows.items()}, default=str))


if __name__ == "__main__":
    main()
