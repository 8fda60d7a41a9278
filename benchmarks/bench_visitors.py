"""Many visitors at once: latency, throughput and failures of real page actions, and the queue limit.

    python benchmarks/bench_visitors.py [--sessions 20 --seconds 60] [--mix text=50,image=15,classify=25,upload=10]
                                        [--no-download] [--no-overload] [--flood 30] [--no-abuse | --only-abuse]
                                        [--json PATH]

Load: `python app.py` as a person starts it (embedded model, built-in gallery of ~307 images, default queue:
64 waiting requests, 2 at a time, indexing 1 at a time) on a free port with a fresh cache. `--sessions`
visitors, each a gradio_client `Client` (its own session) in its own thread, connect; then, all starting at
the same moment, each loops for `--seconds` over a weighted mix (`--mix`) of what people do on the page:
- text: /search with a typed query ("a red circle", "two blue squares", ...), k=12;
- image: /search with an image as the query (an example, a gallery scene or photo), k=12;
- classify: /classify of an example image with labels and prompt templates;
- upload: /index_uploads of 1-3 small rendered PNGs into the visitor's private gallery ("upload"), then
  /search in it ("own search"), then /use_server_gallery back to the server's gallery ("back").
Each request's wall clock from the call to its result is recorded with its outcome. A wrong result counts as a
failure as well as an exception: a search without its k results or with unsorted scores, an image search whose
own scene is not first, a classification whose probabilities do not sum to 1 or whose label is wrong, an own
search that sees anything but the visitor's own uploads (or not all of them). Clients download the result
images, one request each, as a browser fetches them (`--no-download`: the answers only). The client threads
run on the same machine as the app, so on a small machine they take CPU from it: the numbers are an upper bound.
They use `ssl_verify=False` (the page is plain HTTP on loopback, so nothing is verified either way): otherwise
gradio_client builds a fresh certificate store for every HTTP request it makes (~50 ms of CPU under the GIL each,
and a search with its 12 images makes about 14), and the client threads, not the app, are what gets measured.

Overload (`--no-overload` skips it): a second `app.py --queue-size 4`; `--flood` visitors (default 30) connect,
then all at once (a threading.Barrier) submit /index_uploads of 3 images each. Indexing runs one at a time and
at most 4 requests may wait, so most are refused with gradio_client's QueueError ("Queue is full! Please try
again."; the browser shows "This application is currently busy. Please try again."). Reported: accepted and
refused counts, the message, how fast refusals came back (from the call: gradio_client uploads the files before
it asks to join the queue, so this includes the uploads), whether every accepted one completed correctly, what
plain HTTP gets from POST /gradio_api/queue/join while the queue is full, what /search visitors arriving
while it is full meet (the limit counts the waiting requests of every endpoint together), and that the app
answers a normal search afterwards.

Abuse (`--no-abuse` skips it): a fresh `app.py` with its default limits; one abusive client floods for `--seconds`:
it keeps asking to join the queue for live training (raw HTTP, its one session) and submits /classify requests
with heavy templates (100 labels of 1,000-letter words x 4 templates with padding and attribute format specs:
the most one request of a shared page may embed; more is refused at once), while
`--sessions - 1` other visitors run text and image searches, pausing a random 0-2x `--think` seconds after each (a
person looks at the results; `--think 0` is a closed loop that measures the server's throughput instead). A control
run with the same searchers and no abuser comes first, on its own fresh app. Reported: both tables, their ratio (the
target is the searchers' p95 under 1 s and no failure), and how many of the abuser's requests were let in and
refused, and with which message.

Exits with status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import string
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synthetic import machine, start_app, stop_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
GALLERY = ROOT / "assets" / "gallery"
K = 12
THRESHOLD = -0.2  # the slider's lowest: every search returns its k results
ACTIONS = ("text", "image", "classify", "upload")
DEFAULT_MIX = "text=50,image=15,classify=25,upload=10"
QUERIES = ["a red circle", "two blue squares", "a small green triangle", "a large yellow star", "a purple heart",
           "an orange hexagon at the top", "a white cross on the left", "three shapes", "a brown diamond",
           "a pink circle and a blue star", "a black square at the bottom right", "a medium red heart",
           "a photo of a cat", "an astronaut", "a cup of coffee", "a rocket", 'red circle - blue', "two shapes"]
SHAPES = "circle, square, triangle, star, hexagon, cross, diamond, heart"
TEMPLATES = "a photo of a {}.\na {}.\na drawing of a {}.\na picture of a {}."
CLASSIFY = [  # image, labels, templates, the label the embedded model gives (the page's own examples)
    ("red-circle.png", SHAPES, TEMPLATES, "circle"),
    ("blue-star.png", "red, orange, yellow, green, blue, purple, pink, brown, black, white",
     "a {} shape.\na {} thing.", "blue"),
    ("yellow-triangle.png", "yellow triangle, yellow circle, blue triangle, blue circle", "a {}.",
     "yellow triangle"),
    ("purple-heart.png", "heart\nstar\ncross", "a photo of a {}.\na drawing of a {}.", "heart"),
    ("red-circle.png", "circle\nsquare\nstar", "a {}.", "circle"),
]


# in the names of uploaded files: Gradio keeps uploads by content and name, shared by every session and every
# app.py using the same temp folder, and a session that ends deletes its copies; unique names keep runs apart
RUN = "".join(random.choices(string.ascii_lowercase, k=6))


class WrongResult(Exception):
    """An answer that came back but is not what the page should have answered."""


@dataclass
class Record:
    phase: str  # "load" or "overload"
    session: int
    action: str
    start_s: float  # since the phase's common start
    ms: float  # wall clock from the call to its result (or exception)
    error: str | None  # None: success; else "ExceptionType: message"


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in ACTIONS or not weight:
            raise argparse.ArgumentTypeError(f"--mix wants NAME=WEIGHT pairs with NAME in {ACTIONS}, got {part!r}")
        mix[name] = float(weight)
    if sum(mix.values()) <= 0 or min(mix.values()) < 0:
        raise argparse.ArgumentTypeError("--mix weights must be >= 0 and not all 0")
    return mix


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


def scores_of(tiles: list[dict]) -> list[float]:
    return [float(t["caption"].split(" · ")[0]) for t in tiles]


def check_tiles(tiles: list[dict], k: int) -> None:
    if len(tiles) != k:
        raise WrongResult(f"{len(tiles)} results instead of {k}")
    scores = scores_of(tiles)
    if scores != sorted(scores, reverse=True):
        raise WrongResult(f"scores not sorted: {scores}")


def query_images() -> list[tuple[Path, str | None]]:
    """Images to search with, each with the caption its own gallery item has (None: not in the gallery)."""
    scenes = sorted((GALLERY / "scenes").glob("*.png"))[::60]
    photos = sorted((GALLERY / "photos").glob("*.jpg"))[:3]
    return ([(p, None) for p in sorted(EXAMPLES.glob("*.png"))]
            + [(p, p.with_suffix(".txt").read_text().strip()) for p in scenes + photos])


QUERY_IMAGES = query_images()


class Visitor:
    """One browser tab: its own gradio_client session, doing what the mix draws."""

    def __init__(self, url: str, sid: int, folder: Path, seed: int, download: Path | None) -> None:
        from gradio_client import Client
        self.sid, self.folder, self.rng = sid, folder, random.Random(seed)
        self.client = Client(url, verbose=False, analytics_enabled=False, ssl_verify=False,
                             download_files=str(download) if download else False)
        self.uploads = 0  # upload actions so far
        self.own: set[str] = set()  # captions of the images in this visitor's gallery

    def search(self, text, image, k: int) -> list[dict]:
        tiles, _, _, _ = self.client.predict(text, image, 1.0, k, THRESHOLD, api_name="/search")
        return tiles

    def text(self) -> None:
        check_tiles(self.search(self.rng.choice(QUERIES), None, K), K)

    def image(self) -> None:
        from gradio_client import handle_file
        path, caption = self.rng.choice(QUERY_IMAGES)
        tiles = self.search(None, handle_file(str(path)), K)
        check_tiles(tiles, K)
        if caption is not None and caption not in tiles[0]["caption"]:
            raise WrongResult(f"{path.name}: top result {tiles[0]['caption']!r}, not its own scene {caption!r}")

    def classify(self) -> None:
        from gradio_client import handle_file
        image, labels, templates, expected = self.rng.choice(CLASSIFY)
        label, _, _ = self.client.predict(handle_file(str(EXAMPLES / image)), labels, templates,
                                          api_name="/classify")
        shown = min(5, len(re.findall(r"[^,\n]+", labels)))  # the page's gr.Label keeps the top 5 of them
        probs = [c["confidence"] for c in label["confidences"]]
        total = sum(probs)
        if label["label"] != expected or len(probs) != shown or not (total <= 1 + 1e-3 if shown == 5 else
                                                                      abs(total - 1) <= 1e-3):
            raise WrongResult(f"{image}: {label['label']!r} (expected {expected!r}), {len(probs)} probabilities "
                              f"(expected {shown}) summing to {total}")

    def upload_files(self) -> list:
        """1-3 small PNGs, rendered before the clock starts, named so that their captions say whose they are."""
        from gradio_client import handle_file

        from mbm.data.shapes import make_scene, render
        self.uploads += 1
        files = []
        for j in range(self.rng.randint(1, 3)):
            name = f"visitor{self.sid:02d}-{RUN}-upload{self.uploads}-img{j}"
            path = self.folder / f"{name}.png"
            render(make_scene("test", self.sid * 10_000 + self.uploads * 10 + j), 128).save(path)
            files.append((handle_file(str(path)), name.replace("-", " ")))
        return files

    def upload(self, files: list) -> None:
        _, summary, _ = self.client.predict([f for f, _ in files], api_name="/index_uploads")
        self.own |= {caption for _, caption in files}
        if f"**{len(self.own)}** searchable images" not in summary:
            raise WrongResult(f"expected {len(self.own)} images in the visitor's gallery: {summary!r}")

    def own_search(self) -> None:
        k = min(48, len(self.own))
        tiles = self.search("a shape", None, 48)
        check_tiles(tiles, k)
        seen = {t["caption"].split(" · ", 1)[1] for t in tiles}
        if not seen <= self.own or (len(self.own) <= 48 and seen != self.own):
            raise WrongResult(f"own gallery shows {sorted(seen)}, uploaded {sorted(self.own)}")

    def back(self) -> None:
        info = self.client.predict(api_name="/use_server_gallery")[0]
        if "server's gallery" not in info:
            raise WrongResult(f"not back on the server's gallery: {info!r}")


def timed(records: list[Record], phase: str, sid: int, action: str, t0: float, fn, *args) -> bool:
    start = time.perf_counter()
    try:
        fn(*args)
        error = None
    except Exception as exc:  # every failure is recorded and reported, never raised
        error = f"{type(exc).__name__}: {exc}"
    records.append(Record(phase, sid, action, start - t0, (time.perf_counter() - start) * 1000, error))
    return error is None


def clock_gate(parties: int) -> tuple[threading.Barrier, list[float]]:
    """A barrier for `parties` threads and the common start time it sets as it opens, before any thread goes on
    (set after `wait()` returned, a thread could read it before the main thread wrote it)."""
    start = [0.0]
    return threading.Barrier(parties, action=lambda: start.__setitem__(0, time.perf_counter())), start


def run_together(threads: list[threading.Thread], gate: threading.Barrier) -> None:
    """Start the threads, pass `gate` with them (this thread is one of its parties), and wait until all are done."""
    for t in threads:
        t.start()
    gate.wait(timeout=300)
    for t in threads:
        t.join()


def run_load(url: str, sessions: int, seconds: float, mix: dict[str, float], folder: Path,
             download: bool) -> tuple[list[Record], list[Record], float]:
    """The load phase: returns the requests, the connects, and the seconds from the common start to the last
    request's end."""
    records: list[Record] = []  # list.append is atomic: every thread appends to the one list
    connects: list[Record] = []
    gate, start = clock_gate(sessions + 1)
    names, weights = list(mix), list(mix.values())

    def session(sid: int) -> None:
        home = folder / f"visitor{sid:02d}"
        home.mkdir()
        visitor = None
        box = []
        ok = timed(connects, "load", sid, "connect", time.perf_counter(),
                   lambda: box.append(Visitor(url, sid, home, seed=sid, download=(home / "dl") if download else None)))
        try:
            gate.wait(timeout=300)
        except threading.BrokenBarrierError:
            return
        if not ok:
            return
        visitor = box[0]
        t0, deadline = start[0], start[0] + seconds
        try:
            while time.perf_counter() < deadline:
                action = visitor.rng.choices(names, weights)[0]
                if action != "upload":
                    timed(records, "load", sid, action, t0, getattr(visitor, action))
                    continue
                files = visitor.upload_files()
                if timed(records, "load", sid, "upload", t0, visitor.upload, files):
                    timed(records, "load", sid, "own search", t0, visitor.own_search)
                timed(records, "load", sid, "back", t0, visitor.back)
        finally:
            visitor.client.close()

    run_together([threading.Thread(target=session, args=(i,), name=f"visitor{i:02d}") for i in range(sessions)],
                 gate)
    wall = max((r.start_s + r.ms / 1000 for r in records), default=seconds)
    return records, connects, wall


