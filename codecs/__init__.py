"""Codecs between frames and visual tokens, imported as ``streamgen.codecs``."""
from .palette import PaletteCodec

__all__ = ["PaletteCodec"]
