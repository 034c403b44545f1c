"""
SIGHUP reloads the limits from the same file without dropping connections; a broken file is
rejected with a log line and the old limits stay in force.
"""

import collections
import copy
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl", "h2load")


def fresh(prefix="r"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def reloads(d, result):
    return d.metrics().get("ratelimitd_config_reloads_total", 0, result=result)


class ReloadTest(h.RLTestCase):
    def setUp(self):
        super().setUp()
        (self.mc,) = self.memcached(1)
        self.port = h.free_port()
        self.cfg = h.base_config(self.port, [self.mc.addr])
        self.d = self.daemon(copy.deepcopy(self.cfg), port=self.port)
        self.c = self.d.client()
        self.addCleanup(self.c.close)

    def limit_of(self, key):
        r = self.c.limit(key)
        self.assertIn(r.status, (200, 429), r)
        return r.json["limit"], r.header("RateLimit-Policy")

    def burst_statuses(self, n):
        for _ in range(4):
            key = fresh("b")
            h.wait_fresh_second(0.15)
            rs = [self.c.limit(key) for _ in range(n)]
            if len({r.json["window"] for r in rs}) == 1:
                return [r.status for r in rs]
        self.fail("burst never fitted one window")

    def test_sighup_applies_new_limits_on_the_same_connection(self):
        self.assertEqual(self.limit_of(fresh()), (10, '"default";q=10;w=1'))
        self.assertEqual(self.limit_of("premium-key-1"), (100, '"premium";q=100;w=1'))
        ok_before = reloads(self.d, "ok")

        new = copy.deepcopy(self.cfg)
        new["limits"] = {"default": 3, "tiers": {"gold": 50, "premium": 100},
                         "keys": {"gold-key": "gold"}}
        self.d.write_config(new)
        self.d.send_signal(signal.SIGHUP)
        applied = h.wait_until(lambda: self.limit_of(fresh())[0] == 3, 3.0)
        self.assertTrue(applied, "default limit did not become 3 after SIGHUP\n" + self.d.log_tail())
        # same http.client connection (auto_open off: a dropped connection would raise)
        self.assertEqual(self.burst_statuses(4), [200, 200, 200, 429])
        self.assertEqual(self.limit_of("gold-key"), (50, '"gold";q=50;w=1'))
        # a key no longer listed falls back to the default
        self.assertEqual(self.limit_of("premium-key-1"), (3, '"default";q=3;w=1'))
        self.assertEqual(reloads(self.d, "ok") - ok_before, 1)
        # backend settings untouched: still counted in memcached
        self.assertEqual(self.d.metrics().get("ratelimitd_backend_node_up", None, node=self.mc.addr), 1)
        self.assertAlive(self.d)

    def test_a_raised_limit_admits_a_key_denied_earlier_in_the_window(self):
        """The deny cache must not keep answering 429 from the old limit until the window ends."""
        for attempt in range(4):
            limit_before, limit_after = 10 + 2 * attempt, 11 + 2 * attempt + 10
            cfg = copy.deepcopy(self.cfg)
            cfg["limits"]["default"] = limit_before
            self.d.write_config(cfg)
            self.d.send_signal(signal.SIGHUP)
            self.assertTrue(h.wait_until(lambda: self.limit_of(fresh())[0] == limit_before, 3.0), self.d.log_tail())
            key = fresh("d")
            window = h.wait_fresh_second(0.1)
            statuses = [self.c.limit(key).status for _ in range(limit_before + 1)]
            self.assertEqual(statuses[-1], 429, statuses)
            cfg["limits"]["default"] = limit_after
            self.d.write_config(cfg)
            self.d.send_signal(signal.SIGHUP)
            self.assertTrue(h.wait_until(lambda: self.limit_of(fresh())[0] == limit_after, 3.0), self.d.log_tail())
            r = self.c.limit(key)
            if r.json["window"] != window:
                continue  # the reload took us past the window; try again
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["remaining"], limit_after - (limit_before + 2), r)
            return
        self.fail("never fitted a burst and a reload into one window")

    def test_broken_file_keeps_old_limits(self):
        new = copy.deepcopy(self.cfg)
        new["limits"]["default"] = 4
        self.d.write_config(new)
        self.d.send_signal(signal.SIGHUP)
        self.assertTrue(h.wait_until(lambda: self.limit_of(fresh())[0] == 4, 3.0), self.d.log_tail())

        log_len = len(self.d.log())
        rejected_before = reloads(self.d, "rejected")
        self.d.write_config("limits:\n  default: -1\n  tiers: {gold: [1, 2]}\nnot_a_field: true\n")
        self.d.send_signal(signal.SIGHUP)
        self.assertTrue(h.wait_until(lambda: reloads(self.d, "rejected") > rejected_before, 3.0),
                        "reload of a broken file not reported as rejected\n" + self.d.log_tail())
        self.assertAlive(self.d)
        new_log = self.d.log()[log_len:]
        self.assertTrue(new_log.strip(), "a rejected reload must log a line")
        self.assertIn(os.path.basename(self.d.conf_path), new_log, "the log should name the file and position")
        self.assertRegex(new_log, r"%s:\d+:\d+" % os.path.basename(self.d.conf_path).replace(".", r"\."))
        # old limits (4) stay, same connection
        self.assertEqual(self.limit_of(fresh())[0], 4)
        self.assertEqual(self.burst_statuses(5), [200] * 4 + [429])

        # an unparseable file, and a file that vanished, are rejected too
        self.d.write_config("limits: [unclosed\n")
        self.d.send_signal(signal.SIGHUP)
        os.unlink(self.d.conf_path)
        self.d.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        self.assertAlive(self.d)
        self.assertEqual(self.limit_of(fresh())[0], 4)

    def test_config_replaced_by_a_fifo_is_rejected_and_sigterm_still_works(self):
        """Opening a FIFO for reading waits for a writer; the reload runs on the thread that also
        takes SIGTERM, so it must refuse the FIFO at once instead of hanging there."""
        rejected_before = reloads(self.d, "rejected")
        log_len = len(self.d.log())
        os.unlink(self.d.conf_path)
        os.mkfifo(self.d.conf_path)
        self.d.send_signal(signal.SIGHUP)
        self.assertTrue(h.wait_until(lambda: reloads(self.d, "rejected") > rejected_before, 3.0),
                        "reload of a FIFO not reported as rejected\n" + self.d.log_tail())
        self.assertIn("%s: not a regular file" % self.d.conf_path, self.d.log()[log_len:])
        self.assertEqual(self.limit_of(fresh())[0], 10)  # old limits in force
        t0 = time.monotonic()
        self.d.send_signal(signal.SIGTERM)
        rc = self.d.wait(self.cfg["shutdown_grace_ms"] / 1000 + 2)
        self.assertEqual(rc, 0, "SIGTERM after a FIFO reload: exit %r after %.1fs\n%s" %
                         (rc, time.monotonic() - t0, self.d.log_tail()))
        # and start-up refuses it the same way, naming the file
        out = subprocess.run([h.rl_binary(), "--check-config", "-c", self.d.conf_path], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=10)
        self.assertEqual((out.returncode, out.stdout), (2, "%s: not a regular file\n" % self.d.conf_path), out)

    def test_many_sighups_while_serving(self):
        clients = [self.d.client() for _ in range(3)]
        self.addCleanup(lambda: [c.close() for c in clients])
        for i in range(20):
            new = copy.deepcopy(self.cfg)
            new["limits"]["default"] = 5 + (i % 2)
            self.d.write_config(new)
            self.d.send_signal(signal.SIGHUP)
            for c in clients:
                r = c.limit(fresh())
                self.assertEqual(r.status, 200, r)
                self.assertIn(r.json["limit"], (5, 6, 10))
            time.sleep(0.02)
        # the last config (default 6) is in force once the main thread has read it: polled, since
        # a loaded machine may take longer than any fixed sleep to get through 20 reloads
        self.assertTrue(h.wait_until(lambda: self.limit_of(fresh())[0] == 6, 5.0), self.d.log_tail())
        self.assertAlive(self.d)

    def test_sighup_under_load_drops_nothing(self):
        key = "load-" + uuid.uuid4().hex
        new = copy.deepcopy(self.cfg)
        new["limits"]["tiers"]["bulk"] = 1000000
        new["limits"]["keys"][key] = "bulk"
        self.d.write_config(new)
        self.d.send_signal(signal.SIGHUP)
        self.assertTrue(h.wait_until(lambda: self.limit_of(key)[0] == 1000000, 3.0), self.d.log_tail())
        p = subprocess.Popen(["h2load", "-D", "2", "-c", "4", "-m", "20", "-H", "X-API-Key: " + key,
                              "http://127.0.0.1:%d/limit" % self.port], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        try:
            for i in range(15):
                time.sleep(0.1)
                cfg = copy.deepcopy(new)
                cfg["limits"]["default"] = 10 + i
                self.d.write_config(cfg)
                self.d.send_signal(signal.SIGHUP)
            out = p.communicate(timeout=30)[0]
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", out)
        self.assertIsNotNone(m, out)
        self.assertGreater(int(m.group(4)), 1000, out)
        self.assertEqual((m.group(5), m.group(6), m.group(7)), ("0", "0", "0"), "reloads under load: " + out)
        self.assertAlive(self.d)
        self.assertEqual(self.limit_of(fresh())[0], 24)

    def test_decisions_pending_across_reloads_keep_valid_fields(self):
        """A decision waiting on memcached while SIGHUPs replace the limits must still answer with
        a well-formed RateLimit-Policy naming a real tier (the old limits must outlive it)."""
        names = ["betabetabeta"] + ["gammagammagamma%d" % n for n in range(5)]

        def reload_with(name):
            c = copy.deepcopy(self.cfg)
            c["limits"]["tiers"] = {name: 500}
            c["limits"]["keys"] = {"pending-key": name}
            c["limits"]["keys"].update({"filler-%d" % i: name for i in range(200)})
            before = reloads(self.d, "ok")
            self.d.write_config(c)
            self.d.send_signal(signal.SIGHUP)
            self.assertTrue(h.wait_until(lambda: reloads(self.d, "ok") > before, 3.0), self.d.log_tail())
            time.sleep(0.05)  # every loop thread adopts the new limits

        reload_with(names[0])
        self.mc.pause()
        socks = []
        try:
            for _ in range(40):
                s = socket.create_connection((h.HOST, self.port), timeout=10)
                s.sendall(b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: pending-key\r\n\r\n")
                socks.append(s)
            time.sleep(0.3)
            for name in names[1:]:
                reload_with(name)
        finally:
            self.mc.resume()
        policies = collections.Counter()
        try:
            for s in socks:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                for line in buf.split(b"\r\n"):
                    if line.lower().startswith(b"ratelimit-policy:"):
                        policies[line.split(b":", 1)[1].strip()] += 1
        finally:
            for s in socks:
                s.close()
        self.assertEqual(sum(policies.values()), 40, policies)
        valid = {('"%s";q=500;w=1' % n).encode() for n in names}
        self.assertEqual(set(policies) - valid, set(),
                         "RateLimit-Policy of decisions pending across a reload: %r" % dict(policies))
        self.assertAlive(self.d)

    def test_reload_ignores_sections_that_need_a_restart(self):
        new = copy.deepcopy(self.cfg)
        new["limits"]["default"] = 7
        new["listen"] = [{"address": h.HOST, "port": h.free_port()}]
        new["backend"]["servers"] = ["127.0.0.1:%d" % h.free_port()]
        new["threads"] = 3
        self.d.write_config(new)
        self.d.send_signal(signal.SIGHUP)
        self.assertTrue(h.wait_until(lambda: self.limit_of(fresh())[0] == 7, 3.0), self.d.log_tail())
        # still on the old listener and the old memcached node, counting normally
        self.assertEqual(self.burst_statuses(8), [200] * 7 + [429])
        m = self.d.metrics()
        self.assertEqual(m.get("ratelimitd_backend_node_up", None, node=self.mc.addr), 1)
        self.assertEqual(m.get("ratelimitd_requests_total", 0, decision="backend_error"), 0)
        self.assertFalse(h.port_accepts(new["listen"][0]["port"]))
        # ... and the operator is told which changes were left for a restart, in file order
        warnings = [line for line in self.d.log().splitlines() if "a reload applies only limits" in line]
        self.assertEqual(len(warnings), 1, self.d.log_tail())
        self.assertIn("reload: listen, threads, backend changed in %s" % self.d.conf_path, warnings[0])
        # back to the running sections with new limits: applied, and nothing to warn about
        only_limits = copy.deepcopy(self.cfg)
        only_limits["limits"]["default"] = 6
        self.d.write_config(only_limits)
        self.d.send_signal(signal.SIGHUP)
        self.assertTrue(h.wait_until(lambda: self.limit_of(fresh())[0] == 6, 3.0), self.d.log_tail())
        self.assertEqual(self.d.log().count("a reload applies only limits"), 1, self.d.log_tail())
        self.assertAlive(self.d)


if __name__ == "__main__":
    h.main()
