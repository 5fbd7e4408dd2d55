"""TCP_NODELAY on every connection the team app answers under uvicorn: no 40 ms keep-alive stall.

The stall: uvicorn writes a response in two ``send()`` calls, the status line and headers, then
the body. With Nagle's algorithm on, the kernel holds the second small segment until the first
is acknowledged, and a client on a reused keep-alive connection acknowledges late (Linux's
delayed ACK, at least 40 ms). A fresh connection starts in quick-ACK mode, so only reused
connections pay, and MLflow's client reuses its connections: every request after the first
took about 45 ms instead of a few.

asyncio turns Nagle off (``TCP_NODELAY``) only on accepted sockets whose ``proto`` is
``IPPROTO_TCP``, and an accepted socket inherits ``proto`` from the listening socket. uvicorn
before 0.55 creates the listening socket of ``--workers N`` (N > 1, the supervisor binds it and
hands it to the workers; ``mlflow server``'s default is 4) with ``proto`` 0, so those workers
never set it (https://github.com/Kludex/uvicorn/issues/3149); ``--workers 1`` lets asyncio build
the listener from ``getaddrinfo`` (``proto`` 6) and is not affected, nor is uvloop, which sets
``TCP_NODELAY`` on every TCP transport itself. uvicorn 0.55 binds with ``IPPROTO_TCP``, but a
listener it is handed with ``--fd`` (socket activation) is still rebuilt as ``AF_UNIX``, proto 0,
and still loses it.

:func:`no_delay` wraps the ASGI app ``create_app`` returns under uvicorn and sets
``TCP_NODELAY`` on the connection of each request before the app answers it, whatever the
uvicorn version, worker count or event loop. It finds the connection through the ``send``
callable uvicorn hands the outermost app, a bound method of uvicorn's per-request
``RequestResponseCycle``, whose ``transport`` attribute is the connection (uvicorn's h11 and
httptools protocols; read in uvicorn 0.13, 0.40, 0.53, 0.54 and 0.55). If that is not there
(another ASGI server, a future uvicorn) the request goes on untouched: nothing is ever refused or
slowed by this module (it adds about 2 microseconds to a request).
"""

from __future__ import annotations

import inspect
import logging
import socket
from typing import Any, Awaitable, Callable

_logger = logging.getLogger(__name__)

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def connection_socket(send: Send) -> Any:
    """The socket (asyncio's ``TransportSocket`` or uvloop's) of the connection ``send`` answers
    on, or None when ``send`` is not uvicorn's."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    get_extra_info = getattr(transport, "get_extra_info", None)
    return get_extra_info("socket") if callable(get_extra_info) else None


def set_no_delay(sock: Any) -> bool:
    """Turn Nagle's algorithm off on ``sock``; False if it is not a TCP socket or is closing.

    The family is not checked: a socket uvicorn built from ``--fd`` calls itself AF_UNIX
    whatever it is. A real Unix socket refuses the option (EOPNOTSUPP), which is all we need.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError, TypeError, ValueError):
        return False
    return True


class NoDelayMiddleware:
    """The ASGI app, with ``TCP_NODELAY`` set on each HTTP request's connection first.

    One ``setsockopt`` per request (a microsecond; idempotent, and a connection does not tell
    us it is new) rather than bookkeeping per connection.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self._unreachable_logged = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http":
            sock = connection_socket(send)
            if sock is not None:
                set_no_delay(sock)
            elif not self._unreachable_logged:
                self._unreachable_logged = True
                _logger.debug("mlflow-team: the ASGI server's connections are out of reach; "
                              "TCP_NODELAY left as the server set it")
        await self.app(scope, receive, send)


def is_asgi(app: Any) -> bool:
    """An ASGI 3 app is a coroutine function, or an object whose ``__call__`` is one (FastAPI,
    Starlette); a WSGI app (Flask, for gunicorn and waitress) is not."""
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(getattr(app, "__call__", None))


def no_delay(app: Any) -> Any:
    """``app`` wrapped in :class:`NoDelayMiddleware` if it is an ASGI app (what ``mlflow server``
    runs under uvicorn, its default); a WSGI app is returned as it is."""
    if isinstance(app, NoDelayMiddleware) or not is_asgi(app):
        return app
    return NoDelayMiddleware(app)
