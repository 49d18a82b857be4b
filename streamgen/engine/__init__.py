"""The engine: the generation loop (`core`), the Arbitrary Direction Controller (`adc`), the Nearby
Context Pool (`ncp`), token sampling (`sampling`) and snapshots of running streams (`snapshot`).

It is the only part of streamgen that knows the model, the codec, the tasks and the pool together.
"""
from streamgen.engine.core import Engine, Frame, StreamRequest, StreamState, StreamStats, TokenFrame, TokenPart
from streamgen.engine.strips import Strip

__all__ = ["Engine", "Frame", "StreamRequest", "StreamState", "StreamStats", "Strip", "TokenFrame", "TokenPart"]
