"""Typed configuration of the vision decoder and of sampling.

Every model is pydantic v2 with ``extra="forbid"``: an unknown key is an error, not a silent no-op.
Use `parse` to validate user data into the project's `ConfigError`.
"""
from __future__ import annotations

from typing import Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamgen.errors import bad, from_validation_error

T = TypeVar("T", bound=BaseModel)

MIN_FPS = 0.01  # the slowest frame rate an output's time base (1/fps, denominator at most 1000) holds


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse(cls: type[T], data: Any, prefix: str = "") -> T:
    """Validate ``data`` into ``cls``; errors become `ConfigError` naming field, rule and value."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        raise from_validation_error(exc, prefix) from None


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, nested dicts merged key by key (a training config's stages)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def stage_runs(cfg: T, run_wide: tuple[str, ...], reset: dict[str, Any] | None = None) -> list[T]:
    """A training config's run: ``cfg`` without its ``stages``, then each stage's fields laid over the
    stage before it (nested objects merged; ``reset`` first, for fields that hold for one stage only),
    each validated as ``type(cfg)``. A stage naming a ``run_wide`` field is refused."""
    out = [cfg.model_copy(update={"stages": []})]
    for i, stage in enumerate(cfg.stages):
        for key in run_wide:
            if key in stage:
                raise bad(f"stages.{i}.{key}", "is the whole run's, set once at the top of the config", stage[key])
        fields = merged({**out[-1].model_dump(exclude={"stages"}), **(reset or {})}, stage)
        out.append(parse(type(cfg), fields, prefix=f"stages.{i}"))
    return out


class Extent(Strict):
    """How far the Nearby Context Pool looks back, in patches (the paper's (ew, eh, ef))."""

    w: int = Field(1, ge=0, le=8, description="columns of patches either side of the current one")
    h: int = Field(1, ge=0, le=8, description="rows of patches above and below the current one")
    f: int = Field(1, ge=0, le=8, description="earlier frames the context reaches back to")

    @property
    def num_offsets(self) -> int:
        """Relative offsets (df, dy, dx) inside the window, the current patch included."""
        return (self.f + 1) * (2 * self.h + 1) * (2 * self.w + 1)


class ModelConfig(Strict):
    """Shape of the vision decoder (Eqs. 9 to 13)."""

    vocab_size: int = Field(1024, ge=2, le=1 << 20, description="codebook size of the codec")
    width: int = Field(256, ge=8, description="hidden width D")
    layers: int = Field(4, ge=1, le=64, description="transformer layers L")
    heads: int = Field(4, ge=1, description="attention heads; must divide width")
    patch_h: int = Field(8, ge=1, le=64, description="patch height in tokens")
    patch_w: int = Field(8, ge=1, le=64, description="patch width in tokens")
    extent: Extent = Field(default_factory=Extent, description="NCP extents the model is trained for")
    text_dim: int | None = Field(None, ge=1, description="width of text token states; None: no cross-attention")
    mlp_ratio: int = Field(4, ge=1, le=16, description="feed-forward width as a multiple of D")
    pnar: bool = Field(True, description="also trained for P-NAR local decoding (MaskGIT-style mask-predict "
                       "inside a patch): adds the mask and P-NAR start embeddings")
    rel_bias: bool = Field(True, description="a learned attention bias per layer and head for every token "
                           "displacement (frames, rows, columns) between the token a query predicts and the "
                           "token a key holds, across the whole extent window (a relative position bias in "
                           "token units): copying a still frame or a pan by whole tokens is one number a head "
                           "learns")
    edges: bool = Field(True, description="tell each patch which canvas borders it touches (top, bottom, left, "
                        "right): a learned vector per combination added to the patch's start position, so "
                        "a patch without context knows whether it is sky or ground in a fixed-height frame")
    prev_frame: bool = Field(True, description="each token's input also carries the previous frame's tokens "
                             "at its place and one column to either side (a learned embedding per side; "
                             "'none' in a first frame or image): copying a still frame or following a pan "
                             "of one token per frame becomes a direct path instead of an attention pattern "
                             "the model must discover")
    text_encoder: str = Field("minilm", min_length=1, description="the registered text encoder whose states "
                              "the model cross-attends to: 'minilm' (the prompt's token states) or "
                              "'minilm-phrases' (sentence embeddings of its two-word windows); loading the "
                              "model loads this encoder")
    text_pooled: bool = Field(False, description="the prompt's sentence embedding (its token states mean-pooled "
                              "and l2-normalised, as all-MiniLM-L6-v2 was trained to be used, so paraphrases land "
                              "close together) projected and added to every input position, beside the "
                              "cross-attention over the token states")
    neighbours: bool = Field(True, description="each token on a patch's border also carries the token across "
                             "that border in the same frame, when that patch is already made (a learned "
                             "embedding per side; 'none' otherwise): a border token's own input is the token "
                             "before it in the patch, which for the first column is the far end of the row "
                             "above, so without this the token beside it reaches it only by attention")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ModelConfig":
        if self.width % self.heads:
            raise bad("heads", f"must divide `width` ({self.width})", self.heads)
        if self.text_pooled and self.text_dim is None:
            raise bad("text_pooled", "needs text conditioning (`text_dim`), and text_dim is None", self.text_pooled)
        return self

    @property
    def tokens_per_patch(self) -> int:
        """M: visual tokens in one patch."""
        return self.patch_h * self.patch_w


class SamplingConfig(Strict):
    """How a token is drawn from the logits."""

    temperature: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False,
                               description="0 picks the most likely token")
    top_k: int | None = Field(None, ge=1, description="keep the k most likely tokens")
    top_p: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False,
                                description="keep the smallest set whose probability reaches p")
    guidance: float = Field(1.0, ge=0.0, le=100.0, allow_inf_nan=False,
                            description="classifier-free guidance scale; 1 disables it")
    shown_top_p: float | None = Field(0.9, gt=0.0, le=1.0, allow_inf_nan=False,
                                      description="a token whose place the previous frame shows is drawn only "
                                      "among the conditional model's likeliest tokens reaching this "
                                      "probability (guidance reorders them); None: no such limit")
    local: Literal["ar", "pnar"] = Field("ar", description="local decoder inside a patch: 'ar' one token per "
                                         "step, 'pnar' mask-predict in `pnar_steps` parallel steps "
                                         "(needs a model trained with pnar)")
    pnar_steps: int = Field(4, ge=1, le=64, description="parallel steps per patch of the P-NAR local decoder")
    refine_borders: float | None = Field(None, ge=0.0, le=100.0, allow_inf_nan=False,
                                         description="once a patch is drawn, draw its tokens along the borders "
                                         "with patches already made again, at this temperature, in one P-NAR "
                                         "pass that sees the rest of the patch as well as its context (needs a "
                                         "model trained with pnar); None: no second draw")


