"""mbm side by side with rclip 4.0.8 on the same weights (issue 19), in one run, the tools alternated round by round.

    python benchmarks/bench_peers.py [--images 400] [--rounds 2] [--naive 240] [--queries 50]
                                     [--python312 PATH] [--work DIR] [--quick]

Setup (made once under `--work`, default `<mbm cache>/peers/work`, and reused; nothing is downloaded):
- a photo folder: `--images` JPEGs of 640x480 to 1600x1200 (either orientation), cut, resized, flipped and
  re-toned with a fixed seed from the photos under assets/gallery/photos and those scikit-image ships (if installed);
- open_clip's ViT-B-32-256 with random weights (`torch.manual_seed(0)`), saved as an open_clip folder
  (`open_clip_config.json` + `open_clip_model.safetensors`) that mbm loads as a local-dir model, and exported with
  `torch.onnx.export` in rclip's offline layout (`$RCLIP_DATADIR/<model>/visual.onnx`, `textual.onnx` taking the
  full 77 token ids as rclip feeds them, the tokenizer vocabulary and its legal files), so rclip never calls the hub;
- rclip 4.0.8 in a Python 3.12 venv at `<mbm cache>/peers/rclip-venv` (made with `--python312`, or a pyenv 3.12).

Each round, in an order rotated round by round so drifts of the machine's load hit every tool, each measured as a
whole process (wall; CPU seconds user+sys of the process tree and peak RSS from `wait4`):
- indexing the folder: `python -m mbm index` into a fresh cache with the torch backend and with `MBM_BACKEND=onnx`
  (its ONNX files exported once beforehand, linked into each fresh cache), and `rclip` run in the folder with a fresh
  `$RCLIP_DATADIR` database; the indexing rate (images / process wall) as a share of
- the encoder ceiling of the same round: images/s of the image tower alone on pre-made pixel batches, in a process
  of its own (mbm: `Encoder.encode_pixels` at its indexing batch; rclip: its ONNX session at its batch of 8);
- a one-off `python -m mbm search "a red circle" -k 5` against `rclip -f -t 5 --no-indexing "a red circle"`;
- `--queries` different text queries in one process (mbm: `Engine.search`; rclip: its `Model` and DB search via
  `init_rclip`, run by the venv's python), p50 ms, and the top-5 files of 5 of them;
- on mbm's embedded model (mbm-shapes), `python -m mbm index` (on the torch backend, and on the onnx one with the
  graphs exported beforehand, which then runs without torch) against a naive loop (open, preprocess, encode one
  image, write its row) over `--naive` JPEGs of mixed sizes.
Checks: both tools return the same top-5 files in the same order, and the stored image vectors agree. Prints a
markdown table with mbm/rclip ratios (medians over rounds; ranges where rounds differ) and one JSON line.
Both tools keep their default thread counts (every core). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RCLIP = "4.0.8"
ARCH = "ViT-B-32-256"
RCLIP_MODEL = "ViT-B-32-256-datacomp_s34b_b86k"  # the folder rclip 4.x reads its ONNX files from
RCLIP_BATCH = 8  # rclip's default --indexing-batch-size
LEGAL = ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md")
VOCAB = "bpe_simple_vocab_16e6.txt.gz"
QUERY = "a red circle"
CHECKS = ("a red circle", "a cat on a sofa", "an astronaut in a white suit", "a cup of coffee", "a rocket at night")
TOOLS = ("mbm-torch", "mbm-onnx", "rclip")
MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


# ---------------------------------------------------------------- measuring a process
def measured(cmd: list[str], env: dict, cwd: Path | None = None, log: Path | None = None) -> dict:
    """Run `cmd` to its end: wall s, CPU s (user+sys of it and the children it waited for), peak RSS (MB of its
    largest process, from wait4), its stdout. Its stderr goes to `log` (appended) when given. A failure is a
    SystemExit with the end of its output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if log:
        with open(log, "a") as f:
            f.write(errors)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{text[-2000:]}\n{errors[-3000:]}")
    lines = text.strip().splitlines()
    return dict(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mb=usage.ru_maxrss / 1024,
                last=lines[-1] if lines else "", out=text)


