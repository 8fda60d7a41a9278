"""A battery of bad input and hostile visitors, through the page (gradio_client or raw HTTP on a real app.py), the
command line and the Python API. Each case asserts what a person is told (or, for odd but valid input, what they
get) and that the gallery being served is unchanged afterwards."""

import hashlib
import http.client
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_mbm, start_app, stop_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageOps

from mbm.classify import prompts, zero_shot
from mbm.data.sample import write_scenes
from mbm.engine import Engine, EngineConfig
from mbm.gallery import Gallery, GalleryLockedError
from mbm.models import WeightsFileError, create_model
from mbm.search import search
from mbm.text import MAX_WORD_CHARS, WORD_CACHE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
RED_CIRCLE = EXAMPLES / "red-circle.png"
COLOURS = "red, green, blue, yellow, purple"
SHAPES = "circle, square, triangle, star, hexagon, cross, diamond, heart"


# ---------------------------------------------------------------- the files
def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every kind of image file a visitor might drop, good and bad, written once."""
    d = tmp_path_factory.mktemp("hostile-files")
    circle = Image.open(RED_CIRCLE).convert("RGB")
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(_jpeg_bytes(circle)[:600])
    (d / "notes.jpg").write_text("dear diary, this is not a picture")
    (d / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><circle r="4"/></svg>')
    (d / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64)
    (d / "paper.pdf").write_bytes(b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF\n")
    _save(Image.new("1", (30000, 30000)), d / "bomb.png", optimize=True)  # 900 megapixels in ~110 kB
    grey = ImageOps.autocontrast(circle.convert("L"))  # 0..255, so its 16-bit twin below spans 0..65535
    _save(Image.fromarray((np.asarray(grey, np.uint16) * 257).astype(np.uint16)), d / "deep16.png")
    _save(circle.convert("CMYK"), d / "cmyk.jpg")
    palette = circle.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    _save(palette, d / "palette.png", transparency=palette.getpixel((0, 0)))  # background see-through
    blue_star = Image.open(EXAMPLES / "blue-star.png").convert("RGB").resize(circle.size)
    for name in ("animated.gif", "animated.webp"):  # first frame: the red circle
        _save(circle, d / name, save_all=True, append_images=[blue_star], duration=100, loop=0)
    scene = Image.open(EXAMPLES / "scene.png").convert("RGB")  # shapes at places: turning it changes the picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    _save(scene, d / "upright.jpg", quality=95)
    _save(scene.rotate(90, expand=True), d / "rotated.jpg", exif=exif, quality=95)
    _save(Image.new("RGB", (1, 1), (220, 20, 20)), d / "one-pixel.png")
    _save(Image.new("RGB", (64, 64), (220, 20, 20)), d / "red-field.png")  # the one pixel, as the model sees it
    _save(grey, d / "grey.png")
    return d


def _zip(path: Path, members: list[tuple[str, bytes]], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def png() -> bytes:
    return RED_CIRCLE.read_bytes()


# ---------------------------------------------------------------- the page
def _server_gallery(client: Client) -> tuple[str, list]:
    """What every visitor searches: the gallery line, and the ids and scores of a fixed query."""
    info = client.predict(None, api_name="/gallery_info")
    rows = client.predict("a red circle", 20, -1.0, api_name="/search_items")
    return info, [(r["id"], r["file"], r["score"]) for r in rows]


@pytest.fixture(scope="module")
def observer(server) -> Client:
    """A visitor who only looks at the server's gallery."""
    return Client(server.url, verbose=False)


@pytest.fixture
def unchanged(observer):
    """Asserts after the test that the server's gallery answers exactly as before it."""
    before = _server_gallery(observer)
    yield
    assert _server_gallery(observer) == before


def _search_image(client: Client, path: Path):
    return client.predict(None, handle_file(str(path)), 1.0, 5, -0.2, api_name="/search")


@pytest.mark.parametrize("name, message", [
    ("empty.jpg", "That image could not be read: empty.jpg: the file is empty (0 bytes)"),
    ("truncated.jpg", "truncated.jpg: the image data is truncated or corrupt"),
    ("notes.jpg", "notes.jpg: not an image Pillow can read"),
    ("drawing.svg", "drawing.svg: this is an SVG drawing"),
    ("photo.heic", "photo.heic: this is a HEIC/HEIF photo"),
    ("paper.pdf", "paper.pdf: this is a PDF document"),
    ("bomb.png", "bomb.png: 900,000,000 pixels is over the 89,478,485-pixel limit"),
])
def test_an_unreadable_image_is_named_with_what_is_wrong(client, files, unchanged, name, message):
    with pytest.raises(AppError, match=re.escape(message)) as search_error:
        _search_image(client, files / name)
    assert "Try a JPEG or PNG file" in str(search_error.value) and "/tmp" not in str(search_error.value)
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(handle_file(str(files / name)), COLOURS, "a {} shape.", api_name="/classify")


