"""
Clients that stop making progress without being idle in h2o's sense: an HTTP/1.1 or HTTP/2
client that never reads its answers, an HTTP/2 stream whose flow-control window is zero. They
must not hold a connection (and a server.max_connections slot) past idle_timeout_ms.
"""

import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402
from test_hostile_clients import H2_PREFACE, h2_frame, h2_request_block  # noqa: E402

REQUIRED_TOOLS = ("curl",)
IDLE_MS = 1000
MAX_CONN = 10


def answered(s):
    """Whether the daemon has sent anything on s (peeked, so the client still reads nothing)."""
    try:
        return len(s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)) > 0
    except BlockingIOError:
        return False


class StuckClientsTest(h.RLTestCase):
    def setUp(self):
        super().setUp()
        self.port = h.free_port()
        cfg = h.base_config(self.port, server={"idle_timeout_ms": IDLE_MS, "max_connections": MAX_CONN})
        self.d = self.daemon(cfg, port=self.port)

    def assert_slots_come_back(self, open_stuck, what):
        """Fills every connection slot with open_stuck(i)'s sockets, then requires that another
        client is served again within a few idle timeouts while they stay open.

        Each stuck socket must have been answered (bytes in its receive queue, peeked, not read)
        before the probe: one loop thread per listener accepts on its own, so a probe could
        otherwise be accepted before a stuck connection still waiting in another thread's backlog,
        and be served with no watchdog at all (1 run in 4 under load before this wait)."""
        held = []
        try:
            for i in range(MAX_CONN):
                s = open_stuck(i)
                held.append(s)
                self.assertTrue(h.wait_until(lambda: answered(s), 5.0),
                                "%s %d: the daemon never answered on it" % (what, i))
            served = h.wait_until(lambda: h.status_of(self.port, "/healthz", timeout=1) == 200,
                                  IDLE_MS / 1000 * 3 + 3)
            self.assertTrue(served, "%d %s locked everyone else out" % (MAX_CONN, what))
        finally:
            for s in held:
                s.close()

    def test_h2_stream_with_zero_window_does_not_hold_a_slot(self):
        def zero_window(i):
            s = socket.create_connection((h.HOST, self.port), timeout=5)
            # SETTINGS_INITIAL_WINDOW_SIZE = 0: the answer's DATA can never be sent
            s.sendall(H2_PREFACE + h2_frame(4, 0, 0, struct.pack(">HI", 4, 0)) +
                      h2_frame(1, 0x5, 1, h2_request_block("/limit", "w0-%d" % i)))
            return s

        self.assert_slots_come_back(zero_window, "zero-window HTTP/2 clients")

    def test_clients_that_never_read_do_not_hold_slots(self):
        req = b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: noread\r\n\r\n" * 200

        def never_reads(_):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((h.HOST, self.port))
            s.setblocking(False)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.7:  # until the daemon stops reading
                try:
                    s.send(req)
                except BlockingIOError:
                    time.sleep(0.01)
            return s

        self.assert_slots_come_back(never_reads, "clients that never read")

    def test_h2_unfinished_request_bodies_are_not_buffered(self):
        """100 POST streams whose 64,000-byte bodies never end, kept alive by PINGs: h2o buffers
        each body (max_request_entity_size) before ratelimitd sees the request, so one connection
        pinned ~7 MiB (vs 460 KiB in docs/DEPLOY.md). No endpoint reads a body: each stream must
        be refused instead of buffered."""
        s = socket.create_connection((h.HOST, self.port), timeout=5)
        try:
            s.sendall(H2_PREFACE + h2_frame(4, 0, 0) + h2_frame(4, 1, 0))
            post = b"\x83" + h2_request_block("/limit", "body")[1:]  # :method POST
            for k in range(100):
                sid = 1 + 2 * k
                s.sendall(h2_frame(1, 0x4, sid, post) + b"".join(h2_frame(0, 0, sid, b"x" * 16000) for _ in range(4)))
            refused, buf, t0 = set(), b"", time.monotonic()
            s.settimeout(0.2)
            while time.monotonic() - t0 < 3 and len(refused) < 100:
                s.sendall(h2_frame(6, 0, 0, b"pingping"))
                try:
                    data = s.recv(1 << 20)
                except socket.timeout:
                    continue
                if not data:
                    break
                buf += data
                while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                    ln, ftype = int.from_bytes(buf[:3], "big"), buf[3]
                    if ftype == 3:
                        refused.add(int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF)
                    buf = buf[9 + ln:]
            self.assertEqual(len(refused), 100, "streams with 64,000-byte unfinished bodies left buffered")
        finally:
            s.close()


if __name__ == "__main__":
    h.main()