def child_env(**extra: str) -> dict:
    """This environment without any MBM_* or RCLIP_* setting, offline, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MBM_", "RCLIP_"))}
    return {**env, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT), **extra}


def child(python: str | Path, name: str, env: dict, **kwargs) -> dict:
    """This script's `--child NAME` in a process of its own; its JSON answer plus the process's measures."""
    result = measured([str(python), str(Path(__file__).resolve()), "--child", name, json.dumps(kwargs, default=str)],
                      env)
    return {**result, **json.loads(result["last"])}


# ---------------------------------------------------------------- setup
def mbm_cache_root() -> Path:
    """mbm's cache folder as mbm itself decides it ($MBM_CACHE, else under $XDG_CACHE_HOME or ~/.cache)."""
    sys.path.insert(0, str(ROOT))
    from mbm.engine import EngineConfig
    return EngineConfig.from_env().cache_path()


def find_python312(given: str | None) -> str:
    """`given`, else pyenv's newest 3.12 (else a later 3.x), else python3.12 on the PATH."""
    if given:
        return given
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    if shutil.which("pyenv"):
        roots.insert(0, subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip())
    version = lambda p: tuple(int(x) for x in p.parts[-3].split(".")[:3] if x.isdigit())  # noqa: E731
    found = sorted({p for r in roots if r for p in Path(r).glob("versions/3.*/bin/python") if p.is_file()}, key=version)
    twelve = [p for p in found if version(p)[:2] == (3, 12)]
    later = [p for p in found if version(p) >= (3, 13)]
    if twelve or later:
        return str(twelve[-1] if twelve else later[0])
    if shutil.which("python3.12"):
        return shutil.which("python3.12")
    raise SystemExit("rclip 4.x needs Python >= 3.12: pass --python312 /path/to/python3.12")