def table(records: list[Record], wall: float) -> None:
    print("| action | requests | failed | p50 ms | p95 ms | max ms | req/s |\n|---|---:|---:|---:|---:|---:|---:|")
    order = [*ACTIONS[:3], "upload", "own search", "back"]
    groups = [(a, [r for r in records if r.action == a]) for a in order] + [("all", records)]
    for name, rs in groups:
        if not rs:
            continue
        ms = [r.ms for r in rs]
        print(f"| {name} | {len(rs)} | {sum(r.error is not None for r in rs)} | {percentile(ms, 0.5):.0f} | "
              f"{percentile(ms, 0.95):.0f} | {max(ms):.0f} | {len(rs) / wall:.2f} |")


def print_failures(failures: list[Record]) -> None:
    """Each kind of failure once, with how many times it happened (numbers in messages alike), then its first case."""
    kinds: dict[tuple[str, str], list[Record]] = {}
    for r in failures:
        kinds.setdefault((r.action, re.sub(r"\d+", "N", r.error or "")[:300]), []).append(r)
    for (action, _), rs in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        r = rs[0]
        print(f"- FAILED {len(rs)}x {action}, first: visitor {r.session} at {r.start_s:.1f} s after {r.ms:.0f} ms: "
              f"{r.error}")


def run_overload(folder: Path, flood: int, queue_size: int, searchers: int) -> tuple[list[Record], dict]:
    """The overload phase on its own app.py; returns the records and what it found."""
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    from mbm.data.shapes import make_scene, render
    proc, url, _ = start_app(["--queue-size", str(queue_size)], folder / "cache", folder / "app.log")
    try:
        config = httpx.get(url + "config", timeout=30).json()
        info_fn = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "gallery_info")
        records: list[Record] = []
        found: dict = {"queue_size": queue_size, "flood": flood, "images_each": 3, "probes": [], "messages": []}
        gate, start = clock_gate(flood + searchers + 2)
        first_refusal = threading.Event()

        def record(sid: int, action: str, t: float, error: str | None) -> None:
            records.append(Record("overload", sid, action, t - start[0], (time.perf_counter() - t) * 1000, error))

        def connect() -> Client:
            return Client(url, verbose=False, analytics_enabled=False, ssl_verify=False, download_files=False)

        def uploader(sid: int) -> None:
            files = []
            for j in range(3):
                path = folder / f"flood{sid:02d}-{RUN}-img{j}.png"
                render(make_scene("val", sid * 10 + j), 128).save(path)
                files.append(handle_file(str(path)))
            client = connect()
            gate.wait(timeout=300)
            t = time.perf_counter()
            try:
                _, summary, _ = client.predict(files, api_name="/index_uploads")
                ok = "**3** searchable images" in summary
                action, error = "upload accepted", None if ok else f"WrongResult: {summary!r}"
            except QueueError as exc:
                first_refusal.set()
                action, error = "upload refused", None
                found["messages"].append(str(exc))
            except Exception as exc:
                action, error = "upload", f"{type(exc).__name__}: {exc}"
            record(sid, action, t, error)
            client.close()

        def searcher(sid: int) -> None:  # a visitor who only searches, arriving while the queue is full
            client = connect()
            gate.wait(timeout=300)
            first_refusal.wait(timeout=60)
            t = time.perf_counter()
            try:
                tiles, *_ = client.predict("a red circle", None, 1.0, K, THRESHOLD, api_name="/search")
                check_tiles(tiles, K)
                action, error = "search answered", None
            except QueueError as exc:
                action, error = "search refused", None
                found["messages"].append(str(exc))
            except Exception as exc:
                action, error = "search", f"{type(exc).__name__}: {exc}"
            record(sid, action, t, error)
            client.close()

        def prober() -> None:  # plain HTTP, as any script would join the queue
            with httpx.Client(timeout=30) as http:
                gate.wait(timeout=300)
                first_refusal.wait(timeout=60)
                for _ in range(3):
                    t = time.perf_counter()
                    r = http.post(url + "gradio_api/queue/join", json={
                        "data": [None], "fn_index": info_fn, "session_hash": uuid.uuid4().hex[:11],
                        "event_data": None, "trigger_id": None})
                    found["probes"].append({"status": r.status_code, "body": r.text[:200],
                                            "ms": (time.perf_counter() - t) * 1000})

        run_together([threading.Thread(target=uploader, args=(i,)) for i in range(flood)]
                     + [threading.Thread(target=searcher, args=(flood + i,)) for i in range(searchers)]
                     + [threading.Thread(target=prober)], gate)
        client = connect()  # afterwards: a visitor who comes later is served as usual
        t = time.perf_counter()
        try:
            tiles, *_ = client.predict("a red circle", None, 1.0, K, THRESHOLD, api_name="/search")
            check_tiles(tiles, K)
            found["after"] = tiles[0]["caption"]
            error = None if "red circle" in tiles[0]["caption"] else f"WrongResult: top {tiles[0]['caption']!r}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        record(-1, "search after", t, error)
        client.close()
        return records, found
    finally:
        stop_app(proc)


