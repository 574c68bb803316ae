"""Local ports: is one free, and who holds it (light; the doctor and the launcher share these)."""

from __future__ import annotations

import socket
import sys


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now, tried the way the server binds it.

    gradio / uvicorn set ``SO_REUSEADDR`` on POSIX, so a port held only by TIME_WAIT / FIN_WAIT
    sockets (a browser tab that was open when the last UI stopped) is free for them and for us.
    On Windows ``SO_REUSEADDR`` would let two listeners share a port, so the plain bind (exclusive)
    is the right test there.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        elif hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
        try:
            sock.bind((host.strip("[]"), port))
            if sys.platform != "win32":
                sock.listen(1)  # with SO_REUSEADDR, only listen() fails against another listener
        except OSError:
            return False
    return True


def port_owner(port: int) -> str:
    """Who listens on a local TCP port, where the OS lets us see it."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"PID {conn.pid} ({proc.name()}: {' '.join(proc.cmdline()[:4])})"
    except Exception:  # noqa: BLE001 - access denied on some OSes (macOS without root)
        pass
    return "another process (the OS did not say which)"
