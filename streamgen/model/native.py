"""The decode step's layers in C++ (`native_step.cpp`), built on first use.

`Engine.native_step` (``--native-step``) runs `VisionDecoder._extend_one` as one C++ call that
releases Python's lock: the same operators in the same order, so the same frames bit for bit.
A stream alone gains little; streams drawn on several threads of one process (the server's lanes)
stop queueing on the lock between operators. The build needs a C++ compiler and ninja
(``pip install 'streamgen[native]'``); torch keeps it in its extensions folder
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), so only the first use waits for it
(about 35 s of one core here).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from torch import Tensor

from streamgen.errors import ConfigError, one_line

SOURCE = Path(__file__).with_name("native_step.cpp")


@functools.cache
def module() -> Any:
    """The built extension; ConfigError (one line) when it cannot be built here."""
    from torch.utils import cpp_extension

    try:
        return cpp_extension.load(name="streamgen_native_step", sources=[str(SOURCE)], extra_cflags=["-O3"])
    except Exception as exc:  # noqa: BLE001 - a missing compiler, ninja or header: all say the same
        raise ConfigError("`native_step` needs a C++ compiler and ninja (pip install 'streamgen[native]') "
                          f"to build the decode step, but the build failed: {one_line(exc)[:300]}") from None


class NativeStep:
    """A workspace's layers for `native_step.cpp`: the weights and cache views handed over once."""

    def __init__(self, ws: Any, heads: int):
        s = module().Stepper()
        s.weights = [list(w) for w in ws.weights_t]
        s.cross = [list(c) for c in ws.cross_t]
        s.layers, s.keys, s.values, s.heads = ws.layers, ws.keys, ws.values, heads
        self._stepper = s

    def __call__(self, x: Tensor, t0: int, mask: Tensor | None, per_layer: bool, text: Any) -> Tensor:
        if text is None:
            return self._stepper.step(x, t0, mask, per_layer, None, None, None)
        return self._stepper.step(x, t0, mask, per_layer, text.k, text.v, text.mask)
