"""How well search finds the moments of the built-in example video: IoU of the spans found against its script.

    python benchmarks/bench_moments.py [--model mbm-shapes] [--template "a {}"]

It writes the example (`mbm.video.write_example`: 15 s, 256 px, 12 fps) into a temporary folder, indexes it with
the model (default: the embedded one, `EMBEDDED`), and for each label of `EXAMPLE_SCRIPT` searches "a LABEL":
printed are the moments found (best first) and, for each span the script puts that label on screen, the best IoU
of a moment with it. Also the time the gallery took to sample and embed the video.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from mbm import video
    from mbm.gallery import Gallery
    from mbm.models import create_model
    from mbm.models._registry import EMBEDDED
    from mbm.search import search
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED)
    parser.add_argument("--template", default="a {}", help="the query, {} the label")
    args = parser.parse_args()
    encoder = create_model(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        video.write_example(Path(tmp) / "example.mp4")
        gallery = Gallery(tmp, encoder, store=Path(tmp) / "store")
        start = time.perf_counter()
        report = gallery.sync()
        print(f"{args.model}: {report.frames} frames of the example sampled and embedded in "
              f"{time.perf_counter() - start:.2f} s\n")
        print("| query | moments found, best first | script | IoU |\n|---|---|---|---:|")
        good = total = 0
        for label in sorted({a.label for a in video.EXAMPLE_SCRIPT}):
            query = args.template.replace("{}", label)
            found = [h for h in search(gallery, query, k=10) if h.start is not None]
            for truth in video.on_screen(label):
                iou = max((video.iou((h.start, h.end), truth) for h in found), default=0.0)
                good, total = good + (iou >= 0.5), total + 1
                spans = ", ".join(f"{h.start:g}-{h.end:g} s ({h.score:.3f})" for h in found)
                print(f"| {query} | {spans} | {truth[0]:g}-{truth[1]:g} s | {iou:.2f} |")
        print(f"\n{good} of {total} spans found with IoU >= 0.5")
        gallery.close()


if __name__ == "__main__":
    main()
