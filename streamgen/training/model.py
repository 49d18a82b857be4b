"""Training the vision decoder (`streamgen train model`), following NUWA-Infinity's Algorithm 1.

For each batch: a random order among the four basic orders, patches visited in that order, the
context of each patch taken from a Nearby Context Pool of detached caches, and the loss of each patch
computed and optimised as soon as the patch is predicted ("patch loss", Table 7c). Captions are
dropped for a fraction of samples so classifier-free guidance works. Batches alternate between
videos (consecutive frames, a camera that pans or stays) and wide still images.

The data are the procedural landscapes, rendered once, encoded with the trained codec, and kept as
tokens (`build_tokens`). Distributed training runs with ``torchrun`` (DistributedDataParallel on the
gloo backend on CPUs): every rank draws its own samples, gradients are averaged at every patch step.
A config's ``stages`` continue the run in the same folder with other settings (a warm restart of
the learning rate each), so a recipe of several legs is one command that resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from streamgen import checkpoint as ckpt
from streamgen.engine import adc
from streamgen.engine.adc import ORDERS, Plan
from streamgen.config import Extent, ModelConfig, Strict, stage_runs
from streamgen.errors import bad
from streamgen.model import VisionDecoder
from streamgen.engine.ncp import NearbyContextPool
from streamgen.progress import Progress


class ModelData(Strict):
    tokens: str = Field("runs/tokens.safetensors", description="token dataset made by build_tokens")
    videos: int = Field(3000, ge=1, description="video clips to render and encode")
    images: int = Field(1500, ge=1, description="wide still images to render and encode")
    height: int = Field(128, ge=16, description="frame height and width of videos (px)")
    image_width: int = Field(256, ge=16, description="width of still images (px)")
    clip_frames: int = Field(8, ge=2, description="frames rendered per clip")
    train_frames: int = Field(3, ge=1, description="frames per training video sample")
    text_dropout: float = Field(0.15, ge=0, le=1, description="share of samples trained without caption")
    captions: Literal["templates", "open"] = Field("templates", description="'templates': the eight caption "
                                                   "templates of `landscapes.caption`; 'open': "
                                                   "`captions.describe`, wordings a person would write from a "
                                                   "wide vocabulary, never its held-out words (the eval's)")
    partial_captions: float = Field(0.0, ge=0, le=1, description="share of captioned samples whose caption "
                                    "names only the sky or only the terrain (`landscapes.partial_caption`), "
                                    "for composition")
    video_share: float = Field(0.6, ge=0, le=1, description="share of batches that are videos")
    motions: list[str] | None = Field(None, description="camera motions of the video samples (of "
                                      "'pan left', 'pan right', 'still'); None: all. A curriculum can start "
                                      "with still clips, where a frame is mostly a copy of the one before")
    pan_tokens: float = Field(1.0, gt=0, description="camera speed of pans in codec tokens per frame: "
                              "at a whole number, a pan shifts the token grid by whole tokens")
    switches: int = Field(0, ge=0, description="clips whose sky and terrain change part-way "
                          "(`landscapes.render_switch`), rendered and encoded beside the others")
    switch_share: float = Field(0.0, ge=0, le=1, description="share of video batches taken from the switch "
                                "clips: each sample's frames before the change are captioned with the first "
                                "scene, those from it with the second, as a steered stream's prompts are")
    switch_blend: int = Field(2, ge=0, le=8, description="frames over which a switch clip cross-fades")
    switch_frames: int | None = Field(None, ge=2, description="frames rendered per switch clip (None: "
                                      "`clip_frames`); room for the whole cross-fade and the frames around it")
    context_noise: float = Field(0.0, ge=0, lt=1, description="share of a video frame's tokens that the frame "
                                 "after it sees swapped for tokens from other places of the same frame (its "
                                 "context and previous-frame hints; `corrupt`), while it still predicts the "
                                 "true tokens: noise on the context against the drift of long videos, whose "
                                 "frames build on generated frames, not true ones")


class ModelTrainConfig(Strict):
    model: ModelConfig
    codec: str = Field("runs/codec/vqgan.safetensors", description="the trained VQGAN checkpoint")
    data: ModelData = Field(default_factory=ModelData)
    out: str = Field("runs/model", description="folder of the checkpoints")
    steps: int = Field(20000, ge=0, description="optimizer steps (one per `patches_per_step` patches)")
    patches_per_step: int = Field(1, ge=1, description="patches whose gradients one optimizer step takes: "
                                  "1 is the paper's patch loss; more keeps the cached context of a sample "
                                  "closer to the weights that read it (each patch's loss is still computed "
                                  "and backpropagated as soon as the patch is predicted)")
    batch: int = Field(16, ge=1)
    lr: float = Field(3e-4, gt=0)
    warmup: int = Field(500, ge=0)
    pnar_share: float = Field(0.0, ge=0, le=1, description="share of patch steps trained with the P-NAR "
                              "mask-predict loss instead of the autoregressive one (needs model.pnar)")
    init: str | None = Field(None, description="start from this checkpoint's weights (a fresh optimizer at "
                             "step 0); parameters it lacks, such as new P-NAR embeddings, keep their init")
    min_lr: float = Field(0.0, ge=0, description="cosine decay from lr to min_lr over `steps`; "
                          "min_lr = lr keeps the rate constant")
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    threads: int = Field(2, ge=1)
    save_every: int = Field(1000, ge=1)
    stages: list[dict[str, Any]] = Field(default_factory=list, description="later stages of the same run, in "
                                         "order, in the same `out` folder: each is fields laid over the stage "
                                         "before it (nested objects merged). `steps` counts the run's steps; a "
                                         "stage's learning rate warms up and decays again over its own steps "
                                         "(a warm restart) while the optimizer state goes on. The model, the "
                                         "codec and the token set are the whole run's")

    @model_validator(mode="after")
    def _check(self) -> "ModelTrainConfig":
        if self.pnar_share and not self.model.pnar:
            raise bad("pnar_share", "must be 0 unless model.pnar is true", self.pnar_share)
        self.runs()  # every stage is checked before any work
        return self

    def runs(self) -> list["ModelTrainConfig"]:
        """The run's stages in order: this config without its ``stages``, then each stage laid over the
        one before."""
        for i, stage in enumerate(self.stages):
            for key in TOKEN_SET:
                if key in stage.get("data", {}):
                    raise bad(f"stages.{i}.data.{key}", "shapes the token set, which is the whole run's: set "
                              "it once at the top of the config", stage["data"][key])
        out = stage_runs(self, RUN_WIDE)
        for i, (prev, cfg) in enumerate(zip(out, out[1:])):
            if cfg.steps <= prev.steps:
                raise bad(f"stages.{i}.steps", f"counts the run's steps, so it must be more than the stage "
                          f"before's {prev.steps}", cfg.steps)
        return out


# what a stage may not change: the weights' shape and start, the folder, and the token set's making
RUN_WIDE = ("model", "codec", "out", "init", "seed", "stages")
TOKEN_SET = ("tokens", "videos", "images", "height", "image_width", "clip_frames", "pan_tokens", "switches",
             "switch_frames", "switch_blend")


def token_set_id(cfg: ModelTrainConfig, codec: Any) -> str:
    """What a token set is made from: the codec's encoder and codebook (a digest: fine-tuning only its
    decoders keeps the tokens), the seed and the data fields that shape the set."""
    d = cfg.data.model_dump(include=set(TOKEN_SET) - {"tokens"})
    return json.dumps({"codec": ckpt.digest(codec.vq.encoder, codec.vq.quantizer), "seed": cfg.seed, "data": d},
                      sort_keys=True)


def build_tokens(cfg: ModelTrainConfig, log: Callable[[str], None] = print) -> Path:
    """Render the procedural landscapes (train split only), encode them, save tokens as safetensors.

    An existing ``data.tokens`` file is used if it was made from the same codec tokens and data
    fields, and refused if not (a file from before this check is used as it is)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from streamgen.codecs.neural import NeuralCodec
    from streamgen.training.data import landscapes as L

    path = Path(cfg.data.tokens)
    codec = NeuralCodec.load(cfg.codec)
    made_from = token_set_id(cfg, codec)
    if path.exists():
        with safe_open(str(path), "pt") as fh:
            had = (fh.metadata() or {}).get("made_from")
        if had is not None and had != made_from:
            raise bad("data.tokens", f"was made from another codec or other data fields than this run's "
                      f"(codec {cfg.codec}): delete it to make it again, or name a new file", str(path))
        return path
    d = cfg.data
    out: dict[str, Tensor] = {}
    for kind, count, width, frames in (("video", d.videos, d.height, d.clip_frames),
                                       ("image", d.images, d.image_width, 1)):
        toks, attrs = [], []
        bar = Progress(count, f"encode {kind}s")
        for i in range(count):
            seed = (cfg.seed * 1_000_003 + i * 2 + (kind == "image")) % (1 << 31)
            scene = L.sample_scene(seed, split="train")
            clip = torch.from_numpy(L.render(scene, d.height, width, frames=frames,
                                             speed=d.pan_tokens * codec.factor))
            toks.append(codec.encode(clip).to(torch.int16))
            attrs.append(attr_row(L, scene))
            bar.goto(i + 1)
        bar.close()
        out[f"{kind}/tokens"] = torch.stack(toks)  # (n, F, h, w)
        out[f"{kind}/attrs"] = torch.tensor(attrs, dtype=torch.int64)
    if d.switches:
        toks, attrs, ats = [], [], []
        bar = Progress(d.switches, "encode switch clips")
        frames = d.switch_frames or d.clip_frames
        for i in range(d.switches):
            seed = (cfg.seed * 1_000_003 + 7 + i * 2) % (1 << 31)
            first, then = switch_pair(L, seed)
            at = 1 + i % max(1, frames - 1 - d.switch_blend)  # the whole cross-fade inside the clip if it fits
            clip = L.render_switch(first, then, d.height, d.height, frames, at, d.switch_blend,
                                   speed=d.pan_tokens * codec.factor)
            toks.append(codec.encode(torch.from_numpy(clip)).to(torch.int16))
            attrs.append([attr_row(L, first), attr_row(L, then)])
            ats.append(at)
            bar.goto(i + 1)
        bar.close()
        out["switch/tokens"] = torch.stack(toks)  # (n, F, h, w)
        out["switch/attrs"] = torch.tensor(attrs, dtype=torch.int64)  # (n, 2, 5): the scenes before and after
        out["switch/at"] = torch.tensor(ats, dtype=torch.int64)  # (n,): the first frame of the change
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={"made_from": made_from})
    log(f"saved {path}")
    return path


