"""Drawing the synthetic butterflies: seed -> image, with the colour, pattern and caption drawn.

`make_butterfly(seed, size)` draws one bilaterally symmetric butterfly on a light, museum-like
background, in vectorised numpy (thousands of 32 px images per second on one CPU core; see
benchmarks/butterflies_speed.py). Each image has named attributes, a class label and a caption:

    image, attrs = make_butterfly(7, size=32)
    attrs["caption"]   # "a blue butterfly with orange spots"  (or "a plain red butterfly")
    attrs["label"]     # COLOURS.index(colour) * len(PATTERNS) + PATTERNS.index(pattern): 0..44

How it is drawn. A butterfly lives in its own "body frame" (u to the right, v down, wingspan ~2);
a random pose (scale, small rotation, shift) maps image pixels into that frame. Mirror symmetry is
free: every wing, spot and stripe is a function of |u|. Each wing is a (super)ellipse; its
approximate signed distance d (in body units, > 0 inside) gives an anti-aliased coverage
clip(0.5 + d * pixels_per_unit, 0, 1), so no supersampling is needed at any size.

The datasets built from these images are in `ddlearn/data/butterflies/datasets.py`; the one
butterfly they never show, chapter 06's concept, in `concept.py`.

References: huggan/smithsonian_butterflies_subset on the Hugging Face Hub (the real photos these
stand in for); signed distance functions and their anti-aliased coverage, as in Inigo Quilez's
"2D distance functions" (iquilezles.org/articles/distfunctions2d).
"""

import random
from functools import lru_cache
from math import cos, pi, radians, sin, sqrt

import numpy as np

# name -> RGB in [0, 1]; hues of red..purple are well apart so a text-to-image model can learn them
COLOURS = {"red": (0.82, 0.10, 0.10), "orange": (0.97, 0.50, 0.05), "yellow": (0.98, 0.86, 0.12),
           "green": (0.13, 0.60, 0.20), "blue": (0.12, 0.33, 0.86), "purple": (0.52, 0.16, 0.70),
           "black": (0.09, 0.08, 0.09), "white": (0.98, 0.98, 0.96), "brown": (0.45, 0.26, 0.11)}
PATTERNS = ("plain", "spots", "stripes", "eyespots", "edges")
# wing = (u0, v0, a, b, tilt in degrees from +u towards +v, superellipse exponent n)
SHAPES = {
    "round": dict(fore=(0.44, -0.28, 0.50, 0.36, -32, 2), hind=(0.32, 0.26, 0.38, 0.32, 42, 2)),
    "pointed": dict(fore=(0.46, -0.32, 0.56, 0.27, -38, 1.7), hind=(0.30, 0.24, 0.34, 0.26, 48, 2)),
    "broad": dict(fore=(0.45, -0.25, 0.48, 0.38, -24, 2.8), hind=(0.36, 0.28, 0.36, 0.33, 30, 2.6)),
    "swallowtail": dict(fore=(0.45, -0.30, 0.54, 0.31, -34, 1.8),
                        hind=(0.30, 0.24, 0.34, 0.28, 52, 2), tail=(0.34, 0.6, 0.22, 0.065, 76, 2)),
}
COLOUR_NAMES, SHAPE_NAMES = tuple(COLOURS), tuple(SHAPES)
NUM_CLASSES = len(COLOURS) * len(PATTERNS)
BODY_RGB, BACKGROUND_RGB = (0.10, 0.08, 0.07), (0.93, 0.90, 0.83)


def caption_for(colour: str, pattern: str, pattern_colour: str) -> str:
    if pattern == "plain":
        return f"a plain {colour} butterfly"
    return f"a {colour} butterfly with {pattern_colour} {pattern}"


def caption_vocabulary() -> list:
    """Every word a caption can use (to build a tiny tokenizer), sorted."""
    return sorted({"a", "butterfly", "with", *COLOURS, *PATTERNS})


def class_names() -> list:
    """Name of each label: 'red plain', 'red spots', ..., 'brown edges'."""
    return [f"{c} {p}" for c in COLOURS for p in PATTERNS]


# --------------------------------------------------------------------------------------------------
# Drawing (channel-first float32 arrays: numpy broadcasts (3, 1, 1) colours over (H, W) fast)
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _grid(size: int):
    """Pixel centres in [-1, 1], exactly mirror-symmetric: x[W-1-i] == -x[i]."""
    x = ((2 * np.arange(size) - (size - 1)) / size).astype(np.float32)
    return x[None, :], x[:, None]  # (1, W), (H, 1): broadcast to (H, W)


def _rgb(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)  # (3,) -> (3, 1, 1)


