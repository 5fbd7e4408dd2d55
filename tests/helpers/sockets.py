"""The server's end of a client's TCP connection on 127.0.0.1, to read its socket options (Linux).

The client knows its own end; the kernel's table of TCP sockets (``/proc/net/tcp``) gives the
inode of the other end, ``/proc/<pid>/fd`` the process and descriptor that hold it, and
``pidfd_getfd(2)`` a copy of that descriptor: the very socket the server writes its responses
to, in this process or another one (an ``mlflow server`` worker started by the test).
"""

from __future__ import annotations

import ctypes
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_SYS_PIDFD_GETFD = 438  # the same number on every architecture (a syscall newer than the split)


def available() -> str | None:
    """None, or why the server's end cannot be read here."""
    if not Path("/proc/net/tcp").exists() or not hasattr(os, "pidfd_open"):
        return "needs Linux's /proc/net/tcp and pidfd_open (Python 3.9, Linux 5.3)"
    return None


def _hex_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"


def _inode(local: tuple[str, int], remote: tuple[str, int]) -> str | None:
    """The inode of the IPv4 TCP socket with this local and remote address."""
    wanted = (_hex_address(local), _hex_address(remote))
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == wanted:
            return fields[9]
    return None


def _holder(inode: str) -> tuple[int, int] | None:
    """(pid, fd) of a process holding the socket with this inode."""
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == target:
                    return int(proc.name), int(fd.name)
        except OSError:  # a process that exited, or one we may not look into
            continue
    return None


def _copy_fd(pid: int, fd: int) -> int:
    if pid == os.getpid():
        return os.dup(fd)
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"pidfd_getfd({pid}, {fd}): {os.strerror(error)}")
        return copy
    finally:
        os.close(pidfd)


@contextmanager
def server_end(client: socket.socket) -> Iterator[socket.socket]:
    """The server's socket of the connection ``client`` (connected, IPv4) is the other end of."""
    inode = _inode(client.getpeername(), client.getsockname())
    holder = _holder(inode) if inode else None
    if holder is None:
        raise LookupError(f"no process holds the server's end of {client.getsockname()} -> {client.getpeername()}")
    sock = socket.socket(fileno=_copy_fd(*holder))
    try:
        yield sock
    finally:
        sock.close()


def server_no_delay(client: socket.socket) -> bool:
    """Is Nagle's algorithm off (TCP_NODELAY) on the server's end of ``client``'s connection?"""
    with server_end(client) as sock:
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
