"""Rendered shapes for the offline text-to-image toy `shapes-t2i` (NOT GenEval: GenEval's rules on a toy world).

A scene is a 16 x 16 grid of palette cells (0 = white background, 1..4 = red, green, blue, yellow) holding a few
non-touching filled circles, squares and triangles 5..7 cells wide; an image is the grid upscaled by nearest
neighbour to 32 x 32 RGB. Prompts are records in GenEval's `evaluation_metadata.jsonl` schema (tag, include /
exclude clauses with class, count, color, position, and the prompt text in GenEval's templates), so GenEval's
unchanged rule engine (`harness.metrics.geneval`) judges images of this world.

`prompt_records()` is the task's fixed prompt set (a deterministic enumeration, no randomness); `grammar_records()`
is every prompt the grammar can say (the generator's training prompts); `render_scene(record, rng)` draws a random
scene that satisfies a record (checked with the rule engine's own `relative_position`), which is both the training
data of the bundled networks and the ground truth of the tests.

Example:
    >>> records = prompt_records()
    >>> len(records), records[0]["prompt"]
    (78, 'a photo of a circle')
    >>> scene = render_scene(records[0], np.random.default_rng(0))
    >>> scene.image.shape, scene.image.dtype, [o.shape for o in scene.objects]
    ((32, 32, 3), dtype('uint8'), ['circle'])
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from harness.metrics.geneval import Detection, relative_position

SHAPES = ("circle", "square", "triangle")
#: palette index i + 1 is COLOR_NAMES[i]; the names are GenEval's colour names
COLOR_NAMES = ("red", "green", "blue", "yellow")
PALETTE = np.array([[255, 255, 255], [220, 30, 30], [30, 160, 60], [40, 70, 220], [235, 200, 30]], dtype=np.uint8)
GRID = 16
SCALE = 2
IMAGE_SIZE = GRID * SCALE
SIZES = (5, 6, 7)
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
RELATIONS = ("left of", "right of", "above", "below")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
#: every word a prompt of this grammar uses (the bundled generator's vocabulary)
VOCABULARY = ("<pad>", "a", "photo", "of", "and", *SHAPES, *PLURAL.values(), *COLOR_NAMES, *COUNT_WORDS.values(),
              "left", "right", "above", "below")


def shape_mask(shape: str, size: int) -> np.ndarray:
    """A size x size boolean stamp: a disc, a full square, or an upward isosceles triangle (by cell centres)."""
    c = (np.arange(size) + 0.5)
    y, x = np.meshgrid(c, c, indexing="ij")
    if shape == "circle":
        return (x - size / 2) ** 2 + (y - size / 2) ** 2 <= (size / 2) ** 2 + 0.25
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "triangle":  # apex at the top centre, base the bottom row
        return np.abs(x - size / 2) <= (y / size) * (size / 2) + 0.25
    raise ValueError(f"unknown shape {shape!r}; the shapes are {', '.join(SHAPES)}")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in image pixels (x2, y2 exclusive)
    mask: np.ndarray  # (IMAGE_SIZE, IMAGE_SIZE) bool

    def detection(self) -> Detection:
        return Detection(tuple(float(v) for v in self.box), 1.0, self.mask)


@dataclass(frozen=True)
class Scene:
    cells: np.ndarray  # (GRID, GRID) palette indices
    objects: tuple[SceneObject, ...]

    @property
    def image(self) -> np.ndarray:
        return cells_to_image(self.cells)


def cells_to_image(cells: np.ndarray) -> np.ndarray:
    """(..., GRID, GRID) palette indices -> (..., IMAGE_SIZE, IMAGE_SIZE, 3) uint8 (nearest upscaling)."""
    cells = np.asarray(cells)
    up = cells.repeat(SCALE, axis=-2).repeat(SCALE, axis=-1)
    return PALETTE[up]


def image_to_cells(images: np.ndarray) -> np.ndarray:
    """Inverse of `cells_to_image` for palette images: nearest palette colour of each cell's top-left pixel."""
    px = np.asarray(images, dtype=np.int64)[..., ::SCALE, ::SCALE, :]
    return np.argmin(((px[..., None, :] - PALETTE.astype(np.int64)) ** 2).sum(-1), axis=-1)


def _record(tag: str, include: list[dict], prompt: str, exclude: list[dict] | None = None) -> dict:
    record: dict = {"tag": tag, "include": include}
    if exclude:
        record["exclude"] = exclude
    record["prompt"] = prompt
    return record