@pytest.mark.parametrize("name, labels, expected", [
    ("cmyk.jpg", COLOURS, "red"),
    ("palette.png", COLOURS, "red"),  # transparency composited on white
    ("animated.gif", COLOURS, "red"),  # the first frame
    ("animated.webp", COLOURS, "red"),
    ("one-pixel.png", COLOURS, "red-field.png"),  # a field of colour is no shape: the answer its full-size twin gets
])
def test_odd_but_valid_images_are_classified_and_searched(client, files, unchanged, name, labels, expected):
    def classify(file: str) -> dict:
        return client.predict(handle_file(str(files / file)), labels, "a {} shape.", api_name="/classify")[0]
    label = classify(name)
    assert label["label"] == (classify(expected)["label"] if expected.endswith(".png") else expected)
    assert sum(c["confidence"] for c in label["confidences"]) == pytest.approx(1.0, abs=1e-3)
    tiles, _, timing, _ = _search_image(client, files / name)
    assert len(tiles) == 5 and "image query" in timing


def test_a_16_bit_image_is_scaled_not_clipped(client, files, unchanged):
    """The 16-bit grey file and its 8-bit twin are the same picture: image->image finds the same. Clipped to 8 bits,
    the 16-bit one would be a white square."""
    eight_bit = [t["caption"] for t in _search_image(client, files / "grey.png")[0]]
    assert [t["caption"] for t in _search_image(client, files / "deep16.png")[0]][:3] == eight_bit[:3]


def test_exif_rotation_is_applied_before_the_model_sees_the_image(client, files, unchanged):
    """A photo stored on its side with an EXIF 'rotate' tag is the upright picture: image->image finds the same."""
    def found(name: str) -> list[str]:  # the images found, without their scores (the two JPEGs differ in rounding)
        return [t["caption"].split(" · ", 1)[-1] for t in _search_image(client, files / name)[0]][:3]
    assert found("rotated.jpg") == found("upright.jpg")


def test_a_file_over_the_upload_limit_is_refused_before_it_is_stored(strict_server, tmp_path):
    big = tmp_path / "huge.jpg"
    big.write_bytes(_jpeg_bytes(Image.new("RGB", (64, 64))) + os.urandom(1_500_000))  # limit: 1 MB
    client = Client(strict_server.url, verbose=False)
    with pytest.raises(ValueError, match="huge.jpg exceeds the maximum file size of 1000000 bytes"):
        _search_image(client, big)
    body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"huge.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + big.read_bytes() + b"\r\n--b--\r\n")
    request = urllib.request.Request(strict_server.url + "gradio_api/upload", body, method="POST",
                                     headers={"Content-Type": "multipart/form-data; boundary=b"})
    with pytest.raises(urllib.error.HTTPError) as refused:  # a client that skips the check is refused by the server
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413 and b"maximum allowed size" in refused.value.read()


@pytest.mark.parametrize("name, members, reasons", [
    ("escape.zip", [("../../escape.png", "png"), ("/etc/cron.d/evil.png", "png"), ("ok/fine.png", "png")],
     {"../../escape.png": "unsafe path in the zip", "/etc/cron.d/evil.png": "unsafe path in the zip"}),
    ("bomb.zip", [("bomb.png", "zeros"), ("fine.png", "png")],
     {"bomb.png": "looks like a zip bomb"}),
    ("nested.zip", [("inner.zip", "zip"), ("fine.png", "png")], {"inner.zip": "a zip inside a zip is not opened"}),
    ("mixed.zip", [("readme.md", "text"), ("run.exe", "text"), ("fine.png", "png")],
     {"readme.md": "not an image (.md)", "run.exe": "not an image (.exe)"}),
])
def test_hostile_zips_keep_only_their_images(client, tmp_path, png, unchanged, name, members, reasons):
    data = {"png": png, "text": b"hello", "zeros": b"\0" * 50_000_000,
            "zip": (_zip(tmp_path / "inner.zip", [("x.png", png)])).read_bytes()}
    archive = _zip(tmp_path / name, [(member, data[kind]) for member, kind in members])
    assert archive.stat().st_size < 200_000  # the bomb is small on the wire
    info, summary, skipped = client.predict([handle_file(str(archive))], api_name="/index_uploads")
    rows = {shown: why for shown, why in skipped["value"]["data"]}
    for member, reason in reasons.items():
        assert any(member in shown and reason in why for shown, why in rows.items()), (member, rows)
    assert "**1** searchable images" in summary and "your uploads" in info
    assert not Path("/etc/cron.d/evil.png").exists() and not (tmp_path.parent / "escape.png").exists()


def test_a_zip_of_thousands_of_files_is_refused_unread(client, tmp_path, png, unchanged):
    archive = _zip(tmp_path / "many.zip", [(f"f{i}.png", b"") for i in range(5001)], zipfile.ZIP_STORED)
    with pytest.raises(AppError, match="None of those files could be used.*many.zip: the zip lists 5,001 entries, "
                                       "more than the 5,000 opened from one zip"):
        client.predict([handle_file(str(archive))], api_name="/index_uploads")


