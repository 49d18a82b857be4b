"""Registers the built-in codecs through the ``streamgen_register_codecs`` hook."""
from __future__ import annotations

from streamgen.plugins.hookspecs import hookimpl

from .neural import NeuralCodec
from .palette import PaletteCodec


def palette(weights=None, pg=None, *, vocab_size: int = 512, factor: int = 8) -> PaletteCodec:
    """The palette codec as a registered factory: it has no weights, so ``weights`` and ``pg`` are
    ignored; its 512 colours fit a model of 512 codes (the shipped one)."""
    return PaletteCodec(vocab_size, factor=factor)


@hookimpl
def streamgen_register_codecs(registry) -> None:
    registry.add("palette", palette)
    registry.add("vqgan", NeuralCodec.load)