_RGB = {name: _rgb(value) for name, value in [*COLOURS.items(), ("body", BODY_RGB)]}


def _paint(colour) -> np.ndarray:
    """A name in COLOURS, or an (r, g, b) triple in [0, 1] for a colour outside them."""
    return _RGB[colour] if isinstance(colour, str) else _rgb(colour)


@lru_cache(maxsize=64)
def _axes(wing):
    """A wing's long axis direction (cos, sin) and the scale of its distance field."""
    u0, v0, a, b, tilt, n = wing
    return cos(radians(tilt)), sin(radians(tilt)), sqrt(a * b)


def _ellipse_distance(u, v, wing):
    """Approximate signed distance to a superellipse's edge, > 0 inside (body units)."""
    u0, v0, a, b, tilt, n = wing
    c, s, k = _axes(wing)
    du, dv = u - u0, v - v0
    p, q = du * (c / a) + dv * (s / a), dv * (c / b) - du * (s / b)  # in units of the semi-axes
    rho = np.sqrt(p * p + q * q) if n == 2 else (np.abs(p) ** n + np.abs(q) ** n) ** (1 / n)
    return k - rho * k


def _circle_distance(u, v, centre, radius):
    return radius - np.sqrt((u - centre[0]) ** 2 + (v - centre[1]) ** 2)


def _segment_distance(u, v, start, end, half_width):
    du, dv = end[0] - start[0], end[1] - start[1]
    t = ((u - start[0]) * du + (v - start[1]) * dv) * (1 / (du * du + dv * dv))
    t = np.minimum(np.maximum(t, 0, out=t), 1, out=t)  # nearest point's fraction along
    return half_width - np.sqrt((u - start[0] - t * du) ** 2 + (v - start[1] - t * dv) ** 2)


def _along(wing, t, side=0.0):
    """The point t semi-axes along a wing's long axis (and `side` across it), in body units."""
    u0, v0, a, b, _, _ = wing
    c, s, _ = _axes(wing)
    return u0 + t * a * c - side * b * s, v0 + t * a * s + side * b * c


def _pattern_layers(pattern, u, v, d_wing, shape, r):
    """(distance field, colour key) pairs drawn over the wing colour; key 'p' = pattern colour."""
    fore, hind = shape["fore"], shape["hind"]
    if pattern == "spots":
        k = 0.22 + 0.08 * r
        return [(np.maximum.reduce([
            _circle_distance(u, v, _along(fore, 0.5, -0.1), k * fore[3]),
            _circle_distance(u, v, _along(fore, 0.0, 0.35), 0.8 * k * fore[3]),
            _circle_distance(u, v, _along(hind, 0.25), k * hind[3])]), "p")]
    if pattern == "stripes":
        phi, f = radians(-25 + 50 * r), 2 * pi * 2.6  # direction (mirrored into chevrons), freq.
        return [(np.sin(u * (f * cos(phi)) + v * (f * sin(phi))) * (1 / f) - 0.4 / f, "p")]
    if pattern == "eyespots":  # rings: pattern colour, a dark pupil, a white highlight
        (c1, c2), radii = (_along(hind, 0.2), _along(fore, 0.55)), (0.55 * hind[3], 0.35 * fore[3])
        d1, d2 = _circle_distance(u, v, c1, 0), _circle_distance(u, v, c2, 0)
        return [(np.maximum(d1 + f * radii[0], d2 + f * radii[1]), key)
                for f, key in ((1.0, "p"), (0.5, "black"), (0.18, "white"))]
    if pattern == "edges":
        return [((0.08 + 0.03 * r) - d_wing, "p")]  # a band inside the outline
    return []