@pytest.mark.parametrize("text, message", [
    ("", "Type what you are looking for"),
    (" \t\n ", "Type what you are looking for"),
    ("x" * 10_000, "That query is 10,000 characters long; keep it under 1,000"),
    ("?!... ,;", "has no words in it, only punctuation"),
    ('"red circle', "unclosed quote"),
])
def test_bad_query_text_is_explained(client, unchanged, text, message):
    with pytest.raises(AppError, match=message):
        client.predict(text, None, 1.0, 5, 0.0, api_name="/search")


@pytest.mark.parametrize("text", ["a red circle \U0001F534\u2b55", "דוגמה a red circle مرحبا",
                                  "a red\x00 circle\x07\x1b", "\u202ea red circle\u202c"],
                         ids=["emoji", "rtl", "control-characters", "bidi-override"])
def test_emoji_rtl_and_control_characters_still_search(client, unchanged, text):
    tiles, _, timing, _ = client.predict(text, None, 1.0, 5, -0.2, api_name="/search")
    assert len(tiles) == 5 and "text query" in timing
    if "\x00" in text or "\u202e" in text:  # invisible characters dropped: the same query as without them
        plain, *_ = client.predict("a red circle", None, 1.0, 5, -0.2, api_name="/search")
        assert [t["caption"] for t in tiles] == [t["caption"] for t in plain]


@pytest.mark.parametrize("labels, templates, message", [
    ("", "a {}.", "at least two labels"),
    ("red, red, red", "a {}.", "at least two labels"),
    (", ".join(f"label {i}" for i in range(1000)), "a {}.", "At most 100 labels, please; you gave 1,000"),
    ("red, " + "x" * 1100, "a {}.", "Keep each label under 1,000 characters"),
    ("red, blue", "\n".join(f"a {{}} number {i}." for i in range(50)), "At most 20 prompt templates"),
], ids=["empty", "one-label-three-times", "1000-labels", "a-long-label", "50-templates"])
def test_bad_label_lists_are_explained(client, unchanged, labels, templates, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(RED_CIRCLE)), labels, templates, api_name="/classify")


def test_duplicated_labels_count_once(client):
    label, table, _ = client.predict(handle_file(str(RED_CIRCLE)), "red, blue, red,\nblue\nred", "a {} shape.",
                                     api_name="/classify")
    assert [c["label"] for c in label["confidences"]] == ["red", "blue"] and table["headers"][1:] == ["red", "blue"]


def test_too_many_texts_to_rank_is_explained(client, unchanged):
    with pytest.raises(AppError, match="At most 100 texts at once"):
        client.predict(handle_file(str(RED_CIRCLE)), "\n".join(f"text {i}" for i in range(1000)), 5, None,
                       api_name="/describe")


@pytest.mark.parametrize("k", [0, 101, 10**9])
def test_json_search_keeps_k_in_range(client, k):
    with pytest.raises(AppError, match="between 1 and 100"):
        client.predict("a red circle", k, -1.0, api_name="/search_items")


def test_a_public_page_reads_no_host_file_and_keeps_its_model(strict_server):
    client = Client(strict_server.url, verbose=False)
    for query in ("@/etc/passwd", "a red circle + @../app.py"):
        with pytest.raises(AppError, match="'@file' terms read files on the server"):
            client.predict(query, None, 1.0, 5, 0.0, api_name="/search")
    assert "/index_folder" not in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for spec in (str(ROOT / "assets" / "mbm-shapes"), "ViT-B-32:laion2b_s34b_b79k"):  # a host path; a download
        with pytest.raises(AppError, match="This server keeps its model fixed"):
            client.predict(spec, api_name="/load_model")


@pytest.mark.parametrize("kind, message", [("missing", "is missing"), ("file", "is a file, not a folder")])
def test_a_bad_folder_path_on_the_page(client, tmp_path, unchanged, kind, message):
    path = tmp_path / "pictures"
    if kind == "file":
        path.write_text("not a folder")
    with pytest.raises(AppError, match=message):
        client.predict(str(path), api_name="/index_folder")


# ---------------------------------------------------------------- the command line and the Python API


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, shapes_model):
    """A folder of 40 scenes indexed into a cache, as `mbm index` leaves it."""
    base = tmp_path_factory.mktemp("indexed")
    folder, cache = base / "pics", base / "cache"
    write_scenes(folder, n=40, size=64)
    engine = Engine(EngineConfig(cache_dir=str(cache)), encoder=shapes_model)
    engine.open_gallery(folder)
    engine.close_gallery(folder)
    return folder, cache, engine.store_for(folder)


