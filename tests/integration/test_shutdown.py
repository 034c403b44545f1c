"""
SIGTERM/SIGINT: stop accepting, /readyz 503, finish in-flight decisions, exit 0 within the grace
period; nothing listens afterwards. Idle keep-alive connections do not hold the process.
"""

import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl")
GRACE_MS = 2000


class ShutdownTest(h.RLTestCase):
    def start(self, backend=None, **backend_opts):
        port = h.free_port()
        cfg = h.base_config(port, backend, shutdown_grace_ms=GRACE_MS)
        if backend:
            cfg["backend"].update(backend_opts)
        return self.daemon(cfg, port=port)

    @staticmethod
    def connect_outcome(port, within_s):
        """Returns "refused" as soon as a connection to `port` is refused, or "accepted" if
        connections were still accepted after `within_s`."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                socket.create_connection((h.HOST, port), timeout=0.5).close()
            except ConnectionRefusedError:
                return "refused"
            if time.monotonic() >= deadline:
                return "accepted"
            time.sleep(0.02)

    def assertExitsZeroWithin(self, d, t0, limit_s):
        rc = d.wait(max(0.1, limit_s - (time.monotonic() - t0)))
        took = time.monotonic() - t0
        self.assertIsNotNone(rc, "still running %.1fs after the signal (grace %d ms)\n%s" %
                             (took, GRACE_MS, d.log_tail()))
        self.assertEqual(rc, 0, "exit status after signal\n" + d.log_tail())
        return took

    def test_sigterm_with_requests_in_flight(self):
        (mc,) = self.memcached(1)
        d = self.start([mc.addr], timeout_ms=3000, window_ttl_s=5, on_failure="closed")
        idle = d.client()
        self.addCleanup(idle.close)
        # /healthz (what start() waits for) answers before the loop threads' probes of the node do
        self.assertTrue(h.wait_until(lambda: idle.get("/readyz").status == 200, 5.0), "/readyz never 200")
        self.assertEqual(idle.limit("warm").status, 200)

        def written():
            return d.metrics().sum("ratelimitd_backend_write_requests_total")

        before = written()
        # stall memcached so decisions are in flight when the signal arrives
        mc.pause()
        results = []
        lock = threading.Lock()

        def inflight(i):
            try:
                c = h.Client(d.port, timeout=10)
                r = c.limit("inflight-%d" % i)
                with lock:
                    results.append(r.status)
                c.close()
            except Exception as e:  # noqa: BLE001
                with lock:
                    results.append(repr(e))

        threads = [threading.Thread(target=inflight, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        # all four increments written to the stalled node: the decisions are in flight
        self.assertTrue(h.wait_until(lambda: written() >= before + 4, 5.0), "requests never reached the node")
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        # /readyz turns 503 once the main thread has taken the signal (polled: a fixed 50 ms was too
        # short on a loaded machine). Decisions are in flight, so the drain does not half-close
        # connections yet: the kept-alive one is still served and must be told 503.
        self.assertTrue(h.wait_until(lambda: idle.get("/readyz").status == 503, 0.8, interval=0.01),
                        "/readyz on a kept-alive connection while draining")
        # the listeners are closed: a new connection is refused (not left waiting in a backlog)
        self.assertEqual(self.connect_outcome(d.port, within_s=1.0), "refused",
                         "a new connection was still accepted 1 s after SIGTERM")
        time.sleep(0.2)
        mc.resume()  # the in-flight decisions can finish now
        for t in threads:
            t.join(10)
        self.assertEqual(sorted(map(str, results)), ["200"] * 4, "in-flight requests must be answered")
        took = self.assertExitsZeroWithin(d, t0, GRACE_MS / 1000 + 1)
        self.assertFalse(h.port_accepts(d.port), "listener still open after exit")
        print("drain with in-flight requests took %.2fs" % took)

    def test_idle_keepalive_connection_does_not_hold_shutdown(self):
        d = self.start()
        clients = [d.client() for _ in range(5)]
        self.addCleanup(lambda: [c.close() for c in clients])
        for c in clients:
            self.assertEqual(c.limit("idle").status, 200)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        self.assertExitsZeroWithin(d, t0, GRACE_MS / 1000 + 1)
        with self.assertRaises(OSError):
            socket.create_connection((h.HOST, d.port), timeout=1).close()

    def test_sigterm_quiet_exits_promptly(self):
        d = self.start()
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        took = self.assertExitsZeroWithin(d, t0, GRACE_MS / 1000 + 1)
        self.assertIn("SIGTERM", d.log())
        self.assertFalse(h.port_accepts(d.port))
        print("quiet SIGTERM exit took %.2fs" % took)

    def test_sigint_exits_zero(self):
        (mc,) = self.memcached(1)
        d = self.start([mc.addr])
        c = d.client()
        self.addCleanup(c.close)
        self.assertEqual(c.limit("x").status, 200)
        t0 = time.monotonic()
        d.send_signal(signal.SIGINT)
        self.assertExitsZeroWithin(d, t0, GRACE_MS / 1000 + 1)
        self.assertFalse(h.port_accepts(d.port))

    def test_grace_zero_exits_at_once(self):
        port = h.free_port()
        d = self.daemon(h.base_config(port, shutdown_grace_ms=0), port=port)
        c = d.client()
        self.addCleanup(c.close)
        self.assertEqual(c.limit("x").status, 200)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        self.assertExitsZeroWithin(d, t0, 1.0)

    @staticmethod
    def read_bytes(pid):
        """Bytes the process has read so far (/proc/PID/io rchar), or None once it is gone."""
        try:
            with open("/proc/%d/io" % pid) as f:
                for line in f:
                    if line.startswith("rchar:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def test_signal_during_start_up_is_not_fatal(self):
        """A SIGTERM (or a config sidecar's SIGHUP) sent while the daemon is still starting must
        not take the default action and kill it: SIGTERM is still a clean exit 0, SIGHUP a reload.
        The signal is sent while the config is being parsed (the file has been read, /proc/PID/io
        says so; a big file makes parsing take a while), which is inside main() but before the
        point where start-up used to block the signals. Before main() the dynamic loader runs for
        milliseconds, which main() cannot protect: a sender should wait for /healthz."""
        port = h.free_port()
        cfg = h.base_config(port, shutdown_grace_ms=GRACE_MS)
        cfg["limits"]["keys"] = {"start-up-key-%06d" % i: "free" for i in range(60000)}
        d = self.daemon(cfg, port=port, start=False)
        size = os.path.getsize(d.conf_path)
        for sig, runs in ((signal.SIGTERM, 4), (signal.SIGINT, 2), (signal.SIGHUP, 2)):
            for i in range(runs):
                d.start(wait=False)
                deadline = time.monotonic() + 10
                while True:
                    read = self.read_bytes(d.pid)
                    if read is None or read >= size or time.monotonic() > deadline:
                        break
                self.assertIsNotNone(read, "%s run %d: exited before reading its config\n%s" %
                                     (sig.name, i, d.log_tail()))
                d.send_signal(sig)
                if sig == signal.SIGHUP:
                    # a reload at start-up; then it runs until told to stop
                    d.wait_healthy(20.0)
                    d.send_signal(signal.SIGTERM)
                rc = d.wait(GRACE_MS / 1000 + 20)
                d.stop(signal.SIGKILL, 5)  # closes this run's log files; kills only a hung process
                self.assertIsNotNone(rc, "%s run %d: still running after the signal\n%s" %
                                     (sig.name, i, d.log_tail()))
                self.assertEqual(rc, 0, "%s run %d, sent during start-up: exit %d (negative: killed by that "
                                 "signal)\n%s" % (sig.name, i, rc, d.log_tail()))
                self.assertFalse(h.port_accepts(port), "listener still open after exit")

    def test_grace_expires_with_decisions_stuck_on_a_stalled_node(self):
        """Decisions that cannot finish (node stalled, timeout_ms beyond the grace period) do not
        keep the process past shutdown_grace_ms, and tearing them down is clean (exit 0)."""
        (mc,) = self.memcached(1)
        port = h.free_port()
        cfg = h.base_config(port, [mc.addr], shutdown_grace_ms=1000)
        cfg["backend"].update({"timeout_ms": 10000, "window_ttl_s": 12, "failure_limit": 1000})
        d = self.daemon(cfg, port=port)
        mc.pause()
        socks = []
        try:
            for i in range(10):
                s = socket.create_connection((h.HOST, port), timeout=5)
                s.sendall(b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: stuck-%d\r\n\r\n" % i)
                socks.append(s)
            time.sleep(0.3)
            t0 = time.monotonic()
            d.send_signal(signal.SIGTERM)
            rc = d.wait(1.0 + 1.0)
            took = time.monotonic() - t0
        finally:
            mc.resume()
            for s in socks:
                s.close()
        self.assertIsNotNone(rc, "still running %.1fs after SIGTERM with grace 1000 ms\n%s" % (took, d.log_tail()))
        self.assertEqual(rc, 0, d.log_tail())


if __name__ == "__main__":
    h.main()