def report_overload(records: list[Record], found: dict) -> None:
    by = lambda action: [r for r in records if r.action == action]
    accepted, refused = by("upload accepted"), by("upload refused")
    stat = lambda rs: (f"p50 {percentile([r.ms for r in rs], 0.5):.0f} ms, max {max(r.ms for r in rs):.0f} ms"
                       if rs else "none")
    print(f"\nOverload: app.py --queue-size {found['queue_size']}; {found['flood']} visitors submit /index_uploads "
          f"({found['images_each']} images each) at the same moment (indexing runs 1 at a time):")
    print(f"- accepted: {len(accepted)}, {sum(r.error is None for r in accepted)} of them completed with the right "
          f"summary ({stat(accepted)} from the call)")
    messages = "; ".join(f"{m!r}" for m in sorted(set(found["messages"])))
    print(f"- refused: {len(refused)} with gradio_client's QueueError {messages} ({stat(refused)} from the call, "
          "which includes uploading the files before joining the queue)")
    for p in found["probes"]:
        print(f"- plain HTTP POST /gradio_api/queue/join just after the first refusal: {p['status']} {p['body']} "
              f"in {p['ms']:.0f} ms")
    answered, turned = by("search answered"), by("search refused")
    if answered or turned:
        print(f"- /search visitors arriving while it was full: {len(turned)} refused ({stat(turned)}), "
              f"{len(answered)} answered (the limit counts every endpoint's waiting requests)")
    after = by("search after")
    if after and after[0].error is None:
        print(f"- afterwards a new visitor's /search answers in {after[0].ms:.0f} ms, top: {found.get('after')!r}")


