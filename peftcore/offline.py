"""Keep a run offline: hub libraries told so, and any non-loopback connection refused and noted.

The embedded defaults need no network. ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` make the hub
libraries use local files only; the socket guard catches anything that tries anyway (a library
that ignores those variables, a metric script fetched by name) and keeps a list of what it
refused, so a session can fail on it even when the caller swallowed the error.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def set_offline_env() -> None:
    """Offline unless the user set these variables themselves."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class NetworkGuard:
    """Refuses connections to anything but loopback and Unix sockets while installed."""

    attempts: list[str] = field(default_factory=list)
    _saved: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def install(self) -> NetworkGuard:
        if self._saved:
            return self
        self._saved = {
            "connect": socket.socket.connect,
            "connect_ex": socket.socket.connect_ex,
            "getaddrinfo": socket.getaddrinfo,
        }
        guard = self
        real_connect = self._saved["connect"]
        real_connect_ex = self._saved["connect_ex"]
        real_getaddrinfo = self._saved["getaddrinfo"]

        def check(sock: socket.socket, address: Any) -> None:
            if sock.family == getattr(socket, "AF_UNIX", None):
                return
            host = address[0] if isinstance(address, tuple) and address else address
            if not _is_local(host):
                guard.attempts.append(f"connect to {address!r}")
                raise ConnectionRefusedError(f"peftcore: network access is disabled (tried {address!r})")

        def connect(sock: socket.socket, address: Any) -> Any:
            check(sock, address)
            return real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> Any:
            check(sock, address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host is not None and not _is_local(host):
                guard.attempts.append(f"name lookup of {host!r}")
                raise socket.gaierror(socket.EAI_NONAME, f"peftcore: network access is disabled ({host!r})")
            return real_getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = connect  # type: ignore[method-assign,assignment]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
        socket.getaddrinfo = getaddrinfo
        return self

    def uninstall(self) -> None:
        if not self._saved:
            return
        socket.socket.connect = self._saved["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = self._saved["connect_ex"]  # type: ignore[method-assign]
        socket.getaddrinfo = self._saved["getaddrinfo"]
        self._saved = {}
