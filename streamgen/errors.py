"""The project's exceptions: every error a user can cause is a `StreamgenError`.

Messages name the parameter, the rule it broke and the value it had, so a user can fix the input
without reading a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic


class StreamgenError(Exception):
    """Base class of every error streamgen raises on purpose."""


class ConfigError(StreamgenError, ValueError):
    """A parameter, request or config value breaks a rule."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name if it has none): for logs and answers."""
    return " ".join(str(exc).split()) or type(exc).__name__


def inside(folder: Path, name: str | Path, param: str, what: str) -> Path:
    """The path of ``name`` in ``folder`` (the server's ``what`` folder), or a `ConfigError` naming
    ``param`` for a name that leaves it: absolute, with .., or through a link out of it."""
    path = Path(name)
    where = (folder / path).resolve()
    if str(name) in ("", "-") or path.is_absolute() or ".." in path.parts or not where.is_relative_to(folder.resolve()):
        raise bad(param, f"must be a file name inside the server's {what} folder (no absolute path, no ..)", str(name))
    return where


def bad(param: str, rule: str, value: Any) -> ConfigError:
    """The standard message: ``param`` must satisfy ``rule`` but is ``value``."""
    return ConfigError(f"`{param}` {rule}, but got {value!r}")


def from_validation_error(exc: pydantic.ValidationError, prefix: str = "") -> ConfigError:
    """Turn pydantic's report into one `ConfigError` line per broken field."""
    return from_errors(exc.errors(include_url=False), prefix)


def from_errors(errors: list[dict[str, Any]], prefix: str = "") -> ConfigError:
    """One `ConfigError` from pydantic's list of errors (``loc``, ``msg``, ``input`` each), as a web
    framework that validates with pydantic reports them."""
    parts = []
    for err in errors:
        own = (err.get("ctx") or {}).get("error")
        if isinstance(own, StreamgenError):  # a validator's own message names its parameter already
            parts.append(f"{prefix}: {own}" if prefix else str(own))
            continue
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        if prefix:
            loc = f"{prefix}.{loc}"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        value = err.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        parts.append(f"`{loc}`: {msg} (got {shown})")
    return ConfigError("; ".join(parts))