def _state(folder: Path, store: Path) -> tuple:
    """Everything a gallery is: its files' bytes and the store's rows and vectors."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    with sqlite3.connect(f"file:{store / 'gallery.sqlite'}?mode=ro", uri=True) as db:
        items = db.execute("SELECT path, sha256, caption FROM items ORDER BY path").fetchall()
        vectors = db.execute("SELECT item_id, kind, vector FROM vectors ORDER BY item_id, kind").fetchall()
    return files, items, hashlib.sha256(repr(vectors).encode()).hexdigest()


@pytest.mark.parametrize("name, message", [("empty.jpg", "empty.jpg: the file is empty (0 bytes)"),
                                           ("bomb.png", "bomb.png: 900,000,000 pixels is over the")])
def test_cli_bad_images_are_one_line(files, tmp_path, name, message):
    out = run_mbm("describe", str(files / name), "--texts", "a red circle", "a blue star",
                  "--cache", str(tmp_path / "c"))
    assert out.returncode == 2 and f"error: {message}" in out.stderr and "Traceback" not in out.stderr


def test_label_lists_in_the_cli_and_the_api(shapes_model):
    out = run_mbm("classify", str(RED_CIRCLE), "--labels", "red", "red,red")
    assert out.returncode == 2 and "give at least two different labels" in out.stderr
    result = zero_shot(shapes_model, Image.open(RED_CIRCLE), [*(f"label{i}" for i in range(999)), "red", "red"])
    assert len(result.probs) == 1000 and sum(result.probs.values()) == pytest.approx(1.0, abs=1e-4)  # the library
    # has no page limit on labels; duplicates count once


def test_cli_bad_paths_are_one_line_each(tmp_path):  # a file for a folder: test_a_bad_folder_path_on_the_page
    loop = tmp_path / "loopy"
    loop.mkdir()
    Image.open(RED_CIRCLE).save(loop / "real.png")
    (loop / "again").symlink_to(loop)  # a folder that contains itself
    (loop / "self.jpg").symlink_to(loop / "self.jpg")  # a file link that points at itself
    out = run_mbm("index", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "cache"))
    assert out.returncode == 2 and "is missing" in out.stderr and "Traceback" not in out.stderr
    out = run_mbm("index", str(loop), "--cache", str(tmp_path / "cache"), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1 images searchable" in out.stdout and "skipped self.jpg: cannot be read (Too many levels" in out.stdout


def test_an_unreadable_folder_is_an_error_and_an_unreadable_sub_folder_loses_nothing(tmp_path, shapes_model):
    """As root, permissions do not bind, so the command runs without the capabilities that bypass them."""
    folder, cache = tmp_path / "pics", tmp_path / "cache"
    write_scenes(folder / "open", n=3, size=64)
    write_scenes(folder / "locked", n=2, size=64)
    engine = Engine(EngineConfig(cache_dir=str(cache)), encoder=shapes_model)
    gallery, report = engine.open_gallery(folder)
    assert len(gallery) == 5
    engine.close_gallery(folder)
    drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    (folder / "locked").chmod(0)
    try:
        out = run_mbm("index", str(folder), "--cache", str(cache), "--model", shapes_model.name, wrapper=drop)
        assert out.returncode == 0, out.stderr
        assert "5 images searchable" in out.stdout and "skipped locked/: folder cannot be read (Permission denied)" \
            in out.stdout  # the two locked images are kept, not deleted
        folder.chmod(0)
        out = run_mbm("index", str(folder), "--cache", str(cache), "--model", shapes_model.name, wrapper=drop)
    finally:
        folder.chmod(0o755)
        (folder / "locked").chmod(0o755)
    assert out.returncode == 2 and f"cannot list the gallery folder {folder}: Permission denied" in out.stderr
    gallery, report = engine.open_gallery(folder)
    assert len(gallery) == 5 and report.encoded == 0


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_damaged_faiss_file_is_rebuilt_with_the_same_answers(indexed, shapes_model, damage):
    folder, cache, store = indexed

    def answers() -> list[tuple[int, float]]:
        gallery = Gallery(folder, shapes_model, store)  # opened afresh, as a restarted app or command does
        try:
            return [(h.id, round(h.score, 5)) for h in search(gallery, "a red circle", k=10)]
        finally:
            gallery.close()

    before, state = answers(), _state(folder, store)
    index_file = next((store / "index").glob("*.faiss"))
    if damage == "delete":
        index_file.unlink()
    else:
        index_file.write_bytes(index_file.read_bytes()[:100])
    assert answers() == before and len(before) == 10
    assert _state(folder, store) == state and next((store / "index").glob("*.faiss")).stat().st_size > 100


def test_a_locked_database_is_explained_and_reads_go_on(indexed, shapes_model):
    folder, cache, store = indexed
    state = _state(folder, store)
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               f"db = sqlite3.connect({str(store / 'gallery.sqlite')!r}, isolation_level=None)\n"
                               "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (folder / "new.png").write_bytes(RED_CIRCLE.read_bytes())  # something to write, so sync needs the lock
        gallery = Gallery(folder, shapes_model, store, busy_timeout_s=0.5)
        assert len(gallery.index) == 40  # reading goes on while another process writes
        with pytest.raises(GalleryLockedError, match=f"{store / 'gallery.sqlite'} is locked by another program"):
            gallery.sync()  # `mbm index` prints the same as one line, exit status 4
        assert _state(folder, store)[1:] == state[1:]  # not a row or vector changed
    finally:
        holder.kill()
        holder.wait()
        (folder / "new.png").unlink()
    gallery.close()


@pytest.fixture(scope="module")
def damaged_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("damaged") / "my-model"
    folder.mkdir()
    source = ROOT / "assets" / "mbm-shapes"
    (folder / "open_clip_config.json").write_bytes((source / "open_clip_config.json").read_bytes())
    weights = (source / "open_clip_model.safetensors").read_bytes()
    (folder / "open_clip_model.safetensors").write_bytes(weights[: len(weights) // 2])
    return folder


def test_damaged_weights_name_the_file_in_the_api_the_cli_and_the_app(damaged_model, tmp_path):
    weights = damaged_model / "open_clip_model.safetensors"
    expected = f"cannot load the weights in {weights}: the file is truncated, damaged"
    with pytest.raises(WeightsFileError, match=expected):
        create_model(str(damaged_model), device="cpu")
    out = run_mbm("search", "a red circle", "--model", str(damaged_model), "--cache", str(tmp_path / "cache"))
    assert out.returncode == 3 and expected in out.stderr and "Traceback" not in out.stderr  # 3: weights
    app = subprocess.run([sys.executable, "app.py", "--model", str(damaged_model)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "MBM_CACHE": str(tmp_path / "cache")})
    assert app.returncode == 1 and f"error: {expected}" in app.stderr and "Traceback" not in app.stderr


# ---------------------------------------------------------------- round 2: what an attacker tries
def _fn_index(url: str, api_name: str) -> int:
    config = json.loads(urllib.request.urlopen(url + "config", timeout=10).read())
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def _join(url: str, api_name: str, data: list, session: str | None = None, body: bytes | None = None):
    """Join the queue as a script would, by raw HTTP: `(status, answer)`; the body is JSON with non-ASCII escaped,
    so a lone surrogate travels as the text "\\ud800"."""
    payload = body or json.dumps({"data": data, "fn_index": _fn_index(url, api_name),
                                  "session_hash": session or uuid.uuid4().hex}).encode()
    request = urllib.request.Request(url + "gradio_api/queue/join", payload, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _raw_call(url: str, api_name: str, data: list, session: str | None = None, body: bytes | None = None) -> dict:
    """A queued call by raw HTTP, without the page's heartbeat: the finished event's message."""
    session = session or uuid.uuid4().hex
    if body is not None:
        body = body.replace(b"SESSION", session.encode()).replace(b"FN", str(_fn_index(url, api_name)).encode())
    status, answer = _join(url, api_name, data, session, body)
    assert status == 200, answer
    with urllib.request.urlopen(f"{url}gradio_api/queue/data?session_hash={session}", timeout=120) as stream:
        for line in stream:
            if line.startswith(b"data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the event never completed")


def _error(message: dict) -> str:
    assert message["success"] is False, message
    return message["output"]["error"] or ""


def _rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


HOSTILE_TEMPLATES = ["{:>999999999}", "a {} of {0.__class__.__init__.__globals__}", "{{}} {}", "{}{}", "{0}", "{"]


def test_templates_are_plain_text_on_the_page_the_cli_and_the_api(client, server, shapes_model, tmp_path, unchanged):
    rss = _rss_mb(server.pid)
    label, table, _ = client.predict(handle_file(str(RED_CIRCLE)), "circle, star", "\n".join(HOSTILE_TEMPLATES),
                                     api_name="/classify")
    assert label["label"] == "circle" and table["headers"] == ["template", "circle", "star"]
    assert [row[0] for row in table["value"]["data"]] == HOSTILE_TEMPLATES  # each ran as the text it is
    assert _rss_mb(server.pid) < rss + 200  # a padding spec would have asked for gigabytes
    out = run_mbm("classify", str(RED_CIRCLE), "--labels", "circle", "star", "--templates", *HOSTILE_TEMPLATES,
                  "--json")
    assert out.returncode == 0, out.stderr
    assert list(json.loads(out.stdout)["per_template"]) == HOSTILE_TEMPLATES
    result = zero_shot(shapes_model, Image.open(RED_CIRCLE), ["circle", "star"], HOSTILE_TEMPLATES)
    assert next(iter(result.probs)) == "circle" and "0x" not in repr(result.per_template)
    assert prompts("star", HOSTILE_TEMPLATES)[:4] == ["{:>999999999} star", "a star of {0.__class__.__init__."
                                                      "__globals__}", "{star} star", "starstar"]
    lab = Engine(EngineConfig(cache_dir=str(tmp_path / "c")), encoder=shapes_model).prompt_lab(
        Image.open(RED_CIRCLE), ["circle", "star"], HOSTILE_TEMPLATES)
    assert [row[1].text for row in lab.prompts][:2] == ["{:>999999999} star", "a star of {0.__class__.__init__."
                                                        "__globals__}"]


def test_long_words_cost_bounded_work_and_memory(shapes_model, client, observer):
    tokenizer = shapes_model.tokenizer
    word = "".join(chr(97 + (i * 7 + i // 26) % 26) for i in range(1000))
    assert len(tokenizer.encode(word)) > 150  # as one piece, the tokenizer's BPE grows with its square
    assert shapes_model.count_tokens(word) <= 1000 // MAX_WORD_CHARS * 40  # cut into pieces first
    shapes_model.encode_texts([f"{i} {word[i:]}{i}" for i in range(WORD_CACHE // 10)] +
                              [f"w{i}" for i in range(WORD_CACHE + 500)])
    assert len(tokenizer.cache) <= WORD_CACHE + 2  # visitors' words are not kept without bound
    assert len(tokenizer.cache["<start_of_text>"]) > 0  # the special tokens stay
    labels = "\n".join(f"{word[i:]}{word[:i]}" for i in range(100))  # 100 KB of 1,000-letter words
    job = client.submit(handle_file(str(RED_CIRCLE)), labels, "a {}.\na photo of {}.\n{} art\nthe {}",
                        api_name="/classify")
    rows = observer.predict("a red circle", 3, -1.0, api_name="/search_items")  # another visitor is served
    assert len(rows) == 3
    label, table, _ = job.result(timeout=120)
    assert len(table["value"]["data"]) == 4 and len(label["confidences"]) == 5


def test_one_visitor_cannot_fill_the_queue(server, observer):
    url, mine = server.url, uuid.uuid4().hex
    answers = [_join(url, "train_live", [30], mine) for _ in range(10)]  # one visitor floods training
    assert answers[0][0] == 200
    assert all(a == (422, answers[1][1]) for a in answers[1:])
    assert "You already have a training request waiting or running" in answers[1][1]["detail"][0]["message"]
    others = [_join(url, "train_live", [30]) for _ in range(6)]  # sessions without number: training has 3 places
    assert [status for status, _ in others].count(200) <= 4
    assert "training requests are already waiting" in others[-1][1]["detail"][0]["message"]
    image = _uploaded(url, RED_CIRCLE)  # and a few quick ones: slow classifications, so that they pile up
    labels = "\n".join(f"label {i} " + "x" * 900 for i in range(100))
    heavy = [image, labels, "\n".join(f"t{i} {{}}" for i in range(4))]  # the most a shared page embeds at once
    quick = [_join(url, "classify", heavy, mine) for _ in range(8)]
    assert [s for s, _ in quick[:4]] == [200] * 4 and quick[-1][0] == 422
    assert "You already have 4 requests waiting or running" in quick[-1][1]["detail"][0]["message"]
    assert len(observer.predict("a red circle", 5, -1.0, api_name="/search_items")) == 5  # everyone else is served
    cancel = [(mine, "train_live", answers[0][1])] + [(None, "train_live", a) for s, a in others if s == 200] + [
        (mine, "classify", a) for s, a in quick if s == 200]
    for session, api_name, answer in cancel:  # nothing runs on for nobody
        request = urllib.request.Request(url + "gradio_api/cancel", json.dumps(
            {"session_hash": session or "x", "fn_index": _fn_index(url, api_name),
             "event_id": answer["event_id"]}).encode(), {"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).close()


def test_a_public_page_answers_only_through_the_queue(strict_server):
    url = strict_server.url
    request = urllib.request.Request(url + "gradio_api/run/search_items", json.dumps(
        {"data": ["a red circle", 3, 0.0]}).encode(), {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 404 and b"join the queue" in refused.value.read()
    rows = _raw_call(url, "search_items", ["a red circle", 3, 0.0])["output"]["data"][0]
    assert len(rows) == 3  # the same endpoint through the queue


@pytest.mark.parametrize("declared", [True, False])
def test_a_huge_request_body_is_refused_before_it_is_read(strict_server, declared):
    """50 MB of JSON, its length declared or streamed in chunks: 413 at once, and the server never holds it."""
    rss = _rss_mb(strict_server.pid)
    host, port = urllib.parse.urlsplit(strict_server.url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/gradio_api/queue/join")
    connection.putheader("Content-Type", "application/json")
    connection.putheader(*(("Content-Length", "50000000") if declared else ("Transfer-Encoding", "chunked")))
    connection.endheaders()
    chunk = b"a" * 2**20
    try:
        for _ in range(50):
            connection.send(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:  # the server answered and closed: it will not read the rest
        pass
    answer = connection.getresponse()
    assert answer.status == 413 and "at most 65,536 bytes" in json.loads(answer.read())["detail"]
    connection.close()
    assert _rss_mb(strict_server.pid) < rss + 30  # not parsed, not even held


def test_uploads_are_held_to_a_quota_per_visitor(strict_server, tmp_path):
    rng = np.random.default_rng(0)
    noise = [_png_bytes(Image.fromarray(rng.integers(0, 255, (120, 120, 3), np.uint8))) for _ in range(12)]
    archive = _zip(tmp_path / "many.zip", [(f"n{i}.png", data) for i, data in enumerate(noise)])
    client = Client(strict_server.url, verbose=False)
    try:
        _, summary, skipped = client.predict([handle_file(str(archive))], api_name="/index_uploads")
        kept = int(re.search(r"\*\*(\d+)\*\* searchable", summary).group(1))
        assert 0 < kept < 12 and kept * len(noise[0]) <= 0.3 * 2**20
        reasons = {row[1] for row in skipped["value"]["data"]}
        assert len(skipped["value"]["data"]) == 12 - kept and all("quota for uploads" in r for r in reasons)
        _, summary, skipped = client.predict([handle_file(str(archive))], api_name="/index_uploads")
        assert f"**{kept}** searchable" in summary and len(skipped["value"]["data"]) == 12  # nothing more fits
    finally:
        client.close()


def test_a_script_without_a_page_keeps_its_uploads_minutes_not_a_day(strict_server, tmp_path):
    sessions = strict_server.cache / "sessions"
    listing = lambda: {p for p in sessions.glob("*/*") if p.is_dir()}
    page = Client(strict_server.url, verbose=False)  # gradio_client holds the heartbeat, as the page does
    try:
        before = listing()
        page.predict([handle_file(str(RED_CIRCLE))], api_name="/index_uploads")
        [with_page] = listing() - before
        message = _raw_call(strict_server.url, "index_uploads", [[_uploaded(strict_server.url, RED_CIRCLE)]])
        assert message["success"], message
        [scripted] = listing() - before - {with_page}
        page.predict(api_name="/gallery_info")  # the page's visitor used their gallery just now
        deadline = time.time() + 20
        while scripted.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert not scripted.exists() and with_page.exists()  # idle 1.2 s without a page: gone; with one: kept
    finally:
        page.close()


def test_a_second_app_on_the_same_cache_leaves_the_first_ones_visitors_alone(server, client, tmp_path):
    before = {p for p in (server.cache / "sessions").glob("*/*") if p.is_dir()}
    _, summary, _ = client.predict([handle_file(str(RED_CIRCLE))], api_name="/index_uploads")
    [mine] = {p for p in (server.cache / "sessions").glob("*/*") if p.is_dir()} - before
    second, other = start_app(tmp_path, env={"MBM_CACHE": str(server.cache)})
    try:
        assert "0 stale session folders removed" in other.log.read_text()
        tiles, *_ = client.predict("a red circle", None, 1.0, 5, -0.2, api_name="/search")
        assert len(tiles) == 1 and mine.is_dir()  # still their own upload, still there
    finally:
        stop_app(second)
    shutil.rmtree(mine)  # gone by other means (a wiped cache): the visitor is told, with no path
    with pytest.raises(AppError) as error:
        client.predict("a red circle", None, 1.0, 5, -0.2, api_name="/search")
    assert "Your uploaded gallery is gone" in str(error.value) and "/" not in str(error.value).split("gone")[1]
    client.predict(api_name="/use_server_gallery")


@pytest.fixture(scope="module")
def damaged_store(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("damaged-store")
    folder, cache = base / "pics", base / "cache"
    write_scenes(folder, n=3, size=64)
    out = run_mbm("index", str(folder), "--cache", str(cache))
    assert out.returncode == 0, out.stderr
    [store] = (cache / "galleries").iterdir()
    (store / "gallery.sqlite").write_bytes(b"this is not a database" * 200)
    for extra in store.glob("gallery.sqlite-*"):
        extra.unlink()
    return folder, cache


@pytest.mark.parametrize("command", [["search", "a red circle"], ["index"]])
def test_a_damaged_store_is_one_line_with_its_own_exit_code(damaged_store, command):
    folder, cache = damaged_store
    args = [*command, "--gallery", str(folder)] if command[0] == "search" else [*command, str(folder)]
    out = run_mbm(*args, "--cache", str(cache))
    assert out.returncode == 4 and "Traceback" not in out.stderr
    assert re.search(r"error: the gallery's store \S+gallery.sqlite is damaged \(file is not a database\).*Delete "
                     r"the folder", out.stderr)


def test_the_app_says_its_gallerys_store_is_damaged(damaged_store):
    folder, cache = damaged_store
    app = subprocess.run([sys.executable, "app.py", "--gallery", str(folder)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1", "MBM_CACHE": str(cache)})
    assert app.returncode == 1 and "Traceback" not in app.stderr
    assert "gallery.sqlite is damaged (file is not a database)" in app.stderr.splitlines()[-1]


@pytest.mark.parametrize("api_name, data, message", [
    ("search_items", ["a red circle", None, 0.0], "k, the number of results, must be a whole number between 1 and "
                                                  "100, not None."),
    ("search_items", ["a red circle", "ten", 0.0], "must be a whole number between 1 and 100, not 'ten'"),
    ("search_items", ["a red circle", float("nan"), 0.0], "must be a whole number between 1 and 100, not nan"),
    ("search_items", ["a red circle", 5, float("inf")], "The threshold (a cosine score) must be a number between -1 "
                                                        "and 1, not inf"),
    ("search", ["a red circle", None, 1.0, None, 0.0, None], "Results (k) must be a whole number between 1 and 48, not "
                                                       "None."),
    ("search", ["a red circle", None, "heavy", 12, 0.0, None], "Image weight"),
    ("search_items", ["9" * 400 + ' x "red"', 5, 0.0], "is too large: give weights between -100 and 100"),
    ("more_like", [None, 5, 0.0], "The item id (from search_items) must be a whole number"),
    ("search_items", [["a list"], 5, 0.0], "The query must be text, not list."),
])
def test_bad_numbers_and_values_from_a_script_are_explained(server, api_name, data, message):
    assert message in _error(_raw_call(server.url, api_name, data))


def test_braces_and_lone_surrogates_get_answers(server, client):
    label, table, _ = client.predict(handle_file(str(RED_CIRCLE)), "circle, star", "{}{}", api_name="/classify")
    # "{}{}" makes "circlecircle" and "starstar": what the model makes of those is its business, not the page's
    assert label["label"] in ("circle", "star") and table["value"]["data"][0][0] == "{}{}"
    assert abs(sum(c["confidence"] for c in label["confidences"]) - 1) < 1e-3
    answer = _raw_call(server.url, "search_items", ["a red \ud800circle", 3, 0.0])  # a script's broken text
    assert answer["success"] and len(answer["output"]["data"][0]) == 3
    answer = _raw_call(server.url, "describe", [None, "a red circle\nbad \udc80 text", 2, None])
    assert "Give an image to describe." in _error(answer)  # the stream carried the answer
    out = run_mbm("search", "a red circle", "-k", "2")  # and the command line's own arguments
    assert out.returncode == 0


def _uploaded(url: str, path: Path) -> dict:
    """`path` uploaded by raw HTTP, as the FileData a queued call takes."""
    request = urllib.request.Request(url + "gradio_api/upload", _multipart(path),
                                     {"Content-Type": "multipart/form-data; boundary=mbm"})
    [where] = json.loads(urllib.request.urlopen(request, timeout=30).read())
    return {"path": where, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _multipart(path: Path) -> bytes:
    return (b"--mbm\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + path.read_bytes() + b"\r\n--mbm--\r\n")


def test_a_visitors_prompts_per_minute_are_bounded(server):
    visitor = Client(server.url, verbose=False)
    labels, templates = "\n".join(f"thing {i}" for i in range(100)), "a {}.\na photo of a {}.\nthe {}\n{} art"
    try:
        for _ in range(3):  # 3 x 400 prompts: this minute's budget
            label, _, _ = visitor.predict(handle_file(str(RED_CIRCLE)), labels, templates, api_name="/classify")
            assert len(label["confidences"]) == 5
        with pytest.raises(AppError, match=r"You have had 1,200 prompts embedded in the last minute, and this asks "
                                           r"for 400 more; .* Wait \d+ s, or use fewer labels or templates"):
            visitor.predict(handle_file(str(RED_CIRCLE)), labels, templates, api_name="/classify")
        with pytest.raises(AppError, match="80 labels x 6 templates is 480 prompts; one request embeds at most 400"):
            visitor.predict(handle_file(str(RED_CIRCLE)), "\n".join(labels.splitlines()[:80]),
                            templates + "\nmy {}\nyour {}", api_name="/classify")
    finally:
        visitor.close()
    other = Client(server.url, verbose=False)  # nobody else's budget was touched
    try:
        label, _, _ = other.predict(handle_file(str(RED_CIRCLE)), labels, templates, api_name="/classify")
        assert len(label["confidences"]) == 5
    finally:
        other.close()


def test_a_refusal_is_one_line_in_the_server_log_not_a_traceback(server, tmp_path):
    """A classroom's mistakes (an empty query, a slider sent as text, a file that is no image) each leave one line
    in the log: a log full of tracebacks for visitors' typos hides the one that is a bug."""
    client = Client(server.url, verbose=False)
    before = server.log.stat().st_size
    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"this is text, not a picture")
    picture = handle_file(str(not_image))
    for args, api, says in [(("", None, 1.0, 5, 0.0), "/search", "Type what you are looking for"),
                            (("a red circle", None, 1.0, "many", 0.0), "/search", "must be a whole number"),
                            ((picture, "circle\nsquare", "a {}."), "/classify", "could not be read")]:
        with pytest.raises(AppError, match=says):
            client.predict(*args, api_name=api)
    with open(server.log, "rb") as f:
        f.seek(before)
        written = f.read().decode(errors="replace")
    assert "Traceback" not in written
    refused = [line for line in written.splitlines() if "refused in" in line]
    assert len(refused) == 3 and all(len(line) < 400 for line in refused), written[-2000:]
    assert any("Type what you are looking for" in line for line in refused)
