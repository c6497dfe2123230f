"""Built-in tracking sequence ``shapes-track``: the built-in shapes moving over a static cluttered scene.

Generated locally and deterministically on first use into ``<DATASETS_DIR>/shapes-track`` in MOTChallenge layout::

    shapes-track/seqinfo.ini          name, frame rate, length, size
    shapes-track/img1/000001.jpg ...  the frames (640x480, 30 FPS, 300 frames)
    shapes-track/gt/gt.txt            frame, id, left, top, width, height, consider, class, visibility
    shapes-track/shapes-track.mp4     the same frames as a video

Objects are the eight shape classes of the detection dataset (drawn with :mod:`utils.data.shapes`, each with a fixed
colour, shading and a slow spin) of radius 24-100 px (log-uniform) in the 640x480 frame: 12-50 px at a 320 px model
input, median 24, like the detection dataset's objects (radius 7 px to 22.5% of the short side, median about 23 px at
320). Some bounce around the frame for the whole sequence, others enter through an edge
later and leave through another; nearer objects hide farther ones where they cross. Ground-truth boxes are the
shapes' whole (amodal) boxes clipped to the frame; ``visibility`` is the fraction of a shape's area that is
visible (neither hidden nor outside the frame), and boxes less than 25% visible are marked ``consider`` = 0
(ignored by the evaluation). ``class`` is the shape class + 1 (MOTChallenge classes start at 1).

The folder is written to a temporary sibling and renamed into place, with a version marker, like the detection
dataset of :mod:`utils.data.builtin`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.data.generated import MARKER_FILE, build_atomically, ensure_generated, read_marker  # noqa: F401 (re-export)
from utils.data.shapes import SHAPE_NAMES, draw_background, draw_distractors, draw_shape, random_colour, shape_polygons
from utils.tracking.mot import seqinfo_text

__all__ = ["SequenceSpec", "MovingShape", "ensure_track_sequence", "generate_track_sequence", "plan_objects",
           "render_frame", "SEQUENCE_NAME"]

SEQUENCE_NAME = "shapes-track"
GENERATOR_VERSION = 1
IGNORE_BELOW_VISIBILITY = 0.25


@dataclass(frozen=True)
class SequenceSpec:
    """What to generate: frame size (pixels), length (frames), rate (frames/s), seed, and the object counts.

    ``residents`` objects bounce inside the frame from the first frame to the last; ``passers`` enter through an
    edge at a random frame in the first half and cross the frame at a constant velocity (1.6x ``speed``, pixels per
    frame) until they leave.
    """

    width: int = 640
    height: int = 480
    frames: int = 300
    frame_rate: float = 30.0
    seed: int = 19
    residents: int = 5
    passers: int = 9
    radius: tuple[float, float] = (24.0, 100.0)
    speed: tuple[float, float] = (1.5, 3.5)


@dataclass(frozen=True)
class MovingShape:
    """One object of the sequence.

    Attributes:
        track_id: ground-truth id (from 1). cls: shape class index. outline: polygons (k, 2) relative to the centre
            at frame ``start``. colour: BGR fill 0-255. start/end: first and last frame (1-based) it exists.
        position: centre (x, y) pixels at ``start``. velocity: pixels per frame. spin: radians per frame.
        bounce: reflect off the frame edges (residents) instead of flying out. depth: larger is nearer.
    """

    track_id: int
    cls: int
    outline: tuple
    colour: np.ndarray
    start: int
    end: int
    position: np.ndarray
    velocity: np.ndarray
    spin: float
    bounce: bool
    depth: int
    radius: float

    def polygons(self, frame: int, size: tuple[int, int]) -> list[np.ndarray]:
        """Return the shape's polygons (k, 2) in frame pixels at ``frame`` (1-based); ``size`` is (w, h)."""
        t = frame - self.start
        centre = self.position + self.velocity * t
        if self.bounce:  # reflect into [r, size - r] (a triangle wave per axis)
            low = np.full(2, self.radius)
            span = np.asarray(size, dtype=np.float64) - 2 * self.radius
            phase = np.mod(centre - low, 2 * span)
            centre = low + np.where(phase > span, 2 * span - phase, phase)
        angle = self.spin * t
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        return [polygon @ rotation + centre for polygon in self.outline]


