"""Start-up of the page: what `python app.py` imports when, and the start-up log line. No timings are asserted
here; `benchmarks/bench_page.py` measures them."""

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


def test_the_app_logs_where_its_start_went(server):
    deadline = time.time() + 30  # the line follows launch(), which returns just after the page answers
    while "page served in" not in server.log.read_text() and time.time() < deadline:
        time.sleep(0.2)
    line = next(line for line in server.log.read_text().splitlines() if "page served in" in line)
    for phase in ("imports", "model", "gallery", "page", "server", "CPU time"):
        assert phase in line
