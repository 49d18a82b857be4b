"""The options of `streamgen serve` (one ``--option`` per field on the command line)."""
from __future__ import annotations

from pydantic import Field, field_validator

from streamgen.config import Strict


class ServeConfig(Strict):
    host: str = Field("127.0.0.1", description="address to listen on; 0.0.0.0 opens the server to the network")
    port: int = Field(8000, ge=0, le=65535, description="port; 0 takes a free one (the line on stderr says which)")
    model: str | None = Field(None, description="model folder, or 'tiny'; omit it for the shipped model")
    token_file: str | None = Field(None, description="file holding the API token; default: a new token, "
                                   "printed on stderr at start")
    max_streams: int = Field(4, ge=1, le=256, description="streams running at once")
    max_size: str = Field("512x512", pattern=r"^[1-9][0-9]*x[1-9][0-9]*$",
                          description="largest canvas of a stream, WxH in pixels")
    max_fps: float = Field(30.0, gt=0, le=240, allow_inf_nan=False, description="highest frame rate of a stream")
    state_dir: str | None = Field(None, description="folder where SIGTERM saves every stream, and where "
                                  "snapshot commands write (default: --resume's folder); made if missing, "
                                  "and kept to its owner (0700)")
    resume: str | None = Field(None, description="folder of saved streams to bring back at start")
    output_dir: str | None = Field(None, description="folder that streams may write files into (made if "
                                   "missing); without it, outputs are RTMP URLs or the live view only")
    input_dir: str | None = Field(None, description="folder whose files requests may name as input images "
                                  "(the io and ia tasks' `image`); without it, no request reads a file")
    threads: int | None = Field(None, ge=1, le=256, description="torch threads for generation; default torch's")
    fixed_threads: bool = Field(False, description="keep --threads; by default the scheduler also tries one "
                                "thread now and then and keeps the faster count (a busy core slows two)")
    lanes: int | None = Field(None, ge=1, le=64, description="batches a round of several streams is split "
                              "into, each drawn on a thread of its own with one torch thread; default: "
                              "--threads (1: one batch on all the threads)")
    native_step: bool = Field(False, description="run the decode step's layers in C++ without Python's lock, "
                              "so that lanes do not wait on each other (built at start on first use; needs "
                              "a C++ compiler and ninja): the same frames")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("`host` must be an address such as 127.0.0.1")
        return v

    @property
    def max_width_height(self) -> tuple[int, int]:
        w, h = (int(p) for p in self.max_size.split("x"))
        return w, h