def render(colour, pattern, pattern_colour, shape, size=32, scale=0.9, angle=0.0,
           offset=(0.0, 0.0), r=(0.5,) * 8) -> np.ndarray:
    """Draw one butterfly with the given attributes, pose and 8 numbers r in [0, 1) for colour
    variation; returns a uint8 image (size, size, 3). `colour` and `pattern_colour` are names in
    COLOURS, or (r, g, b) triples in [0, 1] (ddlearn/data/butterflies/concept.py draws one)."""
    x, y = _grid(size)
    ppu = size / 2 * scale  # pixels per body unit

    def coverage(d):  # anti-aliased coverage of the region d > 0: clip(0.5 + d * ppu, 0, 1)
        t = d * ppu + 0.5
        return np.minimum(np.maximum(t, 0, out=t), 1, out=t)

    # 1. pose: image coordinates -> body frame (u mirrored to |u|, v down, centred on the body)
    c, s = cos(radians(angle)) / scale, sin(radians(angle)) / scale
    xs, ys = x - offset[0], y - offset[1]
    u = np.abs(xs * c + ys * s)  # (H, W)
    v = ys * c - xs * s - 0.12
    # 2. wings: signed distances of forewing, hindwing (+ tail) and their union
    wings = SHAPES[shape]
    d_fore, d_hind = _ellipse_distance(u, v, wings["fore"]), _ellipse_distance(u, v, wings["hind"])
    if "tail" in wings:
        d_hind = np.maximum(d_hind, _ellipse_distance(u, v, wings["tail"]))
    d_wing = np.maximum(d_fore, d_hind)
    # 3. wing colour (slightly darker near the body), then pattern layers over it
    base = _paint(colour) * (0.9 + 0.2 * r[0]) + 0.06 * (r[1] - 0.5)  # brightness, not hue
    rgb = base * np.minimum(u * 0.55 + 0.78, 1.0)  # (3, H, W)
    keys = {"p": _paint(pattern_colour) * (0.9 + 0.15 * r[2]), "black": _RGB["body"],
            "white": _RGB["white"]}
    for d, key in _pattern_layers(pattern, u, v, d_wing, wings, r[3]):
        rgb += coverage(d) * (keys[key] - rgb)
    # 4. darker rims: along the wing's outline, and on both sides of the forewing's edge
    rgb *= 1 - 0.5 * coverage(np.maximum(0.05 - d_wing, 0.03 - np.abs(d_fore)))
    # 5. background: beige card lit from above (tint r[4:7]), soft shadow below the butterfly
    tint = [0.97 + 0.03 * r[4 + i] + 0.04 * r[7] for i in range(3)]
    paper = _rgb([channel * t for channel, t in zip(BACKGROUND_RGB, tint, strict=True)])
    shade = np.exp((xs * xs + (ys - 0.08) ** 2) * (-2 / scale)) * -0.10 + 1 - 0.04 * y
    image = paper * shade
    image += coverage(d_wing) * (rgb - image)
    # 6. body, head and antennae (with clubbed tips) on top
    d_body = np.maximum.reduce([
        _ellipse_distance(u, v, (0.0, 0.02, 0.45, 0.055, 90, 2)),
        _circle_distance(u, v, (0.0, -0.46), 0.075),
        _segment_distance(u, v, (0.02, -0.5), (0.2, -0.86), 0.022),
        _circle_distance(u, v, (0.2, -0.86), 0.045)])
    image += coverage(d_body) * (_RGB["body"] - image)
    image = np.clip(image * 255 + 0.5, 0.0, 255.0, out=image)  # the brightness jitter can dip
    return np.ascontiguousarray(image.astype(np.uint8).transpose(1, 2, 0))  # (3,H,W) -> (H,W,3)


def _random_numbers(seed: int) -> list:
    """16 numbers in [0, 1) for one seed: Python's Mersenne Twister, the same on every platform."""
    rng = random.Random(seed)
    return [rng.random() for _ in range(16)]


def _pose(r, jitter: bool = True) -> tuple:
    """(scale, angle in degrees, offset) from r[4:8]; centred and unrotated without jitter."""
    if not jitter:
        return 0.9, 0.0, (0.0, 0.0)
    return 0.8 + 0.14 * r[4], 16 * (r[5] - 0.5), (0.12 * (r[6] - 0.5), 0.12 * (r[7] - 0.5))


def make_butterfly(seed: int, size: int = 32, jitter: bool = True):
    """Seed -> (uint8 image (size, size, 3), attributes dict with 'label' and 'caption').

    jitter=False draws the same butterfly centred, unrotated and exactly mirror-symmetric."""
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 pixels, got {size!r}")
    r = _random_numbers(seed)
    colour = COLOUR_NAMES[int(r[0] * len(COLOURS))]
    pattern = PATTERNS[int(r[1] * len(PATTERNS))]
    others = [c for c in COLOUR_NAMES if c != colour]
    pattern_colour = others[int(r[2] * len(others))] if pattern != "plain" else None
    shape = SHAPE_NAMES[int(r[3] * len(SHAPES))]
    scale, angle, offset = _pose(r, jitter)
    image = render(colour, pattern, pattern_colour or "black", shape, size, scale, angle, offset,
                   r[8:])
    label = COLOUR_NAMES.index(colour) * len(PATTERNS) + PATTERNS.index(pattern)
    return image, dict(seed=seed, label=label, caption=caption_for(colour, pattern, pattern_colour),
                       colour=colour, pattern=pattern, pattern_colour=pattern_colour, shape=shape,
                       scale=scale, angle=angle, offset=offset)