def attr_row(L: Any, scene: Any) -> list[int]:
    """A scene as the token dataset stores it: sky, terrain, lake, motion (indices) and seed."""
    return [L.ATTRIBUTES["sky"].index(scene.sky), L.ATTRIBUTES["terrain"].index(scene.terrain),
            int(scene.lake), L.ATTRIBUTES["motion"].index(scene.motion), scene.seed]


def switch_pair(L: Any, seed: int) -> tuple[Any, Any]:
    """Two train-split scenes for a switch clip: the second has another sky or another terrain or both
    (never a held-out combination), the lake and the camera of the first."""
    first = L.sample_scene(seed, split="train")
    n = seed
    while True:
        n += 1_000_003
        other = L.sample_scene(n % (1 << 31), split="train")
        if (other.sky, other.terrain) != (first.sky, first.terrain):
            return first, L.Scene(other.sky, other.terrain, first.lake, first.motion, first.seed)


class TokenBatches:
    """Random training batches from the token dataset, with captions."""

    def __init__(self, cfg: ModelTrainConfig, rng: random.Random):
        from streamgen.training.data import landscapes as L

        self.L, self.cfg, self.rng = L, cfg, rng
        t = ckpt.read(cfg.data.tokens)
        self.videos, self.vattrs = t["video/tokens"].long(), t["video/attrs"]
        self.images, self.iattrs = t["image/tokens"].long(), t["image/attrs"]
        self.switches = (t["switch/tokens"].long(), t["switch/attrs"], t["switch/at"]) if "switch/tokens" in t else None
        if cfg.data.switch_share and self.switches is None:
            raise bad("data.switch_share", f"needs switch clips in {cfg.data.tokens} (data.switches > 0 when "
                      "the token dataset is built; delete it to build it again)", cfg.data.switch_share)
        if cfg.data.switch_share and cfg.data.train_frames < 2:
            raise bad("data.train_frames", "must be at least 2 with switch clips (a frame before the change "
                      "and one after)", cfg.data.train_frames)
        if cfg.data.motions is not None:
            names = L.ATTRIBUTES["motion"]
            if not cfg.data.motions or any(m not in names for m in cfg.data.motions):
                raise bad("data.motions", f"must list some of {', '.join(repr(n) for n in names)}",
                          cfg.data.motions)
            keep = torch.isin(self.vattrs[:, 3], torch.tensor([names.index(m) for m in cfg.data.motions]))
            if not keep.any():
                raise bad("data.motions", f"selects none of the {len(keep)} clips in {cfg.data.tokens}",
                          cfg.data.motions)
            self.videos, self.vattrs = self.videos[keep], self.vattrs[keep]

    def _scene(self, a: Tensor):
        L = self.L
        return L.Scene(L.ATTRIBUTES["sky"][a[0]], L.ATTRIBUTES["terrain"][a[1]], bool(a[2]),
                       L.ATTRIBUTES["motion"][a[3]], int(a[4]))

    def caption(self, a: Tensor, video: bool) -> str | None:
        """A training caption of the scene ``a`` (an `attr_row`): dropped, partial or whole."""
        d, rng = self.cfg.data, self.rng
        if rng.random() < d.text_dropout:
            return None
        part = rng.choice(("sky", "terrain")) if rng.random() < d.partial_captions else None
        if d.captions == "open":
            from streamgen.training.data import captions

            return captions.describe(self._scene(a), rng, split="train", video=video, partial=part)
        if part is not None:
            return self.L.partial_caption(self._scene(a), part, rng.randrange(1 << 16), video=video)
        return self.L.caption(self._scene(a), rng.randrange(1 << 16), video=video)

    def sample(self) -> tuple[str, Tensor, list[str | None], tuple[int, list[str | None]] | None]:
        """("video" | "image", tokens (B, F, h, w), captions (None where dropped), switch): ``switch``
        is None, or (r, captions) for a batch of switch clips, whose frames from r on take the second
        captions (the scene after the change)."""
        d, rng = self.cfg.data, self.rng
        video = rng.random() < d.video_share
        if video and self.switches is not None and rng.random() < d.switch_share:
            src, attrs, ats = self.switches
            T, F = d.train_frames, src.shape[1]
            # every sample of the batch has its change on the same frame r of the window; windows start
            # up to T - 1 frames before the change and as late as the cross-fade's last frame (r = 0:
            # the whole window after the change, its frames still fading from the frame before)
            r = rng.randrange(-d.switch_blend + 1, T) if d.switch_blend else rng.randrange(1, T)
            fits = [i for i in range(len(src)) if 0 <= int(ats[i]) - r <= F - T]
            if not fits:
                r = 1
                fits = [i for i in range(len(src)) if 0 <= int(ats[i]) - 1 <= F - T]
            idx = [rng.choice(fits) for _ in range(self.cfg.batch)]
            toks = torch.stack([src[i, int(ats[i]) - r:int(ats[i]) - r + T] for i in idx])
            first = [self.caption(attrs[i, 0], True) for i in idx]
            then = [self.caption(attrs[i, 1], True) if c is not None else None for i, c in zip(idx, first)]
            return "switch", toks, first, (max(r, 0), then)
        src, attrs = (self.videos, self.vattrs) if video else (self.images, self.iattrs)
        idx = [rng.randrange(len(src)) for _ in range(self.cfg.batch)]
        if video:
            f0 = rng.randrange(src.shape[1] - d.train_frames + 1)
            toks = src[idx, f0:f0 + d.train_frames]
        else:
            toks = src[idx]
        caps = [self.caption(attrs[i], video) for i in idx]
        return ("video" if video else "image"), toks, caps, None


