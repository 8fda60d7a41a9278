"""Words about shapes scenes: captions for contrastive training and questions for fused classifiers.

`describe(scene)` is the canonical caption (every object with its size, colour, shape and place);
evaluation ranks images by it. `captions(scene, rng)` samples the varied phrasings used in training:
full descriptions, short ones ("a red circle"), prompt-like ones ("a photo of a star"), relations
("a star left of a square") and counts. `questions(scene)` lists questions with answers from the
fixed vocabulary `ANSWERS`, each tagged with its type; "absent" questions ask the colour of a shape the scene
does not hold, "empty" ones the shape at a place where nothing is, and the answer to both is "none".
"""

from __future__ import annotations

import random
import re

from mbm.data.shapes import COLOURS, COLS, ROWS, SHAPES, Obj, Scene

NUMBERS = ("zero", "one", "two", "three", "four")
QUESTION_TYPES = ("colour", "shape_at", "count", "exists", "absent", "empty")
ANSWERS = (*COLOURS, *SHAPES, *NUMBERS[:5], "yes", "no", "none")  # "none": what a question names is not there
# Prompt templates for zero-shot classification; training captions use the same phrasings.
SHAPE_TEMPLATES = ("a photo of a {}.", "a {}.", "a drawing of a {}.", "a picture of a {}.")
COLOUR_TEMPLATES = ("a photo of a {} shape.", "a {} shape.", "something {}.", "a {} object.")


def fix_articles(text: str) -> str:
    """ "a orange star" -> "an orange star": templates say "a {}", English wants "an" before a vowel."""
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


def place(o: Obj) -> str:
    """Where an object is, in words: "at the top left", "in the center", "on the right"."""
    return place_at(o.row, o.col)


def place_at(r: int, c: int) -> str:
    """A place of the 3 x 3 grid (row, column) in words, as `place` says it."""
    row, col = ROWS[r], COLS[c]
    if row == "middle":
        return "in the center" if col == "center" else f"on the {col}"
    return f"at the {row}" if col == "center" else f"at the {row} {col}"


def _obj(o: Obj, size: bool = False, where: bool = False, colour: bool = True, shape: bool = True) -> str:
    words = ["a"] + ([o.size] if size else []) + ([o.colour] if colour else []) + [o.shape if shape else "shape"]
    return fix_articles(" ".join(words) + (f" {place(o)}" if where else ""))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe(scene: Scene) -> str:
    """The canonical caption: every object, in reading order, with size, colour, shape and place."""
    return _join([_obj(o, size=True, where=True) for o in scene.objects])


def _relation(a: Obj, b: Obj, rng: random.Random) -> str | None:
    options = []
    if a.col < b.col:
        options.append("left of")
    if a.col > b.col:
        options.append("right of")
    if a.row < b.row:
        options.append("above")
    if a.row > b.row:
        options.append("below")
    if not options:
        return None
    name = (lambda o: o.shape) if rng.random() < 0.5 else (lambda o: f"{o.colour} {o.shape}")
    return fix_articles(f"a {name(a)} {rng.choice(options)} a {name(b)}")


def captions(scene: Scene, rng: random.Random) -> tuple[str, tuple[int, ...]]:
    """Sample one training caption and the indices of the objects it mentions.

    The same `rng` state gives the same choice of phrasing and objects for two scenes of the
    same layout, so a scene and its minimal pair (one attribute changed) get matching captions.
    """
    objs, n = scene.objects, len(scene.objects)
    kind = rng.choices(("full", "objects", "one", "prompt", "relation", "count"),
                       weights=(4, 2, 1.5, 4 if n == 1 else 0.5, 0 if n == 1 else 1, 0.5))[0]
    if kind == "full":
        return describe(scene), tuple(range(n))
    if kind == "objects":
        order = rng.sample(range(n), n)
        return _join([_obj(objs[i], size=rng.random() < 0.3) for i in order]), tuple(order)
    if kind == "one":
        i, leave_out = rng.randrange(n), rng.random()  # sometimes name only the shape, or only the colour
        return _obj(objs[i], size=rng.random() < 0.5, where=rng.random() < 0.7,
                    colour=leave_out > 0.25, shape=not 0.25 < leave_out < 0.4), (i,)
    if kind == "prompt":
        i = rng.randrange(n)
        o = objs[i]
        label, templates = rng.choices((
            (f"{o.colour} {o.shape}", SHAPE_TEMPLATES), (o.shape, SHAPE_TEMPLATES), (o.colour, COLOUR_TEMPLATES)),
            weights=(3, 4, 3))[0]
        return fix_articles(rng.choice(templates).format(label)), (i,)
    if kind == "relation":
        i, j = rng.sample(range(n), 2)
        text = _relation(objs[i], objs[j], rng)
        if text is not None:
            return text, (i, j)
        return _join([_obj(objs[i]), _obj(objs[j])]), (i, j)
    shapes_word = "shape" if n == 1 else "shapes"
    return f"{NUMBERS[n]} {shapes_word}: " + _join([_obj(o) for o in objs]), tuple(range(n))


def questions(scene: Scene, rng: random.Random | None = None) -> list[tuple[str, str, str]]:
    """Questions about a scene as `(question, answer, type)`; every answer is in `ANSWERS`.

    Args:
        scene: the scene asked about.
        rng: picks what is absent for the "no" existence question and the "none" ones; default seeded by the scene.
    """
    rng = rng or random.Random(describe(scene))
    objs = scene.objects
    out = []
    shapes = [o.shape for o in objs]
    for o in objs:
        if shapes.count(o.shape) == 1:
            out.append((f"what colour is the {o.shape}?", o.colour, "colour"))
        out.append((f"what shape is {place(o)}?", o.shape, "shape_at"))
    out.append(("how many shapes are there?", NUMBERS[len(objs)], "count"))
    present = {(o.colour, o.shape) for o in objs}
    c, s = rng.choice(sorted(present))
    out.append((fix_articles(f"is there a {c} {s}?"), "yes", "exists"))
    while (c, s) in present:
        c, s = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    out.append((fix_articles(f"is there a {c} {s}?"), "no", "exists"))
    return out + absent_questions(scene, rng)


def absent_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """Two questions whose answer is "none": the colour of a shape the scene lacks, and the shape at an empty
    place (a scene holds at most four objects in nine places, so both always exist). About a fifth of a scene's
    questions: enough to learn "there is none" without crowding out the rest."""
    missing = [s for s in SHAPES if s not in {o.shape for o in scene.objects}]
    taken = {(o.row, o.col) for o in scene.objects}
    empty = [(r, c) for r in range(len(ROWS)) for c in range(len(COLS)) if (r, c) not in taken]
    return [(f"what colour is the {rng.choice(missing)}?", "none", "absent"),
            (f"what shape is {place_at(*rng.choice(empty))}?", "none", "empty")]
