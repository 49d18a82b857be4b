"""Finding a model: the weights shipped in the package, a folder of checkpoints, or a tiny random one.

A model folder holds ``model.safetensors`` (the vision decoder), ``vqgan.safetensors`` and optionally
``pg.safetensors`` (the codec and its pixel-guided decoder), each with its JSON config beside it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from streamgen import checkpoint as ckpt
from streamgen.config import DEFAULT_SAMPLING, ModelConfig, SamplingConfig, parse
from streamgen.engine import Engine
from streamgen.errors import ConfigError
from streamgen.model import VisionDecoder

SHIPPED = Path(__file__).resolve().parent / "weights"


def load_model(path: str | Path) -> VisionDecoder:
    cfg, _ = ckpt.read_config(path, ModelConfig)
    model = VisionDecoder(cfg)
    ckpt.load_state(model, ckpt.read(path), path)
    return model.eval()


def model_preset(path: str | Path) -> dict[str, Any]:
    """The sampling preset of the model checkpoint ``path``: `DEFAULT_SAMPLING` with the fields of its
    config record's ``sampling`` laid over it (a ConfigError names the file if they are not valid)."""
    _, info = ckpt.read_config(path, ModelConfig)
    own = info.get("sampling", {})
    where = str(ckpt.config_path(path))
    if not isinstance(own, dict):
        raise ConfigError(f"`sampling` in {where} must be an object of SamplingConfig fields, but got {own!r}")
    preset = {**DEFAULT_SAMPLING, **own}
    try:
        parse(SamplingConfig, preset, prefix="sampling")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return preset


def load(path: str | Path | None = None, *, text_encoder: str | None = None, codec: str = "vqgan") -> Engine:
    """An `Engine` ready to generate: ``None`` loads the model shipped inside the package, a folder
    path another model (``model.safetensors``, ``vqgan.safetensors``, optionally ``pg.safetensors``,
    each with its JSON config), ``"tiny"`` a random tiny model for trying the plumbing.

    The engine carries the model's text encoder (``text_encoder``, a registered name; None: the one
    its config names) and its sampling preset (`Engine.preset`), so
    ``streamgen.load().run("t2v", prompt=...)`` gives the frames ``streamgen generate --task t2v
    --prompt ...`` gives. ``codec`` names the registered codec factory that reads the folder's codec
    weights.
    """
    spec = path
    codec_name = codec
    from streamgen.plugins import manager

    if spec == "tiny":
        from streamgen.testing import HashTextEncoder, tiny_engine

        eng = tiny_engine(text_dim=8)
        eng.text_encoder = HashTextEncoder(8)
        return eng
    folder = Path(spec) if spec is not None else SHIPPED
    if not (folder / "model.safetensors").is_file():
        if spec is None:
            raise ConfigError("this installation ships no default model yet: pass `--model DIR` "
                              "(a folder with model.safetensors and vqgan.safetensors) or `--model tiny`")
        raise ConfigError(f"`model` must be a folder holding model.safetensors, but got {str(folder)!r}")
    model = load_model(folder / "model.safetensors")
    preset = model_preset(folder / "model.safetensors")
    pg = folder / "pg.safetensors"
    # the codec comes through the plugin registry, so a plugin can replace "vqgan" with its own
    codec = manager().codecs.get(codec_name)(folder / "vqgan.safetensors", pg if pg.is_file() else None)
    encoder = None
    if model.cfg.text_dim is not None:
        encoder = manager().text_encoders.get(text_encoder or model.cfg.text_encoder)()
    engine = Engine(model, codec, encoder)
    engine.preset = preset
    try:  # a preset this model cannot run (refine_borders without pnar) fails here, naming the file
        engine.check_settings(SamplingConfig(**preset))
    except ConfigError as exc:
        raise ConfigError(f"{ckpt.config_path(folder / 'model.safetensors')}: {exc}") from None
    return engine
