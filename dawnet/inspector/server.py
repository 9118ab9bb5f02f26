"""Start and stop the inspector's web server (uvicorn): in the foreground (CLI) or a thread (Jupyter).

The socket is bound before uvicorn starts, so ``port=0`` picks a free port and the URL is known at once.
Binding
an address other than loopback requires a token: one is generated (as Jupyter does) unless given, and the
printed URL carries it.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from pathlib import Path

from dawnet.inspector.app import LOOPBACK_HOSTS, MAX_BODY, check_token, create_app
from dawnet.inspector.session import Session

__all__ = ["InspectorServer", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class InspectorServer:
    """A uvicorn server for one :class:`Session`.

    Args:
        host: the address to bind (default loopback); any other address needs a token.
        port: 0 picks a free port.
        token: ``None`` generates one where needed (non-loopback); ``""`` is refused off loopback; a string is
            used as given (also on loopback, to protect a shared machine).
        data_root: the only folder whose files clients may name by path.
    """

    def __init__(
        self,
        session: Session,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_body: int = MAX_BODY,
        data_root: str | Path | None = None,
    ):
        loopback = is_loopback(host)
        check_token(token)
        if token is None and not loopback:
            token = secrets.token_urlsafe(24)
        if not loopback and not token:
            raise ValueError(
                f"binding {host} exposes the inspector to the network: it needs a token (leave token "
                "unset to generate one)"
            )
        self.session, self.host, self.token = session, host, token or None
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP; with
        # proto 0 every JSON answer (headers and body written apart) waits ~40 ms for a delayed ACK
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host.strip("[]"), port))
            self._sock.listen(128)  # connections made before uvicorn starts wait in the backlog
        except OSError as e:
            self._sock.close()
            raise OSError(
                f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port (0: any free one)"
            ) from None
        self.port = self._sock.getsockname()[1]
        hosts = LOOPBACK_HOSTS if loopback else None
        self.app = create_app(
            session, token=self.token, allowed_hosts=hosts, max_body=max_body, data_root=data_root
        )
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's URL (with the token when there is one)."""
        host = self.host if self.host not in ("0.0.0.0", "::", "[::]") else socket.gethostname()
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def _uvicorn(self):
        import uvicorn

        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        return self._server

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (the CLI)."""
        self._uvicorn().run(sockets=[self._sock])

    def start(self, timeout: float = 20.0) -> InspectorServer:
        """Serve in a daemon thread (Jupyter); returns once the server accepts connections."""
        server = self._uvicorn()
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [self._sock]},
            daemon=True,
            name=f"dawnet-inspector-{self.port}",
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the inspector server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> InspectorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