def rclip_venv(cache: Path, python312: str | None) -> Path:
    """The venv's python with rclip 4.0.8 installed, made under the mbm cache when missing."""
    venv = cache / "peers" / "rclip-venv"
    python = venv / "bin" / "python"
    if not (venv / "bin" / "rclip").is_file():
        subprocess.run([find_python312(python312), "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"rclip=={RCLIP}"], check=True)
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('rclip'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    if version != RCLIP:
        raise SystemExit(f"{venv} holds rclip {version}, not {RCLIP}; delete it to have it made again")
    return python


def photo_sources() -> list:
    """The photos to cut from: the project's own and, when scikit-image is installed, those it ships."""
    from PIL import Image
    paths = sorted((ROOT / "assets" / "gallery" / "photos").glob("*.jpg"))
    try:
        import skimage
        data = Path(skimage.__file__).parent / "data"
        paths += sorted(p for p in data.iterdir() if p.suffix in (".png", ".jpg"))
    except ImportError:
        pass
    images = []
    for p in paths:
        with Image.open(p) as im:
            if min(im.size) >= 128 and im.mode in ("RGB", "RGBA", "L", "P"):
                images.append((p.stem, im.convert("RGB")))
    return images


def make_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` JPEGs of 640x480 to 1600x1200 (a quarter of them portrait), made once with a fixed seed."""
    from PIL import Image, ImageEnhance, ImageOps
    if (folder / ".done").is_file():
        return sorted(folder.glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    rng, sources = random.Random(seed), photo_sources()
    for i in range(n):
        stem, src = sources[i % len(sources)]
        w = rng.randrange(640, 1601)
        size = (w, w * 3 // 4) if rng.random() < 0.75 else (w * 3 // 4, w)
        aspect = size[0] / size[1]
        cw = min(src.width, round(src.height * aspect)) * rng.uniform(0.6, 1.0)
        ch = cw / aspect
        x, y = rng.uniform(0, src.width - cw), rng.uniform(0, src.height - ch)
        im = src.resize(size, Image.Resampling.BICUBIC, box=(x, y, x + cw, y + ch))
        im = ImageOps.mirror(im) if rng.random() < 0.5 else im
        im = ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(rng.uniform(0.75, 1.25))).enhance(
            rng.uniform(0.6, 1.4))
        im.save(folder / f"{stem}-{i:04d}.jpg", quality=rng.randrange(80, 96))
    (folder / ".done").write_text(f"{n} photos, seed {seed}\n")
    return sorted(folder.glob("*.jpg"))


def make_model(folder: Path, seed: int = 0) -> None:
    """open_clip's ARCH with seeded random weights as an open_clip folder (config with its preprocessing)."""
    import open_clip
    import torch
    from safetensors.torch import save_file
    if (folder / "open_clip_model.safetensors").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.create_model(ARCH)
    config = {"model_cfg": open_clip.get_model_config(ARCH),
              "preprocess_cfg": {"mean": MEAN, "std": STD, "interpolation": "bicubic", "resize_mode": "shortest"}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    tmp = folder / ".weights.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, folder / "open_clip_model.safetensors")


def tower_module(model, tower: str):
    """One tower of an open_clip model as a module of its own, for the exporter."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.encode_image(x) if tower == "image" else self.model.encode_text(x)
    return Tower().eval()


def export_rclip(model_dir: Path, datadir: Path) -> None:
    """The weights of `model_dir` in rclip's offline layout under `datadir`: both towers as ONNX (input "input",
    one output, not normalised; the text graph takes (B, 77) token ids), the vocabulary and the legal files."""
    import open_clip
    import torch
    from safetensors.torch import load_file
    target = datadir / RCLIP_MODEL
    if (target / "textual.onnx").is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    model = open_clip.create_model(ARCH)
    model.load_state_dict(load_file(str(model_dir / "open_clip_model.safetensors")))
    model.eval()
    examples = {"visual": torch.randn(2, 3, 256, 256), "textual": open_clip.get_tokenizer(ARCH)([QUERY, "x"])}
    for name, x in examples.items():
        tmp = target / f".{name}.tmp.onnx"
        # the legacy exporter, with autograd on: torch's fused attention (taken under no_grad) has no ONNX op
        torch.onnx.export(tower_module(model, "image" if name == "visual" else "text"), (x,), str(tmp),
                          input_names=["input"], output_names=["output"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        os.replace(tmp, target / f"{name}.onnx")
    (datadir / "tokenizer").mkdir(exist_ok=True)
    shutil.copyfile(Path(open_clip.__file__).parent / VOCAB, datadir / "tokenizer" / VOCAB)
    for name in LEGAL:
        (datadir / name).write_text("Stand-in written by mbm's benchmarks/bench_peers.py: random weights, not "
                                    "rclip's model.\n")


def fresh_rclip_datadir(template: Path, where: Path) -> Path:
    """An rclip data folder with no database: links to the template's model files."""
    where.mkdir(parents=True)
    for entry in template.iterdir():
        if not entry.name.startswith("db.sqlite3"):
            (where / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return where


def fresh_mbm_cache(onnx_cache: Path, where: Path) -> Path:
    """An mbm cache with no gallery store, its onnx/ linked to the files exported once (no export is timed)."""
    where.mkdir(parents=True)
    (where / "onnx").symlink_to(onnx_cache, target_is_directory=True)
    return where


# ---------------------------------------------------------------- what runs in the child processes
def images_per_s(fn, batch: int, runs: int, budget: float = 30.0) -> tuple[float, float]:
    """`batch` / the median seconds of `fn()` over up to `runs` calls within `budget` s, after one warm-up; and
    the median CPU seconds (every thread of the process) per image."""
    fn()
    times, cpus, start = [], [], time.perf_counter()
    while len(times) < runs and (not times or time.perf_counter() - start < budget):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return batch / statistics.median(times), statistics.median(cpus) / batch


def p50_ms(fn, items) -> float:
    times = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def ceiling_mbm(a: dict) -> dict:
    """mbm's image tower alone: `Encoder.encode_pixels` on a pre-made batch at its indexing batch size."""
    import torch

    from mbm.models import create_model
    enc = create_model(a["model"], "cpu", a.get("precision", "auto"), backend=a["backend"], cache_dir=a["onnx_cache"])
    pixels = torch.randn(enc.image_batch, 3, enc.image_size, enc.image_size)
    rate, cpu = images_per_s(lambda: enc.encode_pixels(pixels), enc.image_batch, a["runs"])
    return dict(rate=rate, cpu_per_image=cpu, batch=enc.image_batch, threads=torch.get_num_threads())


def ceiling_rclip(a: dict) -> dict:
    """rclip's image tower alone: its ONNX session (made as rclip makes it) on a batch of its indexing size."""
    import numpy as np
    from rclip import model_download
    session = model_download.load_visual_query_session()
    pixels = np.random.default_rng(0).standard_normal((RCLIP_BATCH, 3, 256, 256), dtype=np.float32)
    rate, cpu = images_per_s(lambda: session.run(None, {"input": pixels}), RCLIP_BATCH, a["runs"])
    return dict(rate=rate, cpu_per_image=cpu, batch=RCLIP_BATCH,
                threads=session.get_session_options().intra_op_num_threads)


def queries_mbm(a: dict) -> dict:
    """`Engine.search` over the indexed folder: p50 ms of the queries, and the top-5 file names of the checks."""
    from mbm.engine import Engine, EngineConfig
    engine = Engine(EngineConfig(model=a["model"], gallery=a["folder"], cache_dir=a["cache"], backend=a["backend"],
                                 precision=a.get("precision", "auto")))
    engine.search(a["checks"][0], k=5)  # opens the gallery; a first call
    p50 = p50_ms(lambda q: engine.search(q, k=5), a["queries"])
    return dict(p50=p50, top5={q: [h.path.name for h in engine.search(q, k=5)] for q in a["checks"]})


def queries_rclip(a: dict) -> dict:
    """rclip's own search (its Model and its DB, as `rclip --no-indexing` makes them): p50 ms and the checks' top-5."""
    from rclip.main import init_rclip
    rclip, model, db = init_rclip(a["folder"], RCLIP_BATCH, no_indexing=True)
    search = lambda q: rclip.search(q, a["folder"], 5)  # noqa: E731
    search(a["checks"][0])
    p50 = p50_ms(search, a["queries"])
    return dict(p50=p50, top5={q: [Path(r.filepath).name for r in search(q)] for q in a["checks"]})


def naive_loop(a: dict) -> dict:
    """What most CLIP demos do: open, preprocess and encode one image at a time, writing each vector's row."""
    import numpy as np
    import torch
    from PIL import Image

    from mbm.models import create_model
    enc = create_model(a["model"], "cpu")
    db = sqlite3.connect(a["out"])
    db.execute("CREATE TABLE vectors (path TEXT PRIMARY KEY, vector BLOB)")
    for path in sorted(Path(a["folder"]).glob("*.jpg")):
        with torch.inference_mode(), Image.open(path) as im:
            x = enc.preprocess(im.convert("RGB")).unsqueeze(0)
            v = torch.nn.functional.normalize(enc.model.encode_image(x).float(), dim=-1)[0]
        db.execute("INSERT INTO vectors VALUES (?, ?)", (path.name, v.numpy().astype(np.float32).tobytes()))
    db.commit()
    return dict(n=db.execute("SELECT count(*) FROM vectors").fetchone()[0])


EMBEDDED_WAYS = ("mbm", "mbm-onnx", "naive")  # mbm index on the torch backend, on the onnx one, the naive loop
CHILDREN = {"ceiling-mbm": ceiling_mbm, "ceiling-rclip": ceiling_rclip, "queries-mbm": queries_mbm,
            "queries-rclip": queries_rclip, "naive": naive_loop}


# ---------------------------------------------------------------- the rounds
class Bench:
    """Everything one run needs: the folders, the model, both tools' ways in, and a scratch folder for stores."""

    def __init__(self, args: argparse.Namespace, work: Path, scratch: Path):
        self.args, self.scratch = args, scratch
        cache = mbm_cache_root()
        self.venv_python = rclip_venv(cache, args.python312)
        self.rclip = self.venv_python.parent / "rclip"
        photos = make_photos(work / f"photos-{args.images}", args.images)
        self.folder = photos[0].parent.resolve()
        self.naive_folder = scratch / "naive"
        self.naive_folder.mkdir()
        for p in make_photos(work / f"photos-{args.naive}", args.naive):
            shutil.copy2(p, self.naive_folder / p.name)
        self.model = (work / f"{ARCH}-seed0").resolve()
        make_model(self.model)
        self.rclip_data = (work / "rclip-data").resolve()
        export_rclip(self.model, self.rclip_data)
        self.onnx_cache = (work / "mbm-onnx").resolve()
        words = [f"{c} {s}" for c in ("red", "blue", "green", "dark", "bright") for s in
                 ("circle", "cat", "cup of coffee", "rocket", "face", "house", "tree", "star", "street", "field")]
        self.queries = [f"a photo of a {w}" for w in words][:args.queries]
        for p in [*photos, *self.naive_folder.iterdir()]:
            p.read_bytes()  # in the page cache before anything is timed

    def setting(self, tool: str) -> dict:
        """An mbm tool's ("mbm-torch", "mbm-onnx") backend and precision: `--precision` on torch, fp32 on ONNX."""
        backend = tool.split("-")[1]
        return dict(backend=backend, precision=self.args.precision if backend == "torch" else "auto")

    def mbm(self, *argv: str, tool: str, log: Path | None = None) -> dict:
        s = self.setting(tool)
        return measured([sys.executable, "-m", "mbm", *argv, "--model", str(self.model), "--device", "cpu"],
                        child_env(MBM_BACKEND=s["backend"], MBM_PRECISION=s["precision"]), cwd=ROOT, log=log)

    def index(self, tool: str, r: int) -> dict:
        """One whole indexing process of the folder into a fresh store."""
        if tool == "rclip":
            data = fresh_rclip_datadir(self.rclip_data, self.scratch / f"rclip-{r}")
            run = measured([str(self.rclip), "-f", "-t", "5", QUERY], child_env(RCLIP_DATADIR=str(data)),
                           cwd=self.folder, log=self.scratch / "rclip.log")
            return dict(run, store=data, n=len(rclip_vectors(data)))
        cache = fresh_mbm_cache(self.onnx_cache, self.scratch / f"{tool}-{r}")
        run = self.mbm("index", str(self.folder), "--cache", str(cache), "--json", tool=tool,
                       log=self.scratch / f"{tool}.log")
        report = json.loads(run["out"])
        return dict(run, store=cache, n=report["encoded"], sync_s=report["seconds"])

    def ceiling(self, tool: str) -> dict:
        if tool == "rclip":
            return child(self.venv_python, "ceiling-rclip", child_env(RCLIP_DATADIR=str(self.rclip_data)),
                         runs=self.args.ceiling_runs)
        # under the thread policy `mbm index` runs with (torch's threads wait passively: mbm.__main__.BATCH_COMMANDS)
        return child(sys.executable, "ceiling-mbm", child_env(OMP_WAIT_POLICY="PASSIVE"), model=self.model,
                     onnx_cache=self.onnx_cache, **self.setting(tool), runs=self.args.ceiling_runs)

    def search_once(self, tool: str, store: Path) -> dict:
        """`search "a red circle"` as a whole process, top 5."""
        if tool == "rclip":
            return measured([str(self.rclip), "-f", "-t", "5", "--no-indexing", QUERY],
                            child_env(RCLIP_DATADIR=str(store)), cwd=self.folder)
        return self.mbm("search", QUERY, "--gallery", str(self.folder), "--cache", str(store), "-k", "5", tool=tool)

    def query_loop(self, tool: str, store: Path) -> dict:
        if tool == "rclip":
            return child(self.venv_python, "queries-rclip", child_env(RCLIP_DATADIR=str(store)),
                         folder=self.folder, queries=self.queries, checks=CHECKS)
        return child(sys.executable, "queries-mbm", child_env(), model=self.model, folder=self.folder, cache=store,
                     **self.setting(tool), queries=self.queries, checks=CHECKS)

    def embedded(self, way: str, r: int) -> dict:
        """On mbm's embedded model: `python -m mbm index` of the naive folder, or the naive loop over it."""
        if way == "naive":
            return child(sys.executable, "naive", child_env(), model="mbm-shapes", folder=self.naive_folder,
                         out=self.scratch / f"naive-{r}.sqlite")
        backend = "onnx" if way == "mbm-onnx" else "torch"  # onnx: graphs exported before, so no torch at all
        cache = fresh_mbm_cache(self.onnx_cache, self.scratch / f"embedded-{way}-{r}")
        return measured([sys.executable, "-m", "mbm", "index", str(self.naive_folder), "--model", "mbm-shapes",
                         "--device", "cpu", "--cache", str(cache)], child_env(MBM_BACKEND=backend), cwd=ROOT,
                        log=self.scratch / "embedded.log")


def rotated(items: tuple, r: int) -> list:
    return [items[(i + r) % len(items)] for i in range(len(items))]


def one_round(bench: Bench, r: int) -> dict:
    """Every measure once, each group in this round's order of the tools."""
    out: dict = {t: {} for t in TOOLS}
    for tool in rotated(TOOLS, r):
        out[tool]["index"] = bench.index(tool, r)
        out[tool]["ceiling"] = bench.ceiling(tool)
        progress(f"round {r + 1} {tool}: index {out[tool]['index']['wall']:.1f} s wall, "
                 f"{out[tool]['index']['cpu']:.1f} s CPU; ceiling {out[tool]['ceiling']['rate']:.1f} images/s")
    for tool in rotated(TOOLS, r):
        out[tool]["search"] = bench.search_once(tool, out[tool]["index"]["store"])
    for tool in rotated(TOOLS, r):
        out[tool]["queries"] = bench.query_loop(tool, out[tool]["index"]["store"])
    out["embedded"] = {way: bench.embedded(way, r) for way in rotated(EMBEDDED_WAYS, r)}
    progress(f"round {r + 1}: search " + ", ".join(f"{t} {out[t]['search']['wall']:.2f} s" for t in TOOLS)
             + "; p50 " + ", ".join(f"{t} {out[t]['queries']['p50']:.0f} ms" for t in TOOLS))
    return out


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- checks and the report
def mbm_vectors(cache: Path) -> dict:
    import numpy as np
    (store,) = cache.glob("galleries/*/gallery.sqlite")
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT i.path, v.vector FROM items i JOIN vectors v ON v.item_id = i.id "
                          "WHERE v.kind = 'image'").fetchall()
    return {Path(p).name: np.frombuffer(v, np.float32) for p, v in rows}


def rclip_vectors(datadir: Path) -> dict:
    import numpy as np
    with sqlite3.connect(datadir / "db.sqlite3") as db:
        rows = db.execute("SELECT filepath, vector FROM images WHERE deleted IS NULL").fetchall()
    return {Path(p).name: np.frombuffer(v, np.float32) for p, v in rows}


def vectors_agree(a: dict, b: dict) -> dict:
    """Over the files both stored: how many, the largest difference of a component, the lowest cosine."""
    import numpy as np
    names = sorted(a.keys() & b.keys())
    x, y = np.stack([a[n] for n in names]), np.stack([b[n] for n in names])
    return dict(files=len(names), only_one=len(a.keys() ^ b.keys()), max_abs=float(np.abs(x - y).max()),
                min_cos=float((x * y).sum(1).min()))


def checks(rounds: list[dict]) -> dict:
    """Per mbm backend: top-5 lists equal to rclip's (same files, same order), and stored vectors against rclip's."""
    out = {}
    for tool in TOOLS[:2]:
        same = [rd[tool]["queries"]["top5"][q] == rd["rclip"]["queries"]["top5"][q] for rd in rounds for q in CHECKS]
        last = rounds[-1]
        out[tool] = dict(top5_same=sum(same), top5_of=len(same),
                         vectors=vectors_agree(mbm_vectors(last[tool]["index"]["store"]),
                                               rclip_vectors(last["rclip"]["index"]["store"])))
    out["example"] = {t: rounds[-1][t]["queries"]["top5"][QUERY] for t in TOOLS}
    return out


def spread(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}-{format(hi, fmt)}"


def measures(rounds: list[dict]) -> dict:
    """Per tool, the values over rounds of each measure."""
    get = {"index_cpu": lambda t: t["index"]["cpu"], "index_wall": lambda t: t["index"]["wall"],
           "index_rss_gb": lambda t: t["index"]["rss_mb"] / 1024, "ceiling": lambda t: t["ceiling"]["rate"],
           "share": lambda t: t["index"]["n"] / t["index"]["wall"] / t["ceiling"]["rate"],
           "floor_cpu": lambda t: t["index"]["n"] * t["ceiling"]["cpu_per_image"],
           "search_wall": lambda t: t["search"]["wall"], "search_cpu": lambda t: t["search"]["cpu"],
           "threads": lambda t: t["ceiling"]["threads"], "search_rss_gb": lambda t: t["search"]["rss_mb"] / 1024,
           "p50": lambda t: t["queries"]["p50"]}
    out = {tool: {k: [f(rd[tool]) for rd in rounds] for k, f in get.items()} for tool in TOOLS}
    for tool in TOOLS[:2]:  # mbm's own report: the sync's seconds; the rest of the process is start-up and exit
        out[tool]["sync_s"] = [rd[tool]["index"]["sync_s"] for rd in rounds]
    out["embedded"] = {f"{way}_{k}": [rd["embedded"][way][k] for rd in rounds]
                       for way in EMBEDDED_WAYS for k in ("wall", "cpu")}
    return out


def cell(values: list[float], fmt: str) -> str:
    """The median, with the range over rounds when they differ."""
    med = format(statistics.median(values), fmt)
    return med if len(values) == 1 or spread(values, fmt) == med else f"{med} ({spread(values, fmt)})"


def ratio(m: dict, tool: str, key: str) -> str:
    return f"{statistics.median(m[tool][key]) / statistics.median(m['rclip'][key]):.2f}"


def table(m: dict, ck: dict, n: int, naive_n: int, queries: int) -> list[str]:
    """The issue's table, measured: medians over rounds (range), ratios of the medians."""
    def both(key: str, fmt: str) -> str:
        return f"{cell(m['mbm-torch'][key], fmt)} / {cell(m['mbm-onnx'][key], fmt)}"

    def row(what: str, key: str, fmt: str) -> str:
        return (f"| {what} (torch / onnx) | {both(key, fmt)} | {cell(m['rclip'][key], fmt)} | "
                f"{ratio(m, 'mbm-torch', key)} / {ratio(m, 'mbm-onnx', key)} |")
    lines = ["| work | mbm | rclip 4.0.8 | mbm / rclip |", "|---|---:|---:|---:|"]
    lines += [f"| index {n} JPEGs, CPU seconds ({b} backend) | {cell(m[f'mbm-{b}']['index_cpu'], '.1f')} | "
              f"{cell(m['rclip']['index_cpu'], '.1f')} | {ratio(m, f'mbm-{b}', 'index_cpu')} |"
              for b in ("torch", "onnx")]
    lines += [row(f"index {n} JPEGs, wall s", "index_wall", ".1f"),
              f"| of which mbm's sync (its report's seconds; the rest is start-up), s (torch / onnx) | "
              f"{both('sync_s', '.1f')} | | |",
              row("peak memory of the index process, GB", "index_rss_gb", ".2f"),
              row("encoder ceiling, images/s of the image tower alone", "ceiling", ".1f"),
              row(f"CPU seconds of the image tower alone for {n} images, at that ceiling", "floor_cpu", ".1f"),
              f"| indexing rate (images / process wall) as % of the same round's ceiling | "
              f"{spread([100 * v for v in m['mbm-torch']['share']], '.0f')}% (torch), "
              f"{spread([100 * v for v in m['mbm-onnx']['share']], '.0f')}% (onnx) | "
              f"{spread([100 * v for v in m['rclip']['share']], '.0f')}% (ORT) | |",
              row(f'`search "{QUERY}"` as a whole process, wall s', "search_wall", ".2f"),
              row("CPU seconds of that query process", "search_cpu", ".2f"),
              row("peak memory of that query process, GB", "search_rss_gb", ".2f"),
              row(f"{queries} queries in one process, p50 ms", "p50", ".0f")]
    t, o = ck["mbm-torch"], ck["mbm-onnx"]
    lines += [f"| same top-5 as rclip, same order (torch / onnx) | {t['top5_same']} of {t['top5_of']} / "
              f"{o['top5_same']} of {o['top5_of']} | | |",
              f"| stored image vectors against rclip's: largest difference, lowest cosine (torch / onnx) | "
              f"{t['vectors']['max_abs']:.1e}, {t['vectors']['min_cos']:.6f} / {o['vectors']['max_abs']:.1e}, "
              f"{o['vectors']['min_cos']:.6f} | | |", ""]
    e = m["embedded"]
    speedup = statistics.median(e["naive_wall"]) / statistics.median(e["mbm_wall"])
    lines += [f"| mbm-shapes, {naive_n} JPEGs of mixed sizes, whole processes | wall s | CPU s |", "|---|---:|---:|",
              f"| `python -m mbm index` | {cell(e['mbm_wall'], '.1f')} | {cell(e['mbm_cpu'], '.1f')} |",
              f"| `MBM_BACKEND=onnx python -m mbm index` (graphs exported before: no torch) | "
              f"{cell(e['mbm-onnx_wall'], '.1f')} | {cell(e['mbm-onnx_cpu'], '.1f')} |",
              f"| naive loop (open, preprocess, encode one image, write) | {cell(e['naive_wall'], '.1f')} | "
              f"{cell(e['naive_cpu'], '.1f')} |",
              f"| `mbm index` speed-up over the naive loop (wall; torch / onnx backend) | {speedup:.2f}x / "
              f"{statistics.median(e['naive_wall']) / statistics.median(e['mbm-onnx_wall']):.2f}x | |"]
    return lines


def targets(m: dict) -> list[str]:
    """Issue 19's targets, as ratios from this run (medians over rounds): met or not."""
    med = lambda tool, key: statistics.median(m[tool][key])  # noqa: E731
    r = lambda tool, key: med(tool, key) / med("rclip", key)  # noqa: E731
    e = m["embedded"]
    naive = statistics.median(e["naive_wall"]) / statistics.median(e["mbm_wall"])
    goals = [("indexing CPU mbm/rclip, torch", r("mbm-torch", "index_cpu"), "<=", 0.9),
             ("indexing CPU mbm/rclip, onnx", r("mbm-onnx", "index_cpu"), "<=", 0.9),
             ("indexing rate / encoder ceiling, torch", med("mbm-torch", "share"), ">=", 0.9),
             ("indexing rate / encoder ceiling, onnx", med("mbm-onnx", "share"), ">=", 0.9),
             ("one-off search wall mbm/rclip (default backend)", r("mbm-torch", "search_wall"), "<=", 1.5),
             ("one-off search peak memory mbm/rclip (default backend)", r("mbm-torch", "search_rss_gb"), "<=", 1.5),
             ("query p50 mbm/rclip (default backend)", r("mbm-torch", "p50"), "<=", 1.0),
             ("embedded model: naive loop wall / mbm index wall", naive, ">=", 2.0),
             ("embedded model, onnx backend: naive loop wall / mbm index wall",
              statistics.median(e["naive_wall"]) / statistics.median(e["mbm-onnx_wall"]), ">=", 2.0)]
    return [f"- {what}: {value:.2f} (target {op} {bound}): "
            f"{'met' if (value <= bound if op == '<=' else value >= bound) else 'not met'}"
            for what, value, op, bound in goals]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=400, help="JPEGs in the photo folder (default 400)")
    p.add_argument("--rounds", type=int, default=2, help="rounds, each measuring every tool once (default 2)")
    p.add_argument("--naive", type=int, default=240, help="JPEGs for mbm index against the naive loop (default 240)")
    p.add_argument("--queries", type=int, default=50, help="queries in one process (default 50, at most 50)")
    p.add_argument("--ceiling-runs", type=int, default=5, help="timed batches per encoder ceiling (default 5)")
    p.add_argument("--python312", default=None, help="a Python >= 3.12 to make rclip's venv with (default: pyenv's)")
    p.add_argument("--work", type=Path, default=None, help="where the photos, the model and its ONNX files are "
                   "made once (default: <mbm cache>/peers/work)")
    p.add_argument("--precision", choices=("auto", "bf16"), default="auto",
                   help="mbm's torch backend: auto (fp32 on the CPU, the same arithmetic as rclip) or the opt-in bf16 "
                        "copy (AVX512-BF16 or AMX); its top-5 check then says what bf16 reorders")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to try it out: 12 images, 8 naive, 1 round")
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.images, args.naive, args.rounds, args.queries, args.ceiling_runs = 12, 8, 1, 5, 2
    return args


def main() -> None:
    args = parse()
    if args.child:  # a measured child process (under the venv's python for rclip's): one JSON line
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return
    sys.path.insert(0, str(ROOT))
    from _synthetic import machine
    work = (args.work or mbm_cache_root() / "peers" / "work").expanduser()
    progress(f"setup in {work} (made once, then reused)")
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix="run-") as tmp:
        bench = Bench(args, work, Path(tmp))
        child(sys.executable, "ceiling-mbm", child_env(), model=bench.model, onnx_cache=bench.onnx_cache,
              backend="onnx", runs=1)  # mbm exports its ONNX files once, before anything is timed
        child(sys.executable, "ceiling-mbm", child_env(), model="mbm-shapes", onnx_cache=bench.onnx_cache,
              backend="onnx", runs=1)  # and the embedded model's
        load = [os.getloadavg()]
        rounds = [one_round(bench, r) for r in range(args.rounds)]
        load.append(os.getloadavg())
        m, ck = measures(rounds), checks(rounds)
    print(f"\n{machine()}; rclip {RCLIP} (onnxruntime, Python 3.12 venv); load average {load[0][0]:.2f} before, "
          f"{load[1][0]:.2f} after; {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
    print("\n".join(table(m, ck, args.images, args.naive, len(bench.queries))))
    print("\nTargets of issue 19, from this run:\n" + "\n".join(targets(m)))
    print(f"\ntop-5 for {QUERY!r}: " + "; ".join(f"{t}: {', '.join(v)}" for t, v in ck["example"].items()))
    print(json.dumps(dict(images=args.images, rounds=args.rounds, naive=args.naive, queries=len(bench.queries),
                          load=load, measures=m, checks=ck)))


if __name__ == "__main__":
    main()
