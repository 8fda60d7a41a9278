"""Embeddings a folder ships for a model: `ROOT/.vectors/<model>.npz`, written by `write_shipped` (i.e.
`python -m mbm index FOLDER --ship-vectors`). When a gallery syncs, an image whose bytes (SHA-256) and a caption
whose text are in that file, for exactly the serving weights (`Encoder.key`), take their vectors from there instead
of the model; so do a video's frames, by the video's bytes and the frame's time (`mbm.sync_video.frame_key`).
The built-in gallery ships them for the embedded models, so a first start decodes its thumbnails but
encodes nothing; retrained weights or changed files are embedded as usual.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
SHIPPED = ".vectors"  # ROOT/SHIPPED/<model>.npz


@dataclass
class Shipped:
    """Vectors a folder ships for the serving weights: by image SHA-256, by caption text and by video frame."""
    images: dict[str, np.ndarray] = field(default_factory=dict)
    captions: dict[str, np.ndarray] = field(default_factory=dict)
    frames: dict[str, np.ndarray] = field(default_factory=dict)  # frame_key(video SHA-256, t) -> vector


def shipped_path(root: Path, model_name: str) -> Path:
    return root / SHIPPED / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', model_name)}.npz"


def read_shipped(root: Path, encoder) -> Shipped:
    """The folder's shipped vectors for `encoder`'s weights; none if there are none, they are for other weights
    (the model was retrained), or the file is not what `write_shipped` writes (then a warning)."""
    path = shipped_path(root, encoder.name)
    if not path.is_file():
        return Shipped()
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["model"]) != encoder.key:
                log.info("%s holds vectors of other weights than %s: not used", path, encoder.key)
                return Shipped()
            shas, images, texts, captions = z["sha256"], z["images"], z["captions"], z["caption_vectors"]
            has_frames = "frame_keys" in z.files  # written before videos: none
            keys = z["frame_keys"] if has_frames else np.zeros(0, str)
            frames = z["frame_vectors"] if has_frames else np.zeros((0, encoder.embed_dim), np.float32)
        dim = encoder.embed_dim
        if images.shape != (len(shas), dim) or captions.shape != (len(texts), dim) or frames.shape != (
                len(keys), dim) or not all(np.isfinite(m).all() for m in (images, captions, frames)):
            raise ValueError("arrays of the wrong shape, or not finite")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:  # damaged or foreign: not used
        log.warning("ignoring %s: %s", path, e)
        return Shipped()
    return Shipped(dict(zip(shas.tolist(), images.astype(np.float32))),
                   dict(zip(texts.tolist(), captions.astype(np.float32))),
                   dict(zip(keys.tolist(), frames.astype(np.float32))))


def write_shipped(root: Path, db, encoder) -> Path:
    """Write `root/.vectors/<model>.npz`: the store's vectors for `encoder`'s weights, by image content, caption
    text (one row per distinct caption) and video frame, for a copy of the folder to start from."""
    from mbm.sync_video import frame_key
    key = encoder.key
    images = db.all("SELECT i.sha256, v.vector FROM items i JOIN vectors v ON v.item_id=i.id "
                    "WHERE v.model=? AND v.kind='image' AND i.sha256 IS NOT NULL ORDER BY i.id", (key,))
    captions = db.all("SELECT i.caption, v.vector FROM items i JOIN vectors v ON v.item_id=i.id "
                      "WHERE v.model=? AND v.kind='caption' ORDER BY i.id", (key,))
    captions = list(dict(captions).items())
    frames = [(frame_key(sha, t), v) for sha, t, v in db.all(
        "SELECT i.sha256, f.t, v.vector FROM frames f JOIN items i ON i.id=f.item_id JOIN frame_vectors v "
        "ON v.frame_id=f.id WHERE v.model=? AND i.sha256 IS NOT NULL ORDER BY f.item_id, f.t", (key,))]

    def matrix(rows) -> np.ndarray:
        if not rows:
            return np.zeros((0, encoder.embed_dim), np.float32)
        return np.stack([np.frombuffer(v, np.float32) for _, v in rows])
    path = shipped_path(root, encoder.name)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, model=np.array(key), sha256=np.array([s for s, _ in images], dtype=str),
                        images=matrix(images), captions=np.array([c for c, _ in captions], dtype=str),
                        caption_vectors=matrix(captions), frame_keys=np.array([k for k, _ in frames], dtype=str),
                        frame_vectors=matrix(frames))
    os.replace(tmp, path)
    return path