def run_abuse(folder: Path, searchers: int, seconds: float, think: float,
              abuse: bool = True) -> tuple[list[Record], dict]:
    """The abuse phase: one client floods training and heavy classifications (unless not `abuse`: the control run)
    while `searchers` visitors search."""
    import urllib.error
    import urllib.request

    from gradio_client import Client, handle_file
    proc, url, _ = start_app([], folder / "cache", folder / "app.log")
    records: list[Record] = []
    found = {"train": Counter(), "classify": Counter(), "messages": Counter()}
    gate, start = clock_gate(searchers + 2)
    word = "".join(random.Random(0).choices(string.ascii_lowercase, k=1000))
    labels = "\n".join(f"{word[i:]}{word[:i]}" for i in range(100))
    templates = "\n".join(["{:>999999999}", "{0.__class__.__init__.__globals__}", "{{}} {}", "a {}"])  # 400 prompts

    def abuser() -> None:
        config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
        train = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "train_live")
        client, session, jobs = Client(url, verbose=False, ssl_verify=False), uuid.uuid4().hex, []
        gate.wait(timeout=300)
        deadline = start[0] + seconds
        try:
            while abuse and time.perf_counter() < deadline:
                body = json.dumps({"data": [120], "fn_index": train, "session_hash": session}).encode()
                try:
                    urllib.request.urlopen(urllib.request.Request(url + "gradio_api/queue/join", body,
                                                                  {"Content-Type": "application/json"}), timeout=30)
                    found["train"]["accepted"] += 1
                except urllib.error.HTTPError as e:
                    found["train"][f"refused {e.code}"] += 1
                    found["messages"][json.loads(e.read())["detail"][0]["message"]] += 1
                jobs.append(client.submit(handle_file(str(EXAMPLES / "red-circle.png")), labels, templates,
                                          api_name="/classify"))
                time.sleep(0.2)
            for job in jobs:
                try:
                    job.result(timeout=1)
                    found["classify"]["answered"] += 1
                except Exception as exc:  # refused at the door, or still waiting when the phase ended
                    found["classify"][type(exc).__name__] += 1
                    if "validation" in str(exc):
                        found["messages"][str(exc).splitlines()[-1].split(": ", 1)[-1]] += 1
        finally:
            client.close()

    def searcher(sid: int) -> None:
        visitor = Visitor(url, sid, folder, seed=sid, download=None)
        gate.wait(timeout=300)
        try:
            while time.perf_counter() < start[0] + seconds:
                action = visitor.rng.choice(["text", "text", "image"])
                timed(records, "abuse", sid, action, start[0], getattr(visitor, action))
                time.sleep(visitor.rng.uniform(0, 2 * think))  # a person looks at the results first
        finally:
            visitor.client.close()

    try:
        run_together([threading.Thread(target=abuser, name="abuser")] +
                     [threading.Thread(target=searcher, args=(i,), name=f"searcher{i:02d}") for i in range(searchers)],
                     gate)
    finally:
        stop_app(proc)
    return records, found


