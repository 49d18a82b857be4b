"""Procedural captioned landscapes: images and short videos for training small generators on a CPU.

A scene is a sky (day, sunset, night) over a terrain (grassy hills, snowy mountains, desert dunes),
optionally with a lake, seen by a camera that pans left, pans right or stays still. Everything is
pure, vectorised numpy and a function of a *world* x coordinate, so a scene can be rendered at any
width and from any offset and the pixels agree::

    render(s, H, W2)[..., :W1, :] == render(s, H, W1)           # W2 > W1
    render(s, H, W, x0=k)[0] == render(s, H, W + k)[0][:, k:]    # integer k

Geometry is expressed in units of the frame height, so the same scene at 64 and 128 px high looks
the same, only sharper. Layers, far to near: sky gradient, stars / moon / sun (at infinity, they do
not move when the camera pans), clouds (a little parallax and a slow drift of their own, also when
the camera is still), two far ridges (parallax 0.3 and 0.55, hazier), the lake, and the near ridge
(parallax 1). The lake and the near ridge move by exactly ``speed`` px per frame, so frame t + 1
equals frame t shifted, in those rows.

Camera: "pan left" moves the view towards smaller world x (the scene slides to the right in the
frame), "pan right" the opposite.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from streamgen.errors import bad

__all__ = [
    "ATTRIBUTES",
    "HELD_OUT",
    "Scene",
    "caption",
    "paraphrase_count",
    "partial_caption",
    "render",
    "sample_scene",
]

ATTRIBUTES: dict[str, tuple] = {
    "sky": ("day", "sunset", "night"),
    "terrain": ("grassy hills", "snowy mountains", "desert dunes"),
    "lake": (False, True),
    "motion": ("pan left", "pan right", "still"),
}

# sky + terrain combinations never produced by the "train" split (compositional generalisation)
HELD_OUT: tuple[dict, ...] = (
    {"sky": "night", "terrain": "desert dunes"},
    {"sky": "sunset", "terrain": "snowy mountains"},
)

_MASK64 = (1 << 64) - 1
_SPLITS = ("train", "heldout", "all")


def _matches(values: dict, combo: dict) -> bool:
    return all(values.get(k) == v for k, v in combo.items())


@dataclass(frozen=True)
class Scene:
    """One landscape: its attributes and the seed of its geometry (ridges, horizon, clouds, stars)."""

    sky: str
    terrain: str
    lake: bool
    motion: str
    seed: int

    def __post_init__(self) -> None:
        for name in ("sky", "terrain", "motion"):
            value = getattr(self, name)
            if value not in ATTRIBUTES[name]:
                raise bad(f"Scene.{name}", f"must be one of {ATTRIBUTES[name]}", value)
        if not isinstance(self.lake, (bool, np.bool_)):
            raise bad("Scene.lake", "must be a bool", self.lake)
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise bad("Scene.seed", "must be an int", self.seed)

    def is_held_out(self) -> bool:
        """Whether the sky + terrain combination is one of `HELD_OUT`."""
        values = {"sky": self.sky, "terrain": self.terrain, "lake": self.lake, "motion": self.motion}
        return any(_matches(values, combo) for combo in HELD_OUT)


def sample_scene(seed: int, split: str = "train") -> Scene:
    """A random scene, deterministic in ``seed``.

    ``split``: "train" never gives a `HELD_OUT` sky + terrain combination, "heldout" gives only
    those, "all" gives any. Sky + terrain is uniform over the allowed combinations; the lake and
    the motion are uniform and independent.
    """
    if split not in _SPLITS:
        raise bad("split", f"must be one of {_SPLITS}", split)
    rng = np.random.default_rng([int(seed) & _MASK64, 0x5CE7E])
    combos = []
    for sky in ATTRIBUTES["sky"]:
        for terrain in ATTRIBUTES["terrain"]:
            held = any(_matches({"sky": sky, "terrain": terrain}, c) for c in HELD_OUT)
            if split == "all" or (split == "heldout") == held:
                combos.append((sky, terrain))
    sky, terrain = combos[int(rng.integers(len(combos)))]
    lake = bool(rng.integers(2))
    motion = ATTRIBUTES["motion"][int(rng.integers(len(ATTRIBUTES["motion"])))]
    return Scene(sky=sky, terrain=terrain, lake=lake, motion=motion, seed=int(seed))


# --------------------------------------------------------------------------------------------------
# captions

_SKY_A = {"day": "a clear blue day sky", "sunset": "a sunset sky", "night": "a starry night sky"}
_SKY_B = {"day": "a bright daytime sky", "sunset": "a glowing orange sunset",
          "night": "a dark night sky with a moon"}
_SKY_AT = {"day": "during the day", "sunset": "at sunset", "night": "at night"}
_SKY_ON = {"day": "on a sunny day", "sunset": "at sunset", "night": "on a moonlit night"}
_TERRAIN_ADJ = {"grassy hills": "rolling grassy hills", "snowy mountains": "jagged snowy mountains",
                "desert dunes": "sandy desert dunes"}
_M_CAMERA = {"pan left": "the camera pans left", "pan right": "the camera pans right",
             "still": "the camera is still"}
_M_ING = {"pan left": "panning left", "pan right": "panning right", "still": "still camera"}
_M_AS = {"pan left": "as the camera pans left", "pan right": "as the camera pans right",
         "still": "seen from a still camera"}
_M_SHOT = {"pan left": "a slow pan to the left across", "pan right": "a slow pan to the right across",
           "still": "a still shot of"}

# (video template, still-image template); the lake phrase is "" when there is no lake
_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("{sky_a} over {terrain}{lake_with}, {m_camera}", "{sky_a} over {terrain}{lake_with}"),
    ("{terrain}{lake_and} under {sky_a}, {m_ing}", "{terrain}{lake_and} under {sky_a}"),
    ("a video of {terrain}{lake_by} {sky_at}, {m_as}", "a photo of {terrain}{lake_by} {sky_at}"),
    ("{m_shot} {terrain_adj}{lake_beside} {sky_on}", "{terrain_adj}{lake_beside} {sky_on}"),
    ("landscape {sky_at}: {terrain}{lake_and}, {m_ing}", "landscape {sky_at}: {terrain}{lake_and}"),
    ("{terrain}{lake_with} beneath {sky_b} {m_as}", "{terrain}{lake_with} beneath {sky_b}"),
    ("a wide view of {terrain_adj}{lake_and} {sky_on}, {m_camera}",
     "a wide view of {terrain_adj}{lake_and} {sky_on}"),
    ("{sky_b} above {terrain}{lake_beside}, {m_ing}", "{sky_b} above {terrain}{lake_beside}"),
)


def paraphrase_count() -> int:
    """Number of caption templates (`caption` variants)."""
    return len(_TEMPLATES)


def caption(scene: Scene, variant: int | None = None, video: bool = True) -> str:
    """An English caption naming the sky, the terrain, the lake (if any) and, for videos, the motion.

    ``variant`` picks the template (taken modulo `paraphrase_count()`); None picks it from the
    scene's seed. ``video=False`` gives a caption for a still image, without motion words.
    """
    if variant is None:
        variant = _hash_int(scene.seed, 0xCA9) % len(_TEMPLATES)
    template = _TEMPLATES[int(variant) % len(_TEMPLATES)][0 if video else 1]
    return template.format(**_phrases(scene))


def _phrases(scene: Scene) -> dict[str, str]:
    """Every phrase a caption template may name, for ``scene``."""
    lake = scene.lake
    return dict(
        sky_a=_SKY_A[scene.sky], sky_b=_SKY_B[scene.sky], sky_at=_SKY_AT[scene.sky],
        sky_on=_SKY_ON[scene.sky],
        terrain=scene.terrain, terrain_adj=_TERRAIN_ADJ[scene.terrain],
        lake_with=" with a lake" if lake else "", lake_and=" and a lake" if lake else "",
        lake_by=" by a lake" if lake else "", lake_beside=" beside a calm lake" if lake else "",
        m_camera=_M_CAMERA[scene.motion], m_ing=_M_ING[scene.motion], m_as=_M_AS[scene.motion],
        m_shot=_M_SHOT[scene.motion],
    )


# captions naming one of sky and terrain: (video template, still-image template)
_PARTIAL: dict[str, tuple[tuple[str, str], ...]] = {
    "sky": (("{sky_a}, {m_camera}", "{sky_a}"), ("a landscape {sky_at}, {m_ing}", "a landscape {sky_at}"),
            ("{sky_b}, {m_ing}", "{sky_b}")),
    "terrain": (("{terrain}{lake_with}, {m_camera}", "{terrain}{lake_with}"),
                ("a video of {terrain_adj}{lake_beside}, {m_as}", "a photo of {terrain_adj}{lake_beside}"),
                ("{m_shot} {terrain}{lake_and}", "{terrain}{lake_and}")),
}


def partial_caption(scene: Scene, part: str, variant: int = 0, video: bool = True) -> str:
    """A caption naming only the sky (``part="sky"``) or only the terrain and lake (``"terrain"``), and
    for videos the motion: trained on now and then, they teach that each phrase sets its own attribute
    whatever the other is (composition), where full captions also teach which attributes go together."""
    if part not in _PARTIAL:
        raise bad("part", f"must be one of {tuple(_PARTIAL)}", part)
    templates = _PARTIAL[part]
    template = templates[int(variant) % len(templates)][0 if video else 1]
    return template.format(**_phrases(scene))


def render_switch(first: Scene, then: Scene, height: int, width: int, frames: int, at: int,
                  blend: int = 2, speed: float | None = None) -> np.ndarray:
    """A clip whose sky and terrain change part-way: ``first`` up to frame ``at``, ``then`` from frame
    ``at + blend`` on, and over the ``blend`` frames between a cross-fade of the two, both seen by the
    same camera (``first``'s motion) over the same geometry, so the scene goes on while it changes:
    a sunset falling into night, hills giving way to dunes. uint8 (frames, height, width, 3)."""
    if not 0 < at < frames:
        raise bad("at", f"must be a frame inside the clip, between 1 and {frames - 1}", at)
    if blend < 0:
        raise bad("blend", "must be 0 or more frames", blend)
    a = render(first, height, width, frames=frames, speed=speed).astype(np.float32)
    b = render(Scene(then.sky, then.terrain, then.lake, first.motion, first.seed), height, width,
               frames=frames, speed=speed).astype(np.float32)
    w = np.clip((np.arange(frames, dtype=np.float32) - at + 1) / (blend + 1), 0, 1)[:, None, None, None]
    return np.round(a + w * (b - a)).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# hashing (value noise on integer lattices, vectorised)

def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_int(*keys: int) -> int:
    h = np.zeros(1, np.uint64)
    for k in keys:
        h = _mix64(h ^ np.array([int(k) & _MASK64], np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    return int(h[0] >> np.uint64(1))


def _hash_u01(key: int, *cells: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) per integer lattice cell, deterministic in ``key``."""
    h = np.full(np.broadcast_shapes(*(c.shape for c in cells)), int(key) & _MASK64, np.uint64)
    for c in cells:
        h = _mix64(h ^ (c.astype(np.int64).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --------------------------------------------------------------------------------------------------
# palettes (RGB in 0..255)

def _c(*rgb: float) -> np.ndarray:
    return np.array(rgb, np.float32)


# sky gradient stops: (position from the top (0) to the horizon (1), colour)
_SKY_STOPS = {
    "day": ((0.0, _c(38, 96, 196)), (0.55, _c(92, 152, 222)), (1.0, _c(182, 214, 238))),
    "sunset": ((0.0, _c(52, 34, 100)), (0.45, _c(150, 70, 128)), (0.75, _c(232, 112, 104)),
               (1.0, _c(252, 176, 84))),
    "night": ((0.0, _c(3, 5, 18)), (0.6, _c(10, 16, 42)), (1.0, _c(26, 36, 72))),
}
_CLOUD = {  # (lit top, shaded underside)
    "day": (_c(250, 250, 252), _c(196, 204, 218)),
    "sunset": (_c(255, 196, 190), _c(170, 96, 128)),
    "night": (_c(78, 84, 102), _c(44, 48, 66)),
}
_GLINT = {"day": _c(225, 240, 250), "sunset": _c(255, 196, 140), "night": _c(120, 140, 190)}
_WATER_TINT = {"day": _c(30, 84, 140), "sunset": _c(96, 46, 86), "night": _c(12, 26, 60)}
_HAZE = {"day": (0.62, 0.34, 0.0), "sunset": (0.55, 0.3, 0.0), "night": (0.45, 0.22, 0.0)}

# terrain colours per sky: lit face, shaded face, (second material lit, shaded) for snow
_TERRAIN_COLOURS = {
    ("grassy hills", "day"): (_c(104, 172, 72), _c(52, 118, 50)),
    ("grassy hills", "sunset"): (_c(128, 138, 52), _c(66, 82, 44)),
    ("grassy hills", "night"): (_c(34, 96, 80), _c(16, 58, 54)),
    ("snowy mountains", "day"): (_c(126, 130, 146), _c(72, 80, 104), _c(252, 252, 255), _c(196, 212, 236)),
    ("snowy mountains", "sunset"): (_c(128, 100, 112), _c(70, 56, 84), _c(255, 206, 196), _c(190, 140, 170)),
    ("snowy mountains", "night"): (_c(52, 58, 86), _c(32, 36, 60), _c(182, 198, 238), _c(122, 138, 190)),
    ("desert dunes", "day"): (_c(236, 190, 112), _c(176, 118, 60)),
    ("desert dunes", "sunset"): (_c(246, 150, 76), _c(150, 72, 50)),
    ("desert dunes", "night"): (_c(128, 90, 54), _c(76, 50, 34)),
}


def _sky_gradient(sky: str, v: np.ndarray, horizon: float) -> np.ndarray:
    """Sky colour (..., 3) float32 at rows ``v`` (in frame heights from the top)."""
    t = np.clip(np.asarray(v, np.float64) / horizon, 0.0, 1.0)
    stops = _SKY_STOPS[sky]
    pos = np.array([p for p, _ in stops])
    cols = np.stack([c for _, c in stops])
    return np.stack([np.interp(t, pos, cols[:, k]) for k in range(3)], -1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# scene geometry

@dataclass(frozen=True)
class _Ridge:
    parallax: float
    base: float          # lowest top of the ridge (frame heights from the top)
    amp: float           # the ridge top spans base - amp .. base
    freqs: np.ndarray    # cycles per frame height
    amps: np.ndarray
    phases: np.ndarray
    snow: float          # mountains: peaks above this (profile in [0, 1]) have snow caps
    haze: float


@dataclass(frozen=True)
class _Geometry:
    horizon: float
    water: float                     # lake surface row (frame heights), or 2.0 if no lake
    ridges: tuple[_Ridge, ...]       # far to near; with a lake the last one is the near shore
    sky_period: float                # sun / moon repeat every sky_period (frame heights) in world x
    sky_x: float
    sky_y: float
    crescent: bool
    cloud_cell: float
    cloud_drift: float               # frame heights per frame
    key: int


def _rng(scene: Scene, salt: int) -> np.random.Generator:
    return np.random.default_rng([int(scene.seed) & _MASK64, salt])


@functools.lru_cache(maxsize=256)
def _geometry(scene: Scene) -> _Geometry:
    rng = _rng(scene, 0x6E0)
    horizon = float(rng.uniform(0.44, 0.56))
    water = float(horizon + rng.uniform(0.07, 0.12))
    shore = float(rng.uniform(0.86, 0.92))
    water = water if scene.lake else 2.0
    terrain = scene.terrain
    # per layer: (parallax, base offset from the horizon, amplitude)
    if terrain == "grassy hills":
        layers = [(0.3, 0.02, 0.10), (0.55, 0.10, 0.11), (1.0, 0.25, 0.12)]
        fbase, fmul, famps = (0.45, 0.9), (1.0, 2.2, 4.7), (1.0, 0.42, 0.12)
    elif terrain == "snowy mountains":
        layers = [(0.3, 0.04, 0.30), (0.55, 0.12, 0.24), (1.0, 0.27, 0.17)]
        fbase, fmul, famps = (0.9, 1.3), (1.0, 2.3, 5.3, 11.7), (1.0, 0.45, 0.16, 0.06)
    else:  # desert dunes
        layers = [(0.3, 0.02, 0.07), (0.55, 0.10, 0.09), (1.0, 0.25, 0.10)]
        fbase, fmul, famps = (0.55, 0.95), (1.0, 1.9), (1.0, 0.38)
    ridges = []
    for i, (par, off, amp) in enumerate(layers):
        amp *= rng.uniform(0.85, 1.15)
        base = horizon + off
        snow = float(rng.uniform(0.3, 0.42)) - 0.06 * i   # nearer ridges: snow further down
        if scene.lake and i == 2:  # a near shore below the water (mountains: a snowy bank)
            base, amp, snow = shore, min(amp, 0.06), -3.0
        f0 = rng.uniform(*fbase) * (1.0 + 0.35 * (2 - i))  # farther layers: smaller features
        freqs = f0 * np.array(fmul) * rng.uniform(0.9, 1.1, len(fmul))
        ridges.append(_Ridge(
            parallax=par, base=float(base), amp=float(amp), freqs=freqs,
            amps=np.array(famps) * rng.uniform(0.8, 1.2, len(famps)),
            phases=rng.uniform(0.0, 1.0, len(fmul)), snow=snow,
            haze=_HAZE[scene.sky][i]))
    sky_period = float(rng.uniform(2.6, 3.4))
    sky_x = float(rng.uniform(0.2, 0.8))
    if scene.sky == "sunset":
        sky_y = horizon - float(rng.uniform(0.02, 0.1))
    else:
        sky_y = float(rng.uniform(0.1, 0.24))
    return _Geometry(
        horizon=horizon, water=water, ridges=tuple(ridges), sky_period=sky_period, sky_x=sky_x,
        sky_y=sky_y, crescent=bool(rng.integers(2)), cloud_cell=float(rng.uniform(0.55, 0.75)),
        cloud_drift=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.005, 0.009)),
        key=_hash_int(scene.seed, 0xC10D))


def _tri(x: np.ndarray) -> np.ndarray:
    """Triangle wave, 1 at integers, 0 at half-integers."""
    return 1.0 - 2.0 * np.abs(x - np.floor(x + 0.5))


def _profile(terrain: str, r: _Ridge, u: np.ndarray) -> np.ndarray:
    """Height of the ridge in [0, 1] at world x ``u`` (frame heights)."""
    total = float(r.amps.sum())
    if terrain == "snowy mountains":
        h = sum(a * _tri(f * u + p) for f, a, p in zip(r.freqs, r.amps, r.phases))
        return (h / total) ** 1.6
    if terrain == "desert dunes":  # skewed waves: long windward slopes, short steep lee faces
        h = 0.0
        for f, a, p in zip(r.freqs, r.amps, r.phases):
            t = 2.0 * np.pi * (f * u + p)
            h = h + a * (np.sin(t) + 0.42 * np.sin(2 * t) + 0.16 * np.sin(3 * t))
        return 0.5 + h / (2.7 * total)
    h = sum(a * np.sin(2.0 * np.pi * (f * u + p)) for f, a, p in zip(r.freqs, r.amps, r.phases))
    return 0.5 + 0.5 * h / total


# shading: (lean: how far the light / shadow boundary under a crest leans to the right per unit of
# depth, fade: depth (frame heights) over which the contrast fades to the mid tone, gain, bias)
_LIGHTING = {"grassy hills": (0.0, 0.22, 1.5, 0.65), "snowy mountains": (0.55, 0.45, 40.0, 0.5),
             "desert dunes": (0.8, 0.16, 6.0, 0.55)}


def _lighting(terrain: str, r: _Ridge, xpix: np.ndarray, cam: np.ndarray, H: float,
              depth: np.ndarray) -> np.ndarray:
    """How lit each ground pixel is, in [0, 1] (F, R, W): light from the left.

    The slope of the ridge (of its large features for mountains) is looked up up-left of the pixel
    along a leaning line, so that faces below a crest are lit or shaded as a whole.
    """
    lean, fade, gain, bias = _LIGHTING[terrain]
    F, R, W = depth.shape
    K = int(math.ceil(lean * R)) if lean > 0 else 0
    xs = xpix[0] - K + np.arange(W + K, dtype=np.float64)     # world px, K columns to the left
    u = (xs[None, :] + r.parallax * cam[:, None]) / H
    eps = 0.5 / H
    if terrain == "snowy mountains":  # the two large components only: big faces
        sub = _Ridge(r.parallax, r.base, r.amp, r.freqs[:2], r.amps[:2], r.phases[:2], r.snow, r.haze)
        slope = _profile(terrain, sub, u + eps) - _profile(terrain, sub, u - eps)
    else:
        slope = _profile(terrain, r, u + eps) - _profile(terrain, r, u - eps)
    # slope > 0: the ground rises to the right, so it faces the light
    lit1d = np.clip(bias + slope * (r.amp / (2 * eps)) * gain, 0.0, 1.0).astype(np.float32)
    contrast = np.clip(1.0 - depth * (1.0 / fade), 0.0, 1.0)
    if K == 0:
        lit = lit1d[:, None, :]
    else:
        shift = np.clip(np.rint(np.maximum(depth, 0.0) * (lean * H)), 0, K).astype(np.intp)
        idx = (K + np.arange(W))[None, None, :] - shift
        lit = np.take_along_axis(np.broadcast_to(lit1d[:, None, :], (F, R, W + K)), idx, axis=2)
    return bias + (lit - bias) * contrast


# --------------------------------------------------------------------------------------------------
# rendering

def _sky_layer(scene: Scene, g: _Geometry, height: int, xpix: np.ndarray, rows: int) -> np.ndarray:
    """Time-invariant sky (rows, W, 3): gradient, sun or moon, stars. Parallax 0."""
    H = float(height)
    v = (np.arange(rows) + 0.5) / H
    sky = np.broadcast_to(_sky_gradient(scene.sky, v, g.horizon)[:, None, :],
                          (rows, xpix.size, 3)).copy()
    u = xpix / H
    # sun / moon, repeating every sky_period frame heights of world x
    dx = (u - g.sky_x) - g.sky_period * np.floor((u - g.sky_x) / g.sky_period + 0.5)
    dy = v - g.sky_y
    d = np.sqrt(dx[None, :] ** 2 + dy[:, None] ** 2)  # (rows, W)
    if scene.sky == "sunset":
        radius = 0.075
        glow = np.exp(-(d / 0.22) ** 2)[..., None]
        sky += glow * 0.55 * (_c(255, 196, 110) - sky)
        disc = np.clip((radius - d) * H + 0.5, 0.0, 1.0)[..., None]
        sky += disc * (_c(255, 232, 150) - sky)
    elif scene.sky == "night":
        radius = 0.055
        halo = (0.22 * np.exp(-(np.maximum(d - radius, 0.0) / 0.06) ** 2))[..., None]
        sky += halo * (_c(120, 140, 190) - sky)
        disc = np.clip((radius - d) * H + 0.5, 0.0, 1.0)
        if g.crescent:
            d2 = np.sqrt((dx[None, :] + 0.45 * radius) ** 2 + (dy[:, None] + 0.2 * radius) ** 2)
            disc = disc * (1.0 - 0.88 * np.clip((radius - d2) * H + 0.5, 0.0, 1.0))
        # stars: at most one per lattice cell, snapped to the pixel grid of world x
        cell = height / 22.0
        ci = np.floor(xpix / cell)[None, :]
        cj = np.floor((np.arange(rows) + 0.5) / cell)[:, None]
        h0 = _hash_u01(g.key, ci, cj)
        sx = np.floor((ci + 0.15 + 0.7 * _hash_u01(g.key + 1, ci, cj)) * cell) + 0.5
        sy = np.floor((cj + 0.15 + 0.7 * _hash_u01(g.key + 2, ci, cj)) * cell) + 0.5
        dist = np.sqrt((xpix[None, :] - sx) ** 2 + (np.arange(rows)[:, None] + 0.5 - sy) ** 2)
        rad = max(0.0, height / 128.0 - 0.5)
        bright = np.where(h0 < 0.3, 0.45 + 0.55 * (h0 / 0.3), 0.0)
        star = bright * np.clip(1.0 + rad - dist, 0.0, 1.0) * (1.0 - disc)
        star *= np.clip((g.horizon - 0.03 - v) / 0.08, 0.0, 1.0)[:, None]  # fade near the horizon
        sky += star[..., None].astype(np.float32) * (_c(250, 246, 228) - sky)
        sky += disc[..., None] * (_c(238, 236, 214) - sky)
    return sky


def _clouds(scene: Scene, g: _Geometry, height: int, uc: np.ndarray, rows: int):
    """Cloud alpha (F, rows, W) and colour for cloud world x ``uc`` (F, W) in frame heights."""
    L = g.cloud_cell
    k = np.floor(uc / L)
    present = _hash_u01(g.key + 10, k) < 0.7
    w = (0.10 + 0.09 * _hash_u01(g.key + 11, k)) * L / 0.65     # half-width
    cx = (k + 0.5) * L + (0.5 * L - w - 0.02) * (2.0 * _hash_u01(g.key + 12, k) - 1.0)
    cy = 0.09 + (g.horizon - 0.24) * _hash_u01(g.key + 13, k)    # cloud base row
    x = uc - cx
    top = np.zeros_like(uc)
    for j in range(4):  # round puffs along the cloud
        pos = w * (-0.62 + 0.42 * j + 0.14 * (_hash_u01(g.key + 20 + j, k) - 0.5))
        rad = w * (0.34 + 0.28 * (j in (1, 2)) + 0.12 * _hash_u01(g.key + 30 + j, k))
        top = np.maximum(top, np.sqrt(np.maximum(rad * rad - (x - pos) ** 2, 0.0)))
    top = np.where(present, top * 0.75, 0.0)
    bottom = 0.3 * top
    H = float(height)
    v = ((np.arange(rows) + 0.5) / H).astype(np.float32)[None, :, None]
    ytop = (cy - top).astype(np.float32)[:, None, :]
    ybot = (cy + bottom).astype(np.float32)[:, None, :]
    soft = max(1.5, 0.03 * H)
    alpha = np.clip((v - ytop) * (H / soft) + 0.5, 0.0, 1.0)
    alpha *= np.clip((ybot - v) * (H / soft) + 0.5, 0.0, 1.0)
    alpha *= np.clip(top * (H / soft), 0.0, 0.92).astype(np.float32)[:, None, :]
    # shading: lit at the top, grey underneath
    shade = np.clip((v - ytop) / np.maximum(ybot - ytop, 1e-3), 0.0, 1.0)
    return alpha, shade


def render(scene: Scene, height: int, width: int, frames: int = 1, x0: float = 0.0,
           speed: float | None = None) -> np.ndarray:
    """Render ``frames`` frames of ``scene``: uint8 (frames, height, width, 3).

    Column c of frame t shows world x ``x0 + c + p * camera(t)`` for a layer of parallax p
    (1 for the near ridge and the lake), with camera(t) = -speed * t for "pan left", +speed * t
    for "pan right", 0 for "still". ``speed`` is in px per frame, default ``height / 16``.
    Clouds also drift on their own.
    """
    for name, value in (("height", height), ("width", width), ("frames", frames)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise bad(name, "must be an int >= 1", value)
    height, width, frames = int(height), int(width), int(frames)
    if speed is None:
        speed = height / 16.0
    direction = {"pan left": -1.0, "pan right": 1.0, "still": 0.0}[scene.motion]
    g = _geometry(scene)
    H = float(height)
    t = np.arange(frames, dtype=np.float64)
    cam = direction * float(speed) * t                       # (F,) px
    xpix = float(x0) + np.arange(width, dtype=np.float64) + 0.5  # pixel centres, world px
    v_all = ((np.arange(height) + 0.5) / H).astype(np.float32)

    # sky rows: everything above the highest possible ridge top
    # sky rows: down to the lowest point of the far ridge, which covers everything below
    sky_rows = min(height, int(math.ceil(g.ridges[0].base * H)) + 2)
    img = np.zeros((frames, height, width, 3), np.float32)
    img[:, :sky_rows] = _sky_layer(scene, g, height, xpix, sky_rows)[None]

    # clouds
    crow = min(sky_rows, int(math.ceil((g.horizon - 0.02) * H)))
    if crow > 0:
        uc = (xpix[None, :] + 0.1 * cam[:, None]) / H + g.cloud_drift * t[:, None]
        alpha, shade = _clouds(scene, g, height, uc, crow)
        lit, dark = _CLOUD[scene.sky]
        col = lit + shade[..., None] * (dark - lit)
        region = img[:, :crow]
        region += alpha[..., None] * (col - region)

    terrain = scene.terrain
    colours = _TERRAIN_COLOURS[(terrain, scene.sky)]
    haze_col = _sky_gradient(scene.sky, np.array([g.horizon]), g.horizon)[0]
    # drawing steps, far to near; each is drawn only down to the row below which the next one
    # covers everything (a ridge below its base, the lake below its surface)
    steps: list = list(g.ridges)
    if scene.lake:
        steps.insert(2, "lake")
    full = [int(math.ceil((g.water if st == "lake" else st.base) * H)) + 1 for st in steps]
    for k, r in enumerate(steps):
        r1 = min(height, full[k + 1]) if k + 1 < len(steps) else height
        if r == "lake":
            _draw_lake(scene, g, img, xpix, cam, v_all, r1)
            continue
        r0 = max(0, int(math.floor((r.base - r.amp) * H)) - 1)
        if r0 >= r1:
            continue
        u = (xpix[None, :] + r.parallax * cam[:, None]) / H     # (F, W)
        prof = _profile(terrain, r, u)
        top = r.base - r.amp * prof
        v = v_all[r0:r1][None, :, None]                           # (1, R, 1)
        depth = v - top.astype(np.float32)[:, None, :]             # (F, R, W) frame heights
        alpha = np.clip(depth * H + 0.5, 0.0, 1.0)
        lit = _lighting(terrain, r, xpix, cam, H, depth)[..., None]   # (F, R, W, 1)
        c_lit, c_shade = colours[0], colours[1]
        col = c_shade + lit * (c_lit - c_shade)                  # (F, R, W, 3)
        dark = 1.0 - 0.28 * np.clip(depth * (1.0 / 0.3), 0.0, 1.0)
        if terrain == "snowy mountains":
            # snow caps: the higher the peak, the deeper its snow; ragged streaks down the gullies
            cover = prof - r.snow
            cover = np.where(cover > 0, 0.9 * cover + 0.012 + 0.12 * cover * _tri(7.3 * u + 0.37) ** 3,
                             0.0)
            line = top + r.amp * cover
            snow = np.clip((line.astype(np.float32)[:, None, :] - v) * H + 0.5, 0.0, 1.0)
            s_col = colours[3] + lit * (colours[2] - colours[3])
            col = col + snow[..., None] * (s_col - col)
            dark = dark + snow * (1.0 - dark) * 0.7
        elif terrain == "desert dunes":
            # faint wind ripples following the surface
            dark = dark * (1.0 + 0.05 * np.sin(depth * (2 * np.pi / 0.045)))
        else:
            # darker bands of hedges / tree lines following the hills
            band = np.sin(depth * (2 * np.pi / 0.09) + 6.0 * np.sin(2 * np.pi * 0.7 * u[:, None, :]))
            dark = dark * (1.0 - 0.09 * (band > 0.55))
        col = col * dark[..., None]
        if r.haze > 0:
            col = col + r.haze * (haze_col - col)
        region = img[:, r0:r1]
        region += alpha[..., None] * (col - region)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _draw_lake(scene: Scene, g: _Geometry, img: np.ndarray, xpix: np.ndarray, cam: np.ndarray,
               v_all: np.ndarray, r1: int) -> None:
    """Water from g.water down to row r1: the sky reflected, tinted, with ripples (parallax 1)."""
    H = float(img.shape[1])
    r0 = max(0, int(math.floor(g.water * H)) - 1)
    if r0 >= r1:
        return
    v = v_all[r0:r1]
    below = np.maximum(v - g.water, 0.0)
    mirrored = g.horizon - 2.2 * below - 0.02
    refl = _sky_gradient(scene.sky, mirrored, g.horizon)           # (R, 3)
    col = 0.62 * refl + 0.38 * _WATER_TINT[scene.sky]
    col = col * (0.9 - 0.25 * np.clip(below / 0.3, 0.0, 1.0))[:, None]
    # ripples: short bright streaks on rows of wavelets, denser towards the far shore
    u = (xpix[None, :] + cam[:, None]) / H                           # (F, W)
    rows = np.sqrt(below) * (2 * np.pi * 14.0)
    amp = np.clip(below / 0.04, 0.0, 1.0)
    shade = (1.0 - 0.07 * amp * np.cos(rows)).astype(np.float32)[None, :, None]
    streak = (amp * np.clip((np.cos(rows) - 0.55) * 2.5, 0.0, 1.0)).astype(np.float32)
    broken = np.sin((2 * np.pi * 3.3 * u).astype(np.float32)[:, None, :]
                    + (np.sqrt(below) * 37.0).astype(np.float32)[None, :, None])
    glint = 0.5 * streak[None, :, None] * np.clip((broken - 0.1) * 2.0, 0.0, 1.0)   # (F, R, W)
    shore = np.exp(-((v - g.water) * H / 1.2) ** 2).astype(np.float32)   # bright waterline
    col = col + (0.4 * shore)[:, None] * (_GLINT[scene.sky] - col)
    col = col[None, :, None, :] * shade[..., None]
    col = col + glint[..., None] * (_GLINT[scene.sky] - col)
    alpha = np.clip((v - g.water) * H + 0.5, 0.0, 1.0)[None, :, None, None]
    region = img[:, r0:r1]
    region += alpha * (col - region)
