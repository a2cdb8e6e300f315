"""A TCP forwarder whose listening socket lives in another netns: the pod network
reaches a loopback-only service of the host (the test registry) at a pod-network
address, as a registry on the cluster network would be reached."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from agent.network import netns


class Forward:
    """Listen on ``listen`` inside the netns at ``ns``; forward each connection to
    ``target`` (connected from this process's own netns)."""

    def __init__(self, ns: Path, listen: tuple[str, int], target: tuple[str, int]) -> None:
        def bind() -> socket.socket:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(listen)
            sock.listen(16)
            return sock

        self._listener = netns.run(ns, bind)  # bound in the pod network's netns
        self._target = target
        self._thread = threading.Thread(target=self._accept, name="forward", daemon=True)

    def __enter__(self) -> Forward:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target, timeout=30)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