def encode_captions(encoder: Any, caps: list[str | None], cache: dict[str, tuple[Tensor, Tensor]]
                    ) -> tuple[Tensor, Tensor]:
    """Token states (B, T, dim) and mask (B, T) of captions; a dropped caption (None) is all masked."""
    states, masks = [], []
    for c in caps:
        if c is None:
            states.append(torch.zeros(1, 1, encoder.dim))
            masks.append(torch.zeros(1, 1, dtype=torch.bool))
            continue
        if c not in cache:
            cache[c] = encoder.encode([c])
        states.append(cache[c][0])
        masks.append(cache[c][1])
    T = max(s.shape[1] for s in states)
    return (torch.cat([F.pad(s, (0, 0, 0, T - s.shape[1])) for s in states]),
            torch.cat([F.pad(m, (0, T - m.shape[1])) for m in masks]))


def patches(tokens: Tensor, plan: Plan, ph: int, pw: int) -> list[tuple[tuple[int, int, int], Tensor]]:
    """The plan's patches of tokens (B, F, h, w): [(pos, (B, ph * pw))] in plan order."""
    out = []
    for item in plan:
        f, y, x = item.pos
        out.append((item.pos, tokens[:, f, y * ph:(y + 1) * ph, x * pw:(x + 1) * pw].reshape(tokens.shape[0], -1)))
    return out


