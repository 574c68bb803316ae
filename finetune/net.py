"""Local ports: is one free, and who holds it (light; the doctor and the launcher share these)."""

from __future__ import annotations

import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (like gradio will)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host.strip("[]"), port))
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
