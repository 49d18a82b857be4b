"""The HTTP API and the page of `streamgen serve` (FastAPI; its OpenAPI schema at ``/openapi.json``).

Reads are open to whoever can reach the server (it binds to 127.0.0.1 unless told otherwise):
``GET /``, ``GET /streams``, ``GET /streams/{id}``, ``GET /load`` and the live view's WebSocket.
Every call that changes something needs ``Authorization: Bearer TOKEN`` and gets 401 without it. No
CORS headers are sent, so another site's page can neither read answers nor send the token's header;
the WebSocket refuses an Origin other than the server's own, and requests naming another Host are
refused (DNS rebinding). Bad requests get 4xx with the command line's one-line messages.
"""
from __future__ import annotations

import asyncio
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Body, Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.websockets import WebSocketDisconnect

from streamgen.errors import StreamgenError, from_errors
from streamgen.serve.scheduler import Stopping
from streamgen.serve.streams import NewStream, NotFound, Streams, TooMany

STATIC = Path(__file__).resolve().parent / "static"
HEADERS = {"Content-Security-Policy": "default-src 'self'; media-src 'self' blob:; connect-src 'self'",
           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
READS = ("GET", "HEAD", "OPTIONS")
UNAUTHORISED = ("a call that changes something needs `Authorization: Bearer TOKEN` with the token the server "
                "printed at start (or read from its --token-file)")
NOT_JSON = ("model_attributes_type", "dict_type", "missing")
COMMAND_EXAMPLES = {"prompt": {"value": {"prompt": "the same hills at night"}},
                    "sampling": {"value": {"sampling": {"temperature": 0.8}}},
                    "snapshot": {"value": {"snapshot": True}}, "stop": {"value": {"stop": True}}}


def authorised(header: str, token: str) -> bool:
    """Whether an Authorization header carries ``token`` (compared in constant time)."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


def create_app(streams: Streams, token: str, *, hosts: list[str] | None = None,
               resume: Path | None = None, ready: Any = None) -> FastAPI:
    """The app over ``streams``; ``hosts`` the Host names it answers to (None: any), ``resume`` a
    state folder whose streams come back at start, ``ready()`` called once they are back."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        streams.start()
        if resume is not None:
            await streams.resume(resume)
        if ready is not None:
            ready()
        yield
        await asyncio.to_thread(streams.shutdown)

    app = FastAPI(title="streamgen serve", summary="live video streams, steered over HTTP", lifespan=lifespan)
    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    # documents the scheme in the OpenAPI schema; `guard` enforces it, before a body is read
    bearer = Depends(HTTPBearer(auto_error=False, description="the token printed at start, or --token-file's"))

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if request.method not in READS and not authorised(request.headers.get("authorization", ""), token):
            response: Any = JSONResponse({"detail": UNAUTHORISED}, status_code=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        else:
            response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    @app.exception_handler(StreamgenError)
    async def refused(request: Request, exc: StreamgenError) -> JSONResponse:
        code = 404 if isinstance(exc, NotFound) else 429 if isinstance(exc, TooMany) else \
            503 if isinstance(exc, Stopping) else 400
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{**e, "loc": [p for p in e.get("loc", ()) if p != "body"]} for e in exc.errors()]
        if any(e.get("type") == "json_invalid" or (not e["loc"] and e.get("type") in NOT_JSON) for e in errors):  # the raw body is not echoed
            return JSONResponse({"detail": "the body must be a JSON object, sent with Content-Type: "
                                 "application/json"}, status_code=400)
        return JSONResponse({"detail": str(from_errors(errors))}, status_code=400)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/streams", summary="every stream and its status")
    async def list_streams() -> dict[str, Any]:
        return {"streams": [live.status() for live in streams.lives.values()]}

    @app.get("/load", summary="what this server carries, for whoever places streams")
    async def load() -> dict[str, Any]:
        return streams.load()

    @app.post("/streams", status_code=201, dependencies=[bearer], summary="start a stream")
    async def create(spec: NewStream) -> dict[str, Any]:
        return (await streams.create(spec)).status()

    @app.get("/streams/{id}", summary="a stream's status: frames, frames/s, lag, outputs, viewers")
    async def status(id: str) -> dict[str, Any]:
        return streams.get(id).status()

    @app.patch("/streams/{id}", dependencies=[bearer],
               summary="steer a stream: prompt, sampling, snapshot, stop (the control channel's commands)")
    async def steer(id: str, command: Any = Body(..., openapi_examples=COMMAND_EXAMPLES)) -> dict[str, Any]:
        live = streams.get(id)
        done = streams.command(live, command)
        streams.scheduler.wake()
        return {"ok": done, "stream": live.status()}

    @app.delete("/streams/{id}", dependencies=[bearer], summary="stop a stream and forget it")
    async def delete(id: str) -> dict[str, Any]:
        return await streams.delete(streams.get(id))

    @app.websocket("/streams/{id}/video")
    async def video(ws: WebSocket, id: str) -> None:
        """The live view: binary messages, each a 4-byte header length, a JSON header and MP4 bytes
        (the init segment, then one fragment a frame), for Media Source Extensions."""
        origin = ws.headers.get("origin")
        if (origin and urlsplit(origin).netloc != ws.headers.get("host")) or id not in streams.lives:
            await ws.close(code=1008)
            return
        await ws.accept()
        channel = streams.lives[id].channel
        viewer = channel.join()

        async def until_closed() -> None:
            try:
                while (await ws.receive())["type"] != "websocket.disconnect":
                    pass
            except (RuntimeError, OSError):
                pass
            finally:
                viewer.put(None)

        watcher = asyncio.create_task(until_closed())
        try:
            while (item := await viewer.get()) is not None:
                await ws.send_bytes(item)
            await ws.close()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the viewer went away; the stream goes on
        finally:
            channel.leave(viewer)
            watcher.cancel()

    return app