def plan_hints(model: VisionDecoder, plan: Plan, tokens: Tensor, seen: Tensor | None = None) -> list[Tensor | None]:
    """Each patch's `hint_index` in plan order, as teacher forcing gives them, for frames of tokens
    (B, F, h, w): the previous frame's tokens (from ``seen``, the frames as the next frame sees them,
    if given), and the tokens across the borders of the patches made earlier in the plan. All None for
    models without hints."""
    made = torch.zeros(tokens.shape[1], plan.rows, plan.cols, dtype=torch.bool)
    last = tokens if seen is None else seen
    out = []
    for item in plan:
        f, y, x = item.pos
        out.append(model.hint_index(last[:, f - 1] if f else None, tokens[:, f], made[f], y, x,
                                    batch=tokens.shape[0]))
        made[f, y, x] = True
    return out


def corrupt(tokens: Tensor, share: float, gen: torch.Generator) -> Tensor:
    """A copy of frames of tokens (B, F, h, w) where, in each frame, about ``share`` of the places hold
    the token of another random place of the same frame: errors of the kind a generated frame makes
    (a patch of cloud in the lake), not tokens foreign to the scene."""
    B, Fr, h, w = tokens.shape
    flat = tokens.reshape(B * Fr, h * w)
    swap = torch.rand(flat.shape, generator=gen) < share
    src = torch.randint(0, h * w, flat.shape, generator=gen)
    return torch.where(swap, flat.gather(1, src), flat).reshape(tokens.shape)