def report_abuse(records: list[Record], found: dict, searchers: int, seconds: float, control: list[Record],
                 think: float) -> None:
    pace = f", {think:g} s between searches on average" if think else ", no pause between searches"
    print(f"\nAbuse, control: {searchers} visitors search for {seconds:g} s{pace}, nobody else on the server:")
    table(control, seconds)
    print(f"\nAbuse: one client floods live training and heavy classifications for {seconds:g} s while {searchers} "
          "visitors search:")
    table(records, seconds)
    ratio = lambda q: percentile([r.ms for r in records], q) / percentile([r.ms for r in control], q)
    print(f"- searches under abuse / control: p50 {ratio(0.5):.2f}x, p95 {ratio(0.95):.2f}x")
    print(f"- the abuser's training requests: {dict(found['train'])}; its classifications: {dict(found['classify'])}")
    for message, n in found["messages"].most_common():
        print(f"- told {n} times: {message!r}")


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def load_phase(args, folder: Path) -> tuple[list[Record], list[Record], float]:
    proc, url, t_start = start_app([], folder / "cache", folder / "app.log")
    try:
        print(f"app.py answered in {t_start:.1f} s (fresh cache: it indexed the built-in gallery)")
        (folder / "visitors").mkdir()
        records, connects, wall = run_load(url, args.sessions, args.seconds, args.mix, folder / "visitors",
                                           args.download)
    finally:
        stop_app(proc)
    connect_ms = [r.ms for r in connects]
    failures = [r for r in records + connects if r.error]
    print(f"\n{args.sessions} visitors connected (gradio_client reads the page's API): p50 "
          f"{percentile(connect_ms, 0.5):.0f} ms, max {max(connect_ms):.0f} ms")
    print(f"requests: {len(records)} in {wall:.1f} s ({len(records) / wall:.2f}/s); failures: {len(failures)}\n")
    table(records, wall)
    print_failures(failures)
    return records, connects, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="concurrent visitors (default 20)")
    parser.add_argument("--seconds", type=float, default=60, help="how long they keep going (default 60)")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX),
                        help=f"weights of the actions (default {DEFAULT_MIX})")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="do not download the result images (a browser does)")
    parser.add_argument("--overload", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the past-the-queue-limit phase (default on)")
    parser.add_argument("--flood", type=int, default=30, help="visitors indexing at once in the overload phase")
    parser.add_argument("--flood-queue-size", type=int, default=4, help="--queue-size of the overload phase's app")
    parser.add_argument("--flood-searchers", type=int, default=5,
                        help="visitors who search while the overload phase's queue is full")
    parser.add_argument("--abuse", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the abusive-visitor phase (default on)")
    parser.add_argument("--only-abuse", action="store_true", help="run only the abusive-visitor phase")
    parser.add_argument("--think", type=float, default=1.0,
                        help="mean pause of the abuse phase's searchers between searches, in seconds (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="write every request's numbers here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mbm-bench-visitors-"))
    try:
        print(f"machine: {machine()}")
        mix = ", ".join(f"{name} {w / sum(args.mix.values()):.0%}" for name, w in args.mix.items())
        print(f"settings: {args.sessions} sessions for {args.seconds:g} s; mix {mix}; k={K}; result images "
              f"{'downloaded' if args.download else 'not downloaded'}; overload "
              + (f"{args.flood} visitors vs --queue-size {args.flood_queue_size}" if args.overload else "off"))
        print(f"before: {load_average()}")
        records, connects, wall, failures, found, over, abuse = [], [], 0.0, [], {}, [], []
        if not args.only_abuse:
            records, connects, wall = load_phase(args, folder)
            failures = [r for r in records + connects if r.error]
        if args.overload and not args.only_abuse:
            (folder / "overload").mkdir()
            over, found = run_overload(folder / "overload", args.flood, args.flood_queue_size, args.flood_searchers)
            report_overload(over, found)
            bad = [r for r in over if r.error]
            failures += bad
            print_failures(bad)
        if args.abuse or args.only_abuse:
            (folder / "abuse").mkdir()
            (folder / "control").mkdir()
            control, _ = run_abuse(folder / "control", args.sessions - 1, args.seconds, args.think, abuse=False)
            abuse, abused = run_abuse(folder / "abuse", args.sessions - 1, args.seconds, args.think)
            report_abuse(abuse, abused, args.sessions - 1, args.seconds, control, args.think)
            bad = [r for r in abuse + control if r.error]
            failures += bad
            print_failures(bad)
        print(f"\nafter: {load_average()}")
        if args.json:
            args.json.write_text(json.dumps({
                "machine": machine(), "settings": {k: v for k, v in vars(args).items() if k != "json"},
                "wall_s": wall, "connects": [asdict(r) for r in connects], "requests": [asdict(r) for r in records],
                "overload": {"requests": [asdict(r) for r in over], **found},
                "abuse": [asdict(r) for r in abuse]}, indent=1, default=str))
            print(f"raw numbers written to {args.json}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if failures:
        raise SystemExit(f"{len(failures)} requests failed")


if __name__ == "__main__":
    main()