# What `streamgen generate` and the live preset sample with, and what `streamgen eval` measures: the 64
# likeliest tokens, classifier-free guidance 3 (and `SamplingConfig.shown_top_p`'s default 0.9). A
# model folder's model.json may lay its own `sampling` fields over it (`Engine.preset`, set by
# `bundle.load`): settings that only some models can run, such as `refine_borders`, go there.
DEFAULT_SAMPLING: dict[str, Any] = dict(top_k=64, guidance=3.0)

# The paper's decoder without the inputs added beyond it (each test turns on what it checks).
_PLAIN = dict(pnar=False, rel_bias=False, edges=False, prev_frame=False, neighbours=False)

PRESETS: dict[str, dict[str, Any]] = {
    # The shape the tests use: tiny, so the suite runs in minutes on two cores.
    "tiny": dict(vocab_size=64, width=32, layers=2, heads=2, patch_h=4, patch_w=4,
                 extent=dict(w=1, h=1, f=1), **_PLAIN),
    # The shape of the engine's speed benchmark (benchmarks/speed.py), kept as measured since 2026-11.
    "bench": dict(vocab_size=1024, width=256, layers=4, heads=4, patch_h=8, patch_w=8,
                  extent=dict(w=1, h=1, f=1), **_PLAIN),
}
