"""The inspector's ASGI app (Starlette): the page, its static files and a small JSON API over a Session.

Every answer is JSON (errors too: ``{"error": message}`` with a 4xx/5xx status), and no bad request stops the
server. Guards, outermost first: the token (when one is set: header ``X-Dawnet-Token``, cookie, or
``?token=``), the Host header (without a token only loopback names are served, which stops DNS-rebinding
pages), the body size limit, and JSON endpoints that insist on ``Content-Type: application/json`` so that a
cross-site form cannot post
to them. Client-sent paths are read only inside the data folder the server was started with.

API (all under ``/api``)::

    GET  info                     model, layers, sliders, colour maps
    GET  samples?offset=&limit=   data set items
    GET  state                    the current update (image, maps, output, per-channel change, timings)
    POST sample   {"index": i} | {"path": "rel/path.png"}     start from a data set image
    POST upload   <image bytes>  (?to=source: the image regions are cut from)
    POST source   {"index": i} | {"path": ...} | {"current": true}
    POST edit     {"op": "stroke", "points": [[y, x], ...], "width": 3, "mode": "pen"|"eraser"}
                  {"op": "erase", "box": [y0, x0, y1, x1]} | {"op": "paste", "box": [...], "at": [y, x]}
                  {"op": "undo"} | {"op": "reset"}
    POST view     {"layer", "rank": "active"|"changed"|"list", "count", "channels", "scale", "augment": {...}}
    POST rf       {"layer", "position": [row, col] | [step]}
    POST top      {"layer", "channel", "k"}
    GET  image.png                the current (edited, augmented) image
"""

from __future__ import annotations

import html
import json
import logging
import secrets
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dawnet.inspector.errors import InspectorError
from dawnet.inspector.images import decode_image, png_bytes
from dawnet.inspector.session import Session

__all__ = ["create_app", "check_token", "MAX_BODY", "TOKEN_HEADER", "TOKEN_COOKIE"]

STATIC = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024 * 1024  # bytes; an image upload is the largest request
TOKEN_HEADER = "x-dawnet-token"
TOKEN_COOKIE = "dawnet_inspector_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # the page loads nothing from elsewhere: no CDN, works offline; images are data: URLs
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        b"script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'",
    ),
]
log = logging.getLogger("dawnet.inspector")


class _BodyTooLarge(InspectorError):
    pass


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


