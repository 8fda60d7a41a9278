"""Start-up of the page: what `python app.py` imports when, Gradio's import-time stub upkeep skipped, the
start-up log line. No timings are asserted here; `benchmarks/bench_page.py` measures them."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(code: str) -> dict:
    """Run `code` in a fresh Python at the repository root; it prints one JSON line."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_app_or_asking_for_help_loads_no_heavy_module():
    heavy = ("gradio", "torch", "open_clip", "faiss", "demo", "mbm.engine")
    got = child(f"""
import contextlib, io, json, sys
import app
after_import = [m for m in {heavy!r} if m in sys.modules]
with contextlib.redirect_stdout(io.StringIO()) as help_text:
    try:
        app.main(["--help"])
    except SystemExit as e:
        code = e.code
print(json.dumps({{"import": after_import, "help": [m for m in {heavy!r} if m in sys.modules],
                   "code": code, "usage": help_text.getvalue()}}))
""")
    assert got["import"] == [] and got["help"] == []
    assert got["code"] == 0 and "--model" in got["usage"]


def test_the_page_package_skips_gradios_stub_upkeep_and_leaves_the_import_system_as_it_was():
    got = child("""
import json, sys
import demo
import gradio.component_meta as cm
from demo import _gradio_import
print(json.dumps({"patched": cm.create_or_modify_pyi.__qualname__,
                  "finder": any(isinstance(f, _gradio_import._Finder) for f in sys.meta_path),
                  "again": _gradio_import.install(), "build_demo": callable(demo.build_demo)}))
""")
    assert got["patched"].startswith("skip_existing_stubs")
    assert not got["finder"]  # it left once gradio.component_meta was imported
    assert got["again"] is False and got["build_demo"]


def test_a_component_without_a_stub_still_gets_one(tmp_path, monkeypatch):
    """Gradio's own upkeep runs for a component whose .pyi is missing (a Gradio developer's new component)."""
    spec = importlib.util.spec_from_file_location("gradio_import", ROOT / "demo" / "_gradio_import.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the file alone: this test needs neither gradio nor the demo package
    (tmp_path / "widget.py").write_text("class Widget:\n    pass\n")
    spec = importlib.util.spec_from_file_location("widget", tmp_path / "widget.py")
    widget = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "widget", widget)  # where inspect.getfile finds a class's file
    spec.loader.exec_module(widget)
    calls = []
    upkeep = module.skip_existing_stubs(lambda cls, name, events: calls.append(name))
    upkeep(widget.Widget, "Widget", ["click"])
    assert calls == ["Widget"]  # no stub yet: gradio writes it
    (tmp_path / "widget.pyi").write_text("class Widget: ...\n")
    upkeep(widget.Widget, "Widget", ["click"])
    assert calls == ["Widget"]  # the stub is there: skipped
    upkeep(int, "int", [])  # a class that lives in no file goes to gradio, as before
    assert calls == ["Widget", "int"]


def test_the_app_logs_where_its_start_went(server):
    deadline = time.time() + 30  # the line follows launch(), which returns just after the page answers
    while "page served in" not in server.log.read_text() and time.time() < deadline:
        time.sleep(0.2)
    line = next(line for line in server.log.read_text().splitlines() if "page served in" in line)
    for phase in ("imports", "model", "gallery", "page", "server", "CPU time"):
        assert phase in line