def train_model(cfg: ModelTrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) the vision decoder; returns the checkpoint path."""
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    rank = 0
    if distributed:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # same seed on every rank: DDP also broadcasts rank 0's weights
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.safetensors"
    model = VisionDecoder(cfg.model)
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.ndim >= 2 and "emb" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    step = ckpt.resume(path, model, opt)
    clock = ckpt.TrainClock(path if step else None)
    if not step and cfg.init:
        missing = ckpt.load_state(model, ckpt.read(cfg.init), cfg.init, allow_missing=True)
        if rank == 0:
            log(f"initialised from {cfg.init}" + (f"; new: {', '.join(missing)}" if missing else ""))
    if step and rank == 0:
        log(f"resumed {path} at step {step}")
    # DDP all-reduces gradients of what runs through its forward: make that the patch step
    step_fn: torch.nn.Module = PatchStep(model)
    if distributed:
        # P-NAR and autoregressive steps use different embeddings: each leaves some unused
        step_fn = torch.nn.parallel.DistributedDataParallel(step_fn, find_unused_parameters=cfg.model.pnar)

    if rank == 0:
        build_tokens(cfg, log)
    if distributed:
        dist.barrier()
    encoder = None
    if cfg.model.text_dim is not None:
        from streamgen.plugins import manager

        encoder = manager().text_encoders.get(cfg.model.text_encoder)()
    runs = cfg.runs()
    for i, run in enumerate(runs):
        start = runs[i - 1].steps if i else 0
        if step >= run.steps:  # a stage finished before a resume
            continue
        if rank == 0 and len(runs) > 1:
            log(f"stage {i + 1} of {len(runs)}: to step {run.steps}")
        step = _train_stage(run, start, step, model, opt, step_fn, encoder, rank, distributed, path, clock)
    if distributed:
        # every rank records a digest of its weights: they must agree (tests/test_train.py checks)
        (out / f"rank{rank}.sha256").write_text(ckpt.digest(model) + "\n")
        dist.barrier()
        dist.destroy_process_group()
    return path


def _train_stage(cfg: ModelTrainConfig, start: int, step: int, model: VisionDecoder, opt: torch.optim.Optimizer,
                 step_fn: torch.nn.Module, encoder: Any, rank: int, distributed: bool, path: Path,
                 clock: ckpt.TrainClock) -> int:
    """Train one stage of the run from ``step`` to ``cfg.steps`` (the stage began at ``start``); returns
    the step reached. Checkpoints record the run's time so far (``clock``)."""
    torch.set_num_threads(cfg.threads)
    opt.param_groups[0]["weight_decay"] = cfg.weight_decay
    data = TokenBatches(cfg, random.Random(cfg.seed * 7919 + rank * 104729 + step))
    noise_gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank * 104729 + step)
    text_cache: dict[str, tuple[Tensor, Tensor]] = {}
    ph, pw = cfg.model.patch_h, cfg.model.patch_w
    ext: Extent = cfg.model.extent
    bar = Progress(cfg.steps, "model", start=step) if rank == 0 else None
    model.train()
    while step < cfg.steps:
        kind, toks, caps, switch = data.sample()
        B, Fr, h, w = toks.shape
        order = data.rng.choice(ORDERS)
        plan = Plan.basic(order, h // ph, w // pw, Fr, ext)
        text = None
        if encoder is not None:
            st, mk = encode_captions(encoder, caps, text_cache)
            if switch is not None:
                st2, mk2 = encode_captions(encoder, switch[1], text_cache)
        pool = NearbyContextPool(ext)
        todo = patches(toks, plan, ph, pw)
        # with context noise, a frame's patches are also run on the corrupted tokens (no gradient), and
        # the next frame reads those caches and hints; the frame itself still sees its own true tokens
        noisy = kind != "image" and cfg.data.context_noise > 0
        seen = corrupt(toks, cfg.data.context_noise, noise_gen) if noisy else None
        seen_todo = dict(patches(seen, plan, ph, pw)) if noisy else {}
        seen_cache: dict[tuple[int, int, int], Tensor] = {}
        hints = plan_hints(model, plan, toks, seen)
        k = cfg.patches_per_step
        group_loss = 0.0
        for i, (pos_, target) in enumerate(todo):
            if step >= cfg.steps:
                break
            if i % k == 0:
                lr = learning_rate(cfg, step, start)
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.zero_grad(set_to_none=True)
                group = min(k, len(todo) - i)  # patches in this optimizer step
            last = i % k == k - 1 or i == len(todo) - 1  # the optimizer steps after this patch
            # DDP all-reduces once per optimizer step, at its last backward: ranks whose samples hold
            # different numbers of patches (a clip, an image) then still meet at every step
            sync = step_fn.no_sync() if distributed and not last else contextlib.nullcontext()
            with sync:
                # the text memory depends on the weights, and each patch's backward frees its graph:
                # recompute it for every patch
                if encoder is not None:
                    after = switch is not None and pos_[0] >= switch[0]  # a switch clip's second scene
                    text = model.text_memory(st2, mk2) if after else model.text_memory(st, mk)
                ctx = [(seen_cache.get(q, p) if q[0] < pos_[0] else p, o) for q, p, o in pool.select(pos_)]
                edges = adc.edges(pos_[1], pos_[2], plan.rows, plan.cols)
                prev = hints[i]
                if noisy and pos_[0] + 1 < Fr:
                    with torch.no_grad():
                        seen_cache[pos_] = model.patch_forward(seen_todo[pos_], ctx, text, edges=edges, prev=prev)[1]
                if cfg.pnar_share and data.rng.random() < cfg.pnar_share:
                    masked = mask_predict_mask(target.shape, data.rng)
                    logits, _ = step_fn(target, ctx, text, masked, edges, prev)
                    loss = F.cross_entropy(logits[masked], target[masked])
                    with torch.no_grad():  # the pool keeps the autoregressive pass's cache, as in generation
                        payload = model.patch_forward(target, ctx, text, edges=edges, prev=prev)[1]
                else:
                    logits, payload = step_fn(target, ctx, text, None, edges, prev)
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
                (loss / group).backward()
            group_loss += loss.item() / group
            pool.add(pos_, payload, plan.expiry(pos_))
            for q in [q for q in seen_cache if q[0] < pos_[0] - ext.f]:  # beyond every later patch's extent
                del seen_cache[q]
            pool.remove(plan.step_of(pos_))
            if not last:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if bar:
                bar.goto(step, loss=group_loss, kind=kind, lr=lr)
            group_loss = 0.0
            if rank == 0 and (step % cfg.save_every == 0 or step == cfg.steps):
                extra = {"step": torch.tensor(step), **ckpt.optimizer_tensors(opt)}
                ckpt.save(path, model, cfg.model, extra, meta={"steps": step, **clock.meta()})
    if bar:
        bar.close()
    return step


def mask_predict_mask(shape: tuple[int, int], rng: random.Random) -> Tensor:
    """MaskGIT's training mask (B, M) bool: per row, ceil(M * cos(pi/2 * r)) random tokens, r ~ U(0, 1)."""
    B, M = shape
    out = torch.zeros(B, M, dtype=torch.bool)
    for b in range(B):
        n = max(1, math.ceil(M * math.cos(math.pi / 2 * rng.random())))
        out[b, rng.sample(range(M), n)] = True
    return out


def learning_rate(cfg: ModelTrainConfig, step: int, start: int = 0) -> float:
    """Linear warmup, then cosine decay from ``cfg.lr`` to ``cfg.min_lr`` at ``cfg.steps``, for the stage
    that begins at step ``start``."""
    step -= start
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - start - cfg.warmup))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


class PatchStep(torch.nn.Module):
    """`VisionDecoder.patch_forward` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: VisionDecoder):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, context, text, masked=None, edges=None, prev=None):
        return self.model.patch_forward(tokens, context, text, masked, edges, prev)
