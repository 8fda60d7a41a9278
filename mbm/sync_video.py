"""The video half of a gallery's sync: each video's sampled frames (`mbm.video.sample`: one a second plus the cuts)
are thumbnailed, embedded and committed a batch at a time, so a sync killed in the middle of a long video keeps
the frames it committed and, run again, decodes past them and embeds only the rest. A changed video loses its
frames and is sampled again; a damaged one is recorded with its error (and the frames before the damage stay
searchable); nothing about a video can fail the sync of the gallery.

A folder's shipped vectors (`mbm.shipped`) hold frames too, keyed by the video's SHA-256 and the frame's time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from mbm import video
from mbm.data.images import save_thumbnail

log = logging.getLogger(__name__)
EVERY = 1.0  # seconds between a video's clock frames
FRAME_BATCH = 32  # frames per encoder call and per committed transaction


def frame_key(sha: str, t: float) -> str:
    """A frame's name in thumbnails and shipped vectors: the video's content and the time, in milliseconds."""
    return f"{sha}-{round(t * 1000)}"


# videos not sampled yet, or with frames that lack an embedding for a model (`?`: its key)
VIDEOS_TODO = ("SELECT v.item_id, i.path, v.every FROM videos v JOIN items i ON i.id = v.item_id "
               "WHERE (v.frames IS NULL AND i.error IS NULL) OR EXISTS (SELECT 1 FROM frames f WHERE f.item_id = "
               "v.item_id AND f.id NOT IN (SELECT frame_id FROM frame_vectors WHERE model=?)) ORDER BY v.item_id")

class VideoSyncing:
    """`_encode_videos` and what it needs; mixed into `Gallery` (its store, root, encoder and thumbnails)."""

    def _encode_videos(self, report, progress, shipped: dict[str, np.ndarray]) -> None:
        """Sample and embed every video that lacks frames, or frames embedded by the current model."""
        todo = self.db.all(VIDEOS_TODO, (self.encoder.key,))
        for n, (item_id, path, every) in enumerate(todo, 1):
            self._encode_video(item_id, path, every, report, shipped)
            report.videos += 1
            if progress:
                progress(n, len(todo), "encoding videos")

    def _encode_video(self, item_id: int, path: str, every: float, report, shipped: dict[str, np.ndarray]) -> None:
        from mbm.sync import THUMB_SIZE, _sha256
        embedded = {round(t, 3) for (t,) in self.db.all(
            "SELECT f.t FROM frames f JOIN frame_vectors v ON v.frame_id = f.id WHERE f.item_id=? AND v.model=?",
            (item_id, self.encoder.key))}
        file = self.root / path
        sha, error, seen, batch, info = _sha256(file), None, 0, [], None
        try:
            if sha is None:
                raise video.VideoError(f"{file.name} cannot be read (moved, or its permissions changed)")
            info = video.probe(file)
            for frame in video.sample(file, every=every, side=THUMB_SIZE):
                seen += 1
                if frame.t not in embedded:
                    batch.append(frame)
                if len(batch) == FRAME_BATCH:
                    self._store_frames(item_id, sha, info, batch, report, shipped)
                    batch = []
        except video.VideoError as e:
            log.warning("video %s: %s", path, e)
            folder = Path(path).parent.as_posix()
            error = str(e) if folder == "." else f"{folder}/{e}"  # it starts with the file's name: name its folder
        if batch:  # the frames before a damage are kept
            self._store_frames(item_id, sha, info, batch, report, shipped)
        with self.db.transaction() as db:
            db.execute("UPDATE videos SET frames=?, duration=? WHERE item_id=?",
                       (seen, info.duration if info else None, item_id))
            db.execute("UPDATE items SET error=? WHERE id=?", (error, item_id))
            self.db.bump(db)

    def _store_frames(self, item_id: int, sha: str, info: video.VideoInfo, frames: list[video.Frame], report,
                      shipped: dict[str, np.ndarray]) -> None:
        """Thumbnail, embed (or take from the shipped vectors) and commit one batch of a video's frames."""
        keys = [frame_key(sha, f.t) for f in frames]
        for f, key in zip(frames, keys):
            thumb = self._thumb_path(key)
            if not thumb.is_file():
                save_thumbnail(f.image, thumb, f.image.width)
        new = [f.image for f, key in zip(frames, keys) if key not in shipped]
        encoded = iter(self._encode_frame_images(new)) if new else iter(())
        vectors = [shipped[key] if key in shipped else next(encoded) for key in keys]
        with self.db.transaction() as db:
            db.execute("UPDATE items SET sha256=?, width=?, height=? WHERE id=?",
                       (sha, info.width, info.height, item_id))
            for f, v in zip(frames, vectors):
                db.execute("INSERT INTO frames (item_id, t, cut) VALUES (?, ?, ?) "
                           "ON CONFLICT(item_id, t) DO UPDATE SET cut=excluded.cut", (item_id, f.t, int(f.cut)))
                frame_id = db.execute("SELECT id FROM frames WHERE item_id=? AND t=?", (item_id, f.t)).fetchone()[0]
                db.execute("INSERT OR REPLACE INTO frame_vectors VALUES (?, ?, ?)",
                           (frame_id, self.encoder.key, np.asarray(v, np.float32).tobytes()))
            self.db.bump(db)
        report.frames += len(frames)
        report.reused += len(frames) - len(new)

    def _encode_frame_images(self, images: list[Image.Image]) -> np.ndarray:
        pixels = stack_pixels([self.encoder.prepare(im) for im in images])  # (B, 3, H, W)
        return self.encoder.encode_pixels(pixels, len(images))


def stack_pixels(pixels: list):
    """`(B, 3, H, W)` from an encoder's `prepare` outputs: torch tensors, or numpy arrays (a torch-free
    `mbm.models._query.IndexEncoder`)."""
    if isinstance(pixels[0], np.ndarray):
        return np.stack(pixels)
    import torch
    return torch.stack(pixels)
