"""Ports for the services the tests and the benchmark start."""

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now on host (loopback by default)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """count distinct ports nothing listens on right now on host."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:
            ports.append(port)
    return ports


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """Whether port can be bound on host right now (on every interface by default)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
