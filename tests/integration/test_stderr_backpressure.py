"""
A stderr that cannot keep up never stops the event loops (SPEC, "Never": no blocking call on a loop
thread). The daemon's stderr is a pipe shrunk to one page that the test leaves unread, and its only
memcached node answers garbage: every loop thread logs a warning on each of its reconnects (every
~10 ms), so the pipe is full within a second. Every request must still be answered, as on_failure
says, in bounded time; /metrics counts the lines dropped; once the pipe is read again the log says
how many were lost, and the daemon stops cleanly.

With a log that writes from loop threads in blocking mode, the loop threads stop in write(2) once
the pipe is full and the requests time out.
"""

import fcntl
import os
import re
import signal
import struct
import sys
import termios
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ()
F_SETPIPE_SZ = 1031
PIPE_SIZE = 4096
REQUESTS = 300
CLIENTS = 4
REQUEST_TIMEOUT_S = 3.0
ALL_REQUESTS_WITHIN_S = 30.0
DROP_REPORT = re.compile(r" warn log: (\d+) lines dropped before this one: ")
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) [a-z_]+: .*$")
DROPPED = "ratelimitd_log_lines_dropped_total"


def bytes_in_pipe(fd):
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def pipe_stays_full(fd):
    """Whether nothing was added to the pipe for 0.3 s, while each loop thread tries every ~10 ms:
    from then on every line a loop thread logs meets a full pipe."""
    before = bytes_in_pipe(fd)
    time.sleep(0.3)
    return before > PIPE_SIZE // 2 and bytes_in_pipe(fd) == before


class StderrBackpressureTest(h.RLTestCase):
    def start_daemon_on_a_full_pipe(self):
        """A daemon whose stderr is a one-page pipe nobody reads yet; returns once the pipe is full."""
        read_fd, write_fd = os.pipe()
        self.assertEqual(fcntl.fcntl(write_fd, F_SETPIPE_SZ, PIPE_SIZE), PIPE_SIZE)
        self.pipe = read_fd
        self.drainer = None
        node = h.FakeMemcached("garbage")
        self.addCleanup(node.stop)
        port = h.free_port()
        cfg = h.base_config(port, [node.addr])
        # never ejected for long: reconnect (and log the bad reply) every ~10 ms per thread
        cfg["backend"].update({"on_failure": "open", "failure_limit": 1000, "retry_interval_ms": 10})
        d = self.daemon(cfg, port=port, stderr=write_fd, start=False)
        # Runs before the harness stops the daemon, whose main thread waits for the pipe's reader.
        self.addCleanup(self.drain, d)
        try:
            d.start()
        finally:
            os.close(write_fd)  # the daemon's copy is the only writer: EOF when it exits
        full = h.wait_until(lambda: pipe_stays_full(read_fd), 10)
        self.assertTrue(full, "the loop threads did not fill stderr (%d bytes)" % bytes_in_pipe(read_fd))
        return d

    def drain(self, d):
        """Reads the pipe from now on, into the daemon's log file (for log() and the harness's checks),
        and closes it at EOF."""
        if self.drainer is not None:
            return

        def copy():
            try:
                with open(d.log_path, "ab") as log:
                    while True:
                        data = os.read(self.pipe, 65536)
                        if not data:
                            return
                        log.write(data)
                        log.flush()
            finally:
                os.close(self.pipe)

        self.drainer = threading.Thread(target=copy, daemon=True)
        self.drainer.start()

    def test_full_stderr_pipe_does_not_stop_answers(self):
        d = self.start_daemon_on_a_full_pipe()
        clients = [d.client(timeout=REQUEST_TIMEOUT_S) for _ in range(CLIENTS)]
        for c in clients:
            self.addCleanup(c.close)
        # the first requests since start-up: /metrics is not asked before, it too needs a loop thread
        t0 = time.monotonic()
        for i in range(REQUESTS):
            try:
                r = clients[i % CLIENTS].limit("free-key-%d" % (i % 10))
            except OSError as e:
                self.fail("request %d of %d not answered within %.0f s (%r): a loop thread waits for stderr" %
                          (i + 1, REQUESTS, REQUEST_TIMEOUT_S, e))
            self.assertEqual(r.status, 200, "on_failure open answers 200: %r" % r)
            time.sleep(0.002)  # over a second or so: loop threads keep logging (and dropping) meanwhile
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, ALL_REQUESTS_WITHIN_S)
        m = d.metrics()
        self.assertEqual(m.get("ratelimitd_requests_total", decision="backend_error"), REQUESTS)
        self.assertEqual(m.types.get(DROPPED), "counter")
        dropped = h.wait_until(lambda: d.metrics().get(DROPPED), 5)
        self.assertGreater(dropped, 0, "no log line counted as dropped while stderr was full")
        self.assertGreater(bytes_in_pipe(self.pipe), PIPE_SIZE // 2, "the pipe must still have been full")

        # Read again: the first line through says how many were lost, at least those counted so far.
        self.drain(d)
        self.assertTrue(h.wait_until(lambda: DROP_REPORT.search(d.log()), 5), "no drop report once drained")
        self.assertEqual(d.stop(), 0, "exit status on SIGTERM")
        self.drainer.join(5)
        self.assertFalse(self.drainer.is_alive(), "stderr not closed after exit")
        log = d.log()
        reported = sum(int(n) for n in DROP_REPORT.findall(log))
        self.assertGreaterEqual(reported, dropped)
        self.assertIn(" info main: SIGTERM received: draining\n", log)
        # up to the daemon's last line (a sanitizer build prints its summary after it)
        lines = log.splitlines()
        last = [i for i, line in enumerate(lines) if line.endswith(" info main: stopped")]
        self.assertEqual(len(last), 1, "one 'stopped' line")
        torn = [line for line in lines[:last[0] + 1] if not LINE.match(line)]
        self.assertEqual(torn, [], "every line whole")

    def test_sigterm_drains_while_stderr_is_full(self):
        """SIGTERM starts the drain (the listeners close) while the pipe is still full: the line
        saying so waits for the reader, the drain does not wait for the line."""
        d = self.start_daemon_on_a_full_pipe()
        self.assertTrue(h.port_accepts(d.port))
        d.proc.send_signal(signal.SIGTERM)
        self.assertTrue(h.wait_until(lambda: not h.port_accepts(d.port), 1.0),
                        "still accepting 1 s after SIGTERM: draining waits for stderr's reader")
        self.assertGreater(bytes_in_pipe(self.pipe), PIPE_SIZE // 2, "the pipe must still have been full")
        self.drain(d)
        self.assertEqual(d.proc.wait(10), 0, "exit status on SIGTERM")
        self.drainer.join(5)
        self.assertIn(" info main: SIGTERM received: draining\n", d.log())


if __name__ == "__main__":
    h.main()