class Guard:
    """Pure ASGI middleware: token, Host header and body size checks before the app sees a request."""

    def __init__(self, app, token: str | None, allowed_hosts: tuple[str, ...] | None, max_body: int):
        self.app, self.token, self.max_body = app, token, max_body
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self._refuse(scope, headers)
        if problem is not None:
            return await _json_error(*problem)(scope, receive, send)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return await _json_error(400, f"invalid Content-Length {length!r}")(scope, receive, send)
            if int(length) > self.max_body:
                return await _json_error(
                    413,
                    f"the request body is {int(length):,} bytes, over the limit of "
                    f"{self.max_body:,}; send a smaller image",
                )(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # chunked uploads have no Content-Length to check up front
                    raise _BodyTooLarge(
                        f"the request body is over the limit of {self.max_body:,} bytes; send a "
                        "smaller image",
                        status=413,
                    )
            return message

        async def secured_send(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, limited_receive, secured_send)

    def _refuse(self, scope, headers: dict) -> tuple[int, str] | None:
        if self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:  # a malformed cookie header is no token
                cookie = SimpleCookie()
            given = (
                headers.get(TOKEN_HEADER)
                or (query.get("token") or [None])[0]
                or (cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None)
            )
            if not given:
                return 403, (
                    "this inspector needs its token: open the URL it printed (with ?token=...), or send "
                    "the X-Dawnet-Token header"
                )
            if not secrets.compare_digest(given.encode("utf-8", "replace"), self.token.encode()):
                return 403, "wrong token: use the URL the inspector printed when it started"
        if self.allowed_hosts is not None:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed_hosts:
                return 403, (
                    f"Host {host!r} is not served: open the inspector at http://127.0.0.1 (or start it "
                    "with a token on another address)"
                )
        return None


def check_token(token: str | None) -> None:
    """Refuse a token that is blank or has spaces or control characters: HTTP clients strip a header's surrounding
    blanks, so such a token would lock everyone out (or, all blank, guard nothing)."""
    if token is None or token == "":
        return
    if not token.strip():
        raise ValueError("the token is blank: give a token of visible characters (or none to generate one)")
    if any(not c.isprintable() or c.isspace() for c in token):
        raise ValueError(f"the token {token!r} holds spaces or control characters: give one of visible characters")


async def _body_json(request: Request) -> dict:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise InspectorError(
            f"send a JSON body with Content-Type: application/json (got {ctype or 'none'!r})", status=415
        )
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InspectorError(f"the body is not valid JSON: {e}") from None
    except RecursionError:  # a RuntimeError: without this it would answer 500
        raise InspectorError(
            "the JSON body is nested too deeply; the API takes flat objects like {\"op\": \"undo\"}"
        ) from None
    if not isinstance(body, dict):
        raise InspectorError(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InspectorError(f"{name} must be an integer, got {value!r}")
    return value


def create_app(
    session: Session,
    *,
    token: str | None = None,
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS,
    max_body: int = MAX_BODY,
    data_root: str | Path | None = None,
) -> Guard:
    """The ASGI app for ``session``.

    Args:
        token: required on every request when set (header, cookie or ``?token=``); ``None``: no token.
        allowed_hosts: Host header names served (``None``: any; use it only together with a token).
        max_body: the largest request body in bytes.
        data_root: the only folder whose files a client may name by path (``None``: no paths accepted).
    """
    check_token(token)
    root = Path(data_root).resolve() if data_root is not None else None

    def resolve(rel: Any) -> Path:
        """A client-sent path, read only when it lies inside ``data_root`` (links and ``..`` resolved)."""
        if root is None:
            raise InspectorError(
                "this inspector was started without --data: there is no folder to read paths from", status=404
            )
        if not isinstance(rel, str) or not rel or "\x00" in rel:
            raise InspectorError("path must be a non-empty string relative to the data folder")
        target = (root / rel).resolve()
        if not target.is_relative_to(root):
            raise InspectorError(
                f"path {rel!r} lies outside the data folder; give a path inside it", status=403
            )
        if not target.is_file():
            raise InspectorError(f"no file {rel!r} in the data folder", status=404)
        return target

    def read_path(rel: Any):
        target = resolve(rel)
        return decode_image(target.read_bytes(), session.max_pixels, name=str(target.relative_to(root)))

    async def index(request: Request) -> Response:
        page = (STATIC / "index.html").read_text(encoding="utf-8")
        if token is not None:
            # The Guard checked the token. The page's own links carry it too: in a Jupyter iframe the page is
            # cross-site to the notebook, and browsers hold back SameSite cookies there.
            q = "?token=" + quote(token, safe="")
            for link in ('href="static/app.css"', 'src="static/app.js"', 'href="api/image.png"'):
                page = page.replace(link, link[:-1] + html.escape(q) + '"')
        response = HTMLResponse(page, headers={"cache-control": "no-store"})
        if token is not None:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    async def info(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.info))

    async def samples(request: Request) -> Response:
        try:
            offset = int(request.query_params.get("offset", 0))
            limit = int(request.query_params.get("limit", 100))
        except ValueError:
            raise InspectorError("offset and limit must be integers") from None
        if offset < 0 or not 1 <= limit <= 1000:
            raise InspectorError("offset must be >= 0 and limit in 1..1000")
        return JSONResponse(session.samples_page(offset, limit))

    async def state(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.update))

    def _pick_image(body: dict):
        if "index" in body:
            index = _int(body["index"], "index")
            if not session.samples:
                raise InspectorError("no data set: start the inspector with --data DIR", status=404)
            if not 0 <= index < len(session.samples):
                raise InspectorError(
                    f"sample {index} does not exist: the data set has {len(session.samples)} samples",
                    status=404,
                )
            return session.sample_image(index), session.samples[index].name
        if "path" in body:
            return read_path(body["path"]), str(body["path"])
        raise InspectorError('give {"index": i} (a data set sample) or {"path": "relative/path.png"}')

    async def sample(request: Request) -> Response:
        body = await _body_json(request)

        def work():
            im, name = _pick_image(body)
            session.set_base(im, name)
            return session.update()

        return JSONResponse(await run_in_threadpool(work))

    async def upload(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise InspectorError(
                f"send the image's bytes as the body with an image/* or application/octet-stream "
                f"Content-Type (got {ctype or 'none'!r})",
                status=415,
            )
        to = request.query_params.get("to", "main")
        if to not in ("main", "source"):
            raise InspectorError(f"to must be 'main' or 'source', got {to!r}")
        data = await request.body()
        name = request.headers.get("x-filename", "upload")[:200]

        def work():
            im = decode_image(data, session.max_pixels)
            if to == "source":
                return session.set_source(im, name)
            session.set_base(im, name)
            return session.update()

        return JSONResponse(await run_in_threadpool(work))

    async def source(request: Request) -> Response:
        body = await _body_json(request)

        def work():
            if body.get("current") is True:
                return session.set_source(None, "")
            im, name = _pick_image(body)
            return session.set_source(im, name)

        return JSONResponse(await run_in_threadpool(work))

    async def edit(request: Request) -> Response:
        body = await _body_json(request)

        def work():
            session.apply_op(body)
            return session.update()

        return JSONResponse(await run_in_threadpool(work))

    async def view(request: Request) -> Response:
        body = await _body_json(request)

        def work():
            session.set_view(body)
            return session.update()

        return JSONResponse(await run_in_threadpool(work))

    async def rf(request: Request) -> Response:
        body = await _body_json(request)
        layer = body.get("layer", session.view.layer)
        return JSONResponse(await run_in_threadpool(session.receptive_field, layer, body.get("position")))

    async def top(request: Request) -> Response:
        body = await _body_json(request)
        layer = body.get("layer", session.view.layer)
        return JSONResponse(
            await run_in_threadpool(session.top_patches, layer, body.get("channel"), body.get("k", 9))
        )

    async def image_png(request: Request) -> Response:
        return Response(await run_in_threadpool(lambda: png_bytes(session.current_image())), media_type="image/png")

    async def inspector_error(request: Request, exc: InspectorError) -> Response:
        return _json_error(exc.status, str(exc))

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = {
            404: f"no such page or endpoint: {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, exc.detail)
        return _json_error(exc.status_code, message)

    async def bad_input(request: Request, exc: Exception) -> Response:
        # what the model or dawnet.diagnose refused (a layer name, an image the model cannot read): the
        # message
        # names the problem; the server goes on serving
        log.warning("inspector: %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        status = 500 if isinstance(exc, RuntimeError) else 400
        return _json_error(status, f"{type(exc).__name__}: {str(exc).strip() or 'no message'}")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("inspector: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _json_error(500, f"internal error ({type(exc).__name__}: {exc}); the server keeps running")

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # browsers ask; nothing to show
        Route("/api/info", info),
        Route("/api/samples", samples),
        Route("/api/state", state),
        Route("/api/sample", sample, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/source", source, methods=["POST"]),
        Route("/api/edit", edit, methods=["POST"]),
        Route("/api/view", view, methods=["POST"]),
        Route("/api/rf", rf, methods=["POST"]),
        Route("/api/top", top, methods=["POST"]),
        Route("/api/image.png", image_png),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            InspectorError: inspector_error,
            HTTPException: http_error,
            ValueError: bad_input,
            KeyError: bad_input,
            TypeError: bad_input,
            IndexError: bad_input,
            RuntimeError: bad_input,
            Exception: server_error,
        },
    )
    return Guard(app, token=token, allowed_hosts=allowed_hosts if token is None else None, max_body=max_body)
