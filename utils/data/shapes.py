"""Drawing primitives for the built-in ``shapes`` dataset: shape outlines, shaded fills, backgrounds, clutter.

All geometry is float pixel coordinates; polygons are drawn with 4 bits of sub-pixel precision and anti-aliasing
so the labelled boxes (min/max of the polygon points) match the pixels. Every random choice comes from the
``numpy.random.Generator`` passed in, so a sample is a pure function of its seed.
"""

from __future__ import annotations

import cv2
import numpy as np

SHAPE_NAMES = ("circle", "rectangle", "triangle", "star", "ring", "cross", "ellipse", "hexagon")
SUBPIXEL_BITS = 4


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    return points @ np.array([[cos_a, sin_a], [-sin_a, cos_a]])


def _regular(count: int, radius: float, angle: float, jitter: float = 0.0,
             rng: np.random.Generator | None = None) -> np.ndarray:
    angles = angle + np.arange(count) * 2 * np.pi / count
    if jitter and rng is not None:
        angles = angles + rng.uniform(-jitter, jitter, count)
    return radius * np.stack((np.cos(angles), np.sin(angles)), 1)


def _star(radius: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    outer = _regular(5, radius, angle)
    inner = _regular(5, radius * rng.uniform(0.38, 0.5), angle + np.pi / 5)
    return np.stack((outer, inner), 1).reshape(10, 2)


def _cross(radius: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    half_thick = radius * rng.uniform(0.22, 0.35)
    arm = np.sqrt(radius**2 - half_thick**2)
    t, a = half_thick, arm
    outline = np.array([[t, a], [-t, a], [-t, t], [-a, t], [-a, -t], [-t, -t], [-t, -a], [t, -a], [t, -t], [a, -t],
                        [a, t], [t, t]])
    return _rotate(outline, angle)


def _rectangle(radius: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    diagonal = rng.uniform(np.radians(15), np.radians(75))
    half_w, half_h = radius * np.cos(diagonal), radius * np.sin(diagonal)
    return _rotate(np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]]), angle)


