"""Registers the built-in codecs through the ``streamgen_register_codecs`` hook."""
from __future__ import annotations

from streamgen.plugins.hookspecs import hookimpl

from .neural import NeuralCodec
from .palette import PaletteCodec


@hookimpl
def streamgen_register_codecs(registry) -> None:
    registry.add("palette", PaletteCodec)
    registry.add("vqgan", NeuralCodec.load)