def grammar_records() -> list[dict]:
    """Every prompt of the grammar, in GenEval's schema and prompt templates, in a fixed order."""
    out = [_record("single_object", [{"class": s, "count": 1}], f"a photo of a {s}") for s in SHAPES]
    for a, b in itertools.permutations(SHAPES, 2):
        out.append(_record("two_object", [{"class": a, "count": 1}, {"class": b, "count": 1}],
                           f"a photo of a {a} and a {b}"))
    for s in SHAPES:
        for n, word in COUNT_WORDS.items():
            out.append(_record("counting", [{"class": s, "count": n}], f"a photo of {word} {PLURAL[s]}",
                               [{"class": s, "count": n + 1}]))
    for s in SHAPES:
        for c in COLOR_NAMES:
            out.append(_record("colors", [{"class": s, "count": 1, "color": c}], f"a photo of a {c} {s}"))
    for target, subject in itertools.permutations(SHAPES, 2):
        for rel in RELATIONS:
            out.append(_record("position", [{"class": target, "count": 1},
                                            {"class": subject, "count": 1, "position": [rel, 0]}],
                               f"a photo of a {subject} {rel} a {target}"))
    for a, b in itertools.permutations(SHAPES, 2):
        for ca, cb in itertools.permutations(COLOR_NAMES, 2):
            out.append(_record("color_attr", [{"class": a, "count": 1, "color": ca},
                                              {"class": b, "count": 1, "color": cb}],
                               f"a photo of a {ca} {a} and a {cb} {b}"))
    return out


def prompt_records() -> list[dict]:
    """The task's 78 prompts: every prompt of the first five tags and every third color_attr prompt."""
    records = grammar_records()
    attr = [r for r in records if r["tag"] == "color_attr"]
    return [r for r in records if r["tag"] != "color_attr"] + attr[::3]


def tokenize(prompt: str, length: int) -> list[int]:
    """Word ids of a prompt of this grammar (no padding); refuses words outside `VOCABULARY`."""
    words = prompt.split()
    unknown = [w for w in words if w not in VOCABULARY]
    if unknown or not words or len(words) > length:
        raise ValueError(f"prompt {prompt!r} is not in the shapes grammar: " +
                         (f"unknown words {unknown}" if unknown else f"{len(words)} words (1..{length})"))
    return [VOCABULARY.index(w) for w in words]


def _objects_for(record: Mapping) -> list[tuple[str, str | None]]:
    """(shape, colour or None) for each object the record asks for."""
    objs = []
    for clause in record["include"]:
        objs += [(clause["class"], clause.get("color"))] * clause["count"]
    return objs


def _place(objs: Sequence[tuple[str, str]], sizes: Sequence[int], rng: np.random.Generator,
           tries: int = 200) -> list[tuple[int, int]] | None:
    """Top-left cells for the objects so that no two stamps touch (a one-cell gap, 8-neighbourhood)."""
    taken = np.zeros((GRID + 2, GRID + 2), dtype=bool)
    spots = []
    for size in sizes:
        for _ in range(tries):
            y, x = (int(v) for v in rng.integers(0, GRID - size + 1, 2))
            if not taken[y:y + size + 2, x:x + size + 2].any():
                taken[y + 1:y + size + 1, x + 1:x + size + 1] = True
                spots.append((y, x))
                break
        else:
            return None
    return spots


def render_scene(record: Mapping, rng: np.random.Generator, max_tries: int = 1000) -> Scene:
    """A random scene that satisfies `record` by GenEval's rules (unnamed colours drawn at random)."""
    objs = _objects_for(record)
    position = [c.get("position") for c in record["include"]]
    for _ in range(max_tries):
        colored = [(s, c if c is not None else COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]) for s, c in objs]
        small = len(objs) >= 3
        sizes = [int(rng.choice(SIZES[:2] if small else SIZES)) for _ in objs]
        spots = _place(colored, sizes, rng)
        if spots is None:
            continue
        cells = np.zeros((GRID, GRID), dtype=np.int64)
        objects = []
        for (shape, color), size, (y, x) in zip(colored, sizes, spots):
            stamp = shape_mask(shape, size)
            cells[y:y + size, x:x + size][stamp] = COLOR_NAMES.index(color) + 1
            grid_mask = np.zeros((GRID, GRID), dtype=bool)
            grid_mask[y:y + size, x:x + size] = stamp
            rows, cols = np.nonzero(grid_mask)
            box = (int(cols.min()) * SCALE, int(rows.min()) * SCALE, (int(cols.max()) + 1) * SCALE,
                   (int(rows.max()) + 1) * SCALE)
            mask = grid_mask.repeat(SCALE, 0).repeat(SCALE, 1)
            objects.append(SceneObject(shape, color, box, mask))
        if any(p is not None and p[0] not in relative_position(objects[i].detection(), objects[p[1]].detection())
               for i, p in enumerate(position)):
            continue
        return Scene(cells, tuple(objects))
    raise RuntimeError(f"no scene for {record['prompt']!r} in {max_tries} tries")