def _ellipse(radius: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    points = _regular(64, 1.0, 0.0)
    points = points * np.array([radius, radius / rng.uniform(1.7, 2.8)])
    return _rotate(points, angle)


def shape_polygons(name: str, centre: np.ndarray, radius: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Return the polygons (k, 2) of one shape whose points lie within ``radius`` of ``centre``.

    The first polygon is the outline; a ring also returns its hole as a second polygon.
    """
    angle = rng.uniform(0, 2 * np.pi)
    if name == "circle":
        polygons = [_regular(64, radius, 0.0)]
    elif name == "ring":
        polygons = [_regular(64, radius, 0.0), _regular(64, radius * rng.uniform(0.45, 0.7), 0.0)]
    elif name == "triangle":
        polygons = [_regular(3, radius, angle, jitter=np.radians(18), rng=rng)]
    elif name == "hexagon":
        polygons = [_regular(6, radius, angle)]
    else:
        builders = {"star": _star, "cross": _cross, "rectangle": _rectangle, "ellipse": _ellipse}
        polygons = [builders[name](radius, angle, rng)]
    return [polygon + centre for polygon in polygons]


def random_colours(rng: np.random.Generator, count: int, saturation: tuple[float, float] = (0.35, 1.0),
                   value: tuple[float, float] = (0.25, 1.0)) -> np.ndarray:
    """Return ``count`` BGR colours (count, 3) float in 0-255 drawn uniformly in HSV space."""
    low = np.array([0, saturation[0] * 255, value[0] * 255])
    high = np.array([180, saturation[1] * 255, value[1] * 255])
    hsv = rng.uniform(low, high, (count, 3)).astype(np.uint8)[None]
    if not count:
        return np.zeros((0, 3))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0].astype(np.float64)


def random_colour(rng: np.random.Generator, saturation: tuple[float, float] = (0.35, 1.0),
                  value: tuple[float, float] = (0.25, 1.0)) -> np.ndarray:
    """Return one BGR colour (3,) float in 0-255 drawn uniformly in HSV space."""
    return random_colours(rng, 1, saturation, value)[0]


def _fixed(polygons: list[np.ndarray], offset: np.ndarray) -> list[np.ndarray]:
    return [np.round((polygon - offset) * (1 << SUBPIXEL_BITS)).astype(np.int32) for polygon in polygons]


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    for _ in range(8):
        colour = random_colour(rng)
        if np.abs(colour - background).sum() > 120:
            return colour
    return 255.0 - background


def draw_shape(rng: np.random.Generator, image: np.ndarray, name: str, polygons: list[np.ndarray],
               colour: np.ndarray | None = None) -> None:
    """Composite one shaded, anti-aliased shape onto ``image`` (BGR uint8) in place; a ring's hole stays clear.

    ``colour`` (BGR, 0-255) fixes the fill colour (the tracking sequence keeps each object's colour across frames);
    by default a colour contrasting with the covered background is drawn from ``rng``.
    """
    points = np.concatenate(polygons, 0)
    x1, y1 = np.maximum(np.floor(points.min(0)).astype(int) - 2, 0)
    x2, y2 = np.minimum(np.ceil(points.max(0)).astype(int) + 3, image.shape[1::-1])
    roi = image[y1:y2, x1:x2]
    mask = np.zeros(roi.shape[:2], dtype=np.uint8)
    fixed = _fixed(polygons, np.array([x1, y1]))
    cv2.fillPoly(mask, fixed[:1], 255, cv2.LINE_AA, SUBPIXEL_BITS)
    if len(fixed) > 1:
        cv2.fillPoly(mask, fixed[1:], 0, cv2.LINE_AA, SUBPIXEL_BITS)
    alpha = mask.astype(np.float32) / 255.0
    if colour is None:
        colour = _contrasting_colour(rng, roi[mask > 127].mean(0) if (mask > 127).any() else roi.mean((0, 1)))
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    xs = np.arange(roi.shape[1], dtype=np.float32)[None, :]
    ys = np.arange(roi.shape[0], dtype=np.float32)[:, None]
    ramp = (xs * np.float32(direction[0]) + ys * np.float32(direction[1])) / max(roi.shape[:2])
    shade = 1.0 + np.float32(rng.uniform(-0.35, 0.35)) * (ramp - ramp.mean())
    fill = np.clip(colour.astype(np.float32)[None, None, :] * shade[..., None], 0, 255).astype(np.uint8)
    roi[:] = cv2.blendLinear(fill, roi, alpha, 1.0 - alpha)
    if rng.random() < 0.25:
        edge = tuple(float(c) for c in colour * rng.uniform(0.3, 0.7))
        cv2.polylines(roi, fixed, True, edge, int(rng.integers(1, 3)), cv2.LINE_AA, SUBPIXEL_BITS)


def draw_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Return a cluttered BGR background (h, w, 3) uint8: a linear or radial gradient, blotches and noise.

    The smooth parts are computed on a grid 8x coarser and upsampled; only the noise is per pixel.
    """
    low, high = random_colour(rng, (0.0, 0.6), (0.15, 0.95)), random_colour(rng, (0.0, 0.6), (0.15, 0.95))
    coarse_w, coarse_h = width // 8 + 1, height // 8 + 1
    xs = np.arange(coarse_w, dtype=np.float32)[None, :]
    ys = np.arange(coarse_h, dtype=np.float32)[:, None]
    if rng.random() < 0.5:
        direction = rng.normal(size=2).astype(np.float32)
        ramp = xs * direction[0] + ys * direction[1]
    else:
        centre = (rng.uniform([0, 0], [width, height]) / 8).astype(np.float32)
        ramp = np.sqrt((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    coarse = low.astype(np.float32) + (high - low).astype(np.float32) * ramp[..., None]
    cells = rng.normal(0, rng.uniform(4, 30), (max(2, height // 32), max(2, width // 32), 3)).astype(np.float32)
    coarse += cv2.resize(cells, (coarse_w, coarse_h), interpolation=cv2.INTER_CUBIC)
    image = cv2.resize(np.clip(coarse, 0, 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR)
    noise = np.frombuffer(rng.bytes(image.size), dtype=np.uint8).reshape(image.shape)
    gain = rng.uniform(2, 9) / 73.6  # uniform noise with a standard deviation of 2-9 grey levels
    return cv2.addWeighted(image, 1.0, noise, gain, -127.5 * gain)


def _blob(rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    count = int(rng.integers(9, 15))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    radii = radius * rng.uniform(0.35, 1.0, count)
    return centre + np.stack((radii * np.cos(angles), radii * np.sin(angles)), 1)


def draw_distractors(rng: np.random.Generator, image: np.ndarray, behind: bool) -> None:
    """Draw unlabelled clutter in place: lines, scribbles, irregular blobs and speckles (``behind``), or a few
    thin lines crossing the objects (not ``behind``)."""
    height, width = image.shape[:2]
    size = np.array([width, height])

    def colour() -> tuple[float, ...]:
        return tuple(float(c) for c in random_colour(rng, (0.0, 1.0), (0.1, 1.0)))

    if not behind:
        for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.35 else 0):
            start, end = rng.uniform(0, 1, (2, 2)) * size
            cv2.line(image, tuple(start.astype(int)), tuple(end.astype(int)), colour(), 1, cv2.LINE_AA)
        return
    for _ in range(int(rng.integers(2, 11))):
        start, end = rng.uniform(0, 1, (2, 2)) * size
        cv2.line(image, tuple(start.astype(int)), tuple(end.astype(int)), colour(), int(rng.integers(1, 4)),
                 cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 4))):
        points = (rng.uniform(0, 1, (int(rng.integers(4, 9)), 2)) * size).astype(np.int32)
        cv2.polylines(image, [points], False, colour(), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 5))):
        blob = _blob(rng, rng.uniform(0, 1, 2) * size, rng.uniform(8, 0.15 * min(width, height)))
        cv2.fillPoly(image, [np.round(blob).astype(np.int32)], colour(), cv2.LINE_AA)
    count = int(rng.integers(0, 60))
    centres = (rng.uniform(0, 1, (count, 2)) * size).astype(int).tolist()
    radii = rng.integers(1, 4, count).tolist()
    specks = random_colours(rng, count, (0.0, 1.0), (0.1, 1.0)).tolist()
    for centre, radius, speck in zip(centres, radii, specks, strict=True):
        cv2.circle(image, centre, radius, speck, -1, cv2.LINE_AA)