def _entry(rng: np.random.Generator, spec: SequenceSpec, radius: float, speed: float) -> tuple[np.ndarray, ...]:
    """Return (centre just outside a random edge, velocity pointing across the frame)."""
    w, h = spec.width, spec.height
    edge = int(rng.integers(4))
    along = rng.uniform(0.2, 0.8)
    start = [np.array([-radius, along * h]), np.array([w + radius, along * h]),
             np.array([along * w, -radius]), np.array([along * w, h + radius])][edge]
    target = rng.uniform([0.25 * w, 0.25 * h], [0.75 * w, 0.75 * h])
    direction = (target - start) / np.linalg.norm(target - start)
    return start, direction * speed


def _exit_frame(position: np.ndarray, velocity: np.ndarray, radius: float, spec: SequenceSpec, start: int) -> int:
    """Last frame at which a shape moving in a straight line still overlaps the frame."""
    times = []
    for axis, limit in enumerate((spec.width, spec.height)):
        v = velocity[axis]
        if abs(v) > 1e-9:
            times.append(((limit + radius if v > 0 else -radius) - position[axis]) / v)
    return min(spec.frames, start + int(np.floor(min(times))))


def plan_objects(spec: SequenceSpec, background: np.ndarray) -> list[MovingShape]:
    """Choose every object of the sequence (class, size, colour, path, timing) from ``spec.seed``."""
    rng = np.random.default_rng([spec.seed, GENERATOR_VERSION, 1])
    mean_bg = background.reshape(-1, 3).mean(0)
    objects = []
    for k in range(spec.residents + spec.passers):
        cls = int(rng.integers(len(SHAPE_NAMES)))
        radius = float(np.exp(rng.uniform(*np.log(spec.radius))))
        outline = tuple(shape_polygons(SHAPE_NAMES[cls], np.zeros(2), radius, rng))
        colour = random_colour(rng, (0.5, 1.0), (0.45, 1.0))
        for _ in range(16):
            if np.abs(colour - mean_bg).sum() > 150:
                break
            colour = random_colour(rng, (0.5, 1.0), (0.45, 1.0))
        speed = rng.uniform(*spec.speed)
        spin = float(rng.uniform(-0.01, 0.01))
        if k < spec.residents:
            position = rng.uniform([radius, radius], [spec.width - radius, spec.height - radius])
            angle = rng.uniform(0, 2 * np.pi)
            velocity = speed * np.array([np.cos(angle), np.sin(angle)])
            start, end, bounce = 1, spec.frames, True
        else:
            position, velocity = _entry(rng, spec, radius, 1.6 * speed)
            start = int(rng.integers(1, max(2, spec.frames // 2)))
            end, bounce = _exit_frame(position, velocity, radius, spec, start), False
        objects.append(MovingShape(k + 1, cls, outline, colour, start, end, position, velocity, spin, bounce,
                                   depth=int(rng.permutation(1000)[0]), radius=radius))
    return objects


def _polygon_area(polygons: list[np.ndarray]) -> float:
    """Area in pixels of the outline minus the hole (a ring's second polygon)."""
    areas = [abs(cv2.contourArea(p.astype(np.float32))) for p in polygons]
    return areas[0] - sum(areas[1:])


def render_frame(background: np.ndarray, objects: list[MovingShape], frame: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw frame ``frame`` (1-based) and return (BGR image, ground truth (n, 9) MOTChallenge rows).

    Objects are drawn far to near; ``visibility`` counts the pixels where each object is the nearest one.
    """
    height, width = background.shape[:2]
    image = background.copy()
    nearest = np.full((height, width), -1, dtype=np.int16)
    alive = sorted((o for o in objects if o.start <= frame <= o.end), key=lambda o: o.depth)
    placed = []
    for obj in alive:
        polygons = obj.polygons(frame, (width, height))
        points = np.concatenate(polygons, 0)
        if (points.max(0) < 1).any() or (points.min(0) > (width - 1, height - 1)).any():
            continue  # entirely outside the frame
        draw_shape(np.random.default_rng([seed, obj.track_id]), image, SHAPE_NAMES[obj.cls], polygons, obj.colour)
        mask = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(mask, [np.round(polygons[0]).astype(np.int32)], 1)
        if len(polygons) > 1:
            cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in polygons[1:]], 0)
        nearest[mask > 0] = len(placed)
        placed.append((obj, polygons))
    visible = np.bincount(nearest[nearest >= 0].ravel(), minlength=len(placed))
    rows = []
    for k, (obj, polygons) in enumerate(placed):
        points = np.concatenate(polygons, 0)
        x1, y1 = np.clip(points.min(0), 0, (width, height))
        x2, y2 = np.clip(points.max(0), 0, (width, height))
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        visibility = min(visible[k] / max(_polygon_area(polygons), 1.0), 1.0)
        consider = int(visibility >= IGNORE_BELOW_VISIBILITY)
        rows.append([frame, obj.track_id, x1, y1, x2 - x1, y2 - y1, consider, obj.cls + 1, visibility])
    return image, np.array(rows, dtype=np.float64).reshape(-1, 9)


def scene_background(spec: SequenceSpec) -> np.ndarray:
    """The static scene: a cluttered background with unlabelled distractors (BGR uint8, spec size)."""
    rng = np.random.default_rng([spec.seed, GENERATOR_VERSION, 0])
    background = draw_background(rng, spec.width, spec.height)
    draw_distractors(rng, background, behind=True)
    return background


def render_sequence(spec: SequenceSpec = SequenceSpec()):
    """Yield (frame number, BGR image, ground-truth rows (n, 9)) for every frame of ``spec``, with sensor noise."""
    background = scene_background(spec)
    objects = plan_objects(spec, background)
    noise_rng = np.random.default_rng([spec.seed, GENERATOR_VERSION, 2])
    for frame in range(1, spec.frames + 1):
        image, rows = render_frame(background, objects, frame, spec.seed)
        noise = noise_rng.normal(0.0, 2.0, image.shape).astype(np.float32)
        yield frame, cv2.add(image, noise, dtype=cv2.CV_8U), rows


def _write_gt(file: Path, rows: np.ndarray) -> None:
    order = np.lexsort((rows[:, 0], rows[:, 1]))
    lines = [f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},{int(r[6])},{int(r[7])},{r[8]:.4f}"
             for r in rows[order]]
    file.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def generate_track_sequence(root: Path, spec: SequenceSpec = SequenceSpec()) -> Path:
    """Write the sequence into ``root`` atomically (temporary sibling folder + rename); return ``root``.

    The sequence is named after the folder (``seqinfo.ini`` ``name``, the video ``<name>.mp4``).
    """
    name = Path(root).name

    def write(temp: Path) -> None:
        (temp / "img1").mkdir()
        (temp / "gt").mkdir()
        video = cv2.VideoWriter(str(temp / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), spec.frame_rate,
                                (spec.width, spec.height))
        all_rows = []
        for frame, image, rows in render_sequence(spec):
            cv2.imwrite(str(temp / "img1" / f"{frame:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            video.write(image)
            all_rows.append(rows)
        video.release()
        _write_gt(temp / "gt" / "gt.txt", np.concatenate(all_rows, 0))
        (temp / "seqinfo.ini").write_text(seqinfo_text(name, spec.frames, spec.width, spec.height, spec.frame_rate),
                                          encoding="utf-8")

    return build_atomically(Path(root), _marker(spec), write)


def _marker(spec: SequenceSpec) -> dict:
    return {"dataset": SEQUENCE_NAME, "version": GENERATOR_VERSION, "spec": repr(spec)}


def _is_current(root: Path, spec: SequenceSpec) -> bool:
    return read_marker(root) == _marker(spec)


def ensure_track_sequence(root: Path, spec: SequenceSpec = SequenceSpec()) -> Path:
    """Return ``root`` holding the current built-in tracking sequence, generating it when absent or outdated.

    Raises:
        FileExistsError: ``root`` exists, is not empty and was not made by this generator (it is never touched).
    """
    return ensure_generated(root, _is_current(Path(root), spec), lambda: generate_track_sequence(root, spec),
                            f"tracking sequence '{SEQUENCE_NAME}' ({spec.frames} frames)", what="tracking sequence")
