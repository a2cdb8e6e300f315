"""Test stand-ins for QEMU's side of the tap and for the workloads at either end.

``Relay`` copies frames between the pod netns's tap fd and a second tap in a "guest"
netns (both with the vnet header, so frames pass verbatim): a user-space wire that
plays the VM's virtio-net, so the guest-side configuration can be exercised with the
host kernel. ``SERVER`` is a tiny HTTP server answering ``<token> <client address>``.
"""

from __future__ import annotations

import errno
import os
import select
import sys
import threading

SERVER = """
import http.server, sys
token = sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{token} {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H)
print("listening", flush=True)
s.serve_forever()
"""

FETCH = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())
"""

# ICMP echo without iputils: ``PING host count size`` prints how many replies came back.
PING = """
import os, socket, struct, sys, time
host, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(5)
ident, got = os.getpid() & 0xFFFF, 0
def checksum(b):
    b += b"\\0" * (len(b) % 2)
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF
for seq in range(count):
    body = struct.pack("!HH", ident, seq) + b"x" * size
    s.sendto(struct.pack("!BBH", 8, 0, checksum(b"\\x08\\0\\0\\0" + body)) + body, (host, 0))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            data, _ = s.recvfrom(65536)
        except TimeoutError:
            break
        icmp = data[(data[0] & 0xF) * 4:]
        if icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
            got += 1
            break
print(got, flush=True)
"""


def ping_argv(host: str, count: int, size: int = 56) -> list[str]:
    return [sys.executable, "-c", PING, host, str(count), str(size)]


def server_argv(host: str, port: int, token: str) -> list[str]:
    return [sys.executable, "-c", SERVER, host, str(port), token]


def fetch_argv(url: str) -> list[str]:
    return [sys.executable, "-c", FETCH, url]


class Relay:
    """Copy frames both ways between two tap fds on a thread until stopped."""

    def __init__(self, a: int, b: int) -> None:
        self._fds = (a, b)
        self._stop_r, self._stop_w = os.pipe()
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name="tap-relay", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        os.close(self._stop_r)
        os.close(self._stop_w)

    def _run(self) -> None:
        a, b = self._fds
        while True:
            ready, _, _ = select.select([a, b, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for fd in ready:
                frame = os.read(fd, 65536)
                try:
                    os.write(b if fd == a else a, frame)
                except OSError as err:  # EIO: that tap is down; a wire drops the frame
                    if err.errno != errno.EIO:
                        raise
                    continue
                self.frames += 1
