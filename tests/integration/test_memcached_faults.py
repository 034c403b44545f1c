"""
Memcached nodes that misbehave: a fake node (garbage, truncated replies, silence, immediate close,
a node that passes the probe but garbles increments or answers them SERVER_ERROR, a host whose
connects never complete) next to a real one; a real node stalled with SIGSTOP; a node restarted
mid-window. The daemon never crashes or hangs, answers every decision within timeout_ms (+ slack)
following on_failure, counts the bad node as unreachable and ejects it, and keeps counting
exactly on the healthy node, whose keys' p99 latency does not move while the other node is
stalled.
"""

import collections
import os
import re
import socket
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl")
TIMEOUT_MS = 100
SLACK_S = 0.25  # scheduling slack for the Python client on a busy 2-CPU box
BOUND_S = TIMEOUT_MS / 1000 + SLACK_S
RSS_LIMIT_KB = 200 * 1024


def connections_to(port):
    """Local ends of the established IPv4 TCP connections to 127.0.0.1:port, from /proc/net/tcp:
    a connection held open shows the same local port for as long as it lasts."""
    found = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == "01" and int(remote.split(":")[1], 16) == port:
                found.append(int(local.split(":")[1], 16))
    return sorted(found)


class FaultTest(h.RLTestCase):
    def start_daemon(self, servers, on_failure="open", **backend):
        port = h.free_port()
        cfg = h.base_config(port, servers)
        cfg["backend"].update({"on_failure": on_failure, "timeout_ms": TIMEOUT_MS, "failure_limit": 2,
                               "retry_interval_ms": 300})
        cfg["backend"].update(backend)
        return self.daemon(cfg, port=port)

    def exact_bursts(self, d, n_keys=10):
        """Each of n_keys fresh keys gets 12 requests in one window: expects 10 x 200 + 2 x 429.
        A burst during which the daemon counted a backend error (say the box stalled the healthy
        node past timeout_ms) proves nothing about exactness and is redone with a fresh key."""
        c = d.client()
        wrong = {}
        try:
            for i in range(n_keys):
                for attempt in range(6):
                    frac = time.time() % 1.0
                    if frac > 0.8:
                        time.sleep(1.0 - frac + 0.01)
                    key = "exact-%d-%s" % (i, uuid.uuid4().hex[:8])
                    errs = d.metrics().get("ratelimitd_requests_total", 0, decision="backend_error")
                    rs = [c.limit(key) for _ in range(12)]
                    clean = d.metrics().get("ratelimitd_requests_total", 0, decision="backend_error") == errs
                    if len({r.json.get("window") for r in rs}) == 1 and clean:
                        break
                st = [r.status for r in rs]
                if st != [200] * 10 + [429] * 2:
                    wrong[key] = st
        finally:
            c.close()
        if wrong:
            wrong["backend_errors"] = d.metrics().find("ratelimitd_backend_errors_total")
        return wrong

    def check_alive_and_small(self, d):
        self.assertAlive(d)
        self.assertEqual(h.http_get(d.port, "/healthz")[0], 200)
        rss = d.rss_kb()
        self.assertLess(rss, RSS_LIMIT_KB, "RSS %d kB" % rss)

    def node_up(self, d, node):
        return d.metrics().get("ratelimitd_backend_node_up", None, node=node.addr)

    def test_fake_node_modes_with_on_failure_open(self):
        for mode in ("garbage", "truncated", "silent", "close", "mn_ok", "full"):
            with self.subTest(mode=mode):
                self.run_open_mode(mode)

    def run_open_mode(self, mode):
        (real,) = self.memcached(1)
        fake = h.FakeMemcached(mode)
        self.addCleanup(fake.stop)
        d = self.start_daemon([real.addr, fake.addr], "open")
        keys = ["%s-%02d" % (mode, i) for i in range(40)]
        rec = h.LoadGen(d.port, keys, slow_over=BOUND_S).start()
        try:
            time.sleep(1.5)
        finally:
            rec.finish()
        self.assertFalse(rec.errors, rec.errors)
        self.assertEqual(set(rec.statuses) - {200, 429}, set(), "%s: %r" % (mode, dict(rec.statuses)))
        self.assertGreater(sum(rec.statuses.values()), 100)
        self.assertFalse(rec.slow, "%s: decisions slower than timeout_ms + %.2fs: %r" % (mode, SLACK_S, rec.slow[:20]))
        m = d.metrics()
        self.assertGreaterEqual(m.sum("ratelimitd_backend_ejections_total", node=fake.addr), 1,
                                "%s: the bad node was never ejected; errors %r" %
                                (mode, m.find("ratelimitd_backend_errors_total", node=fake.addr)))
        # and its failures show under their reason, even those of probes no request waited on (a
        # node that fails its connect probe may never get an increment); a truncated reply is a
        # protocol error even though the node closes the connection after it
        reason = {"silent": "timeout", "close": "unreachable"}.get(mode, "protocol")
        self.assertGreaterEqual(m.get("ratelimitd_backend_errors_total", 0, node=fake.addr, reason=reason), 1,
                                "%s: %r" % (mode, m.find("ratelimitd_backend_errors_total", node=fake.addr)))
        self.assertEqual(m.sum("ratelimitd_backend_errors_total", node=real.addr), 0, mode)
        self.assertEqual(self.node_up(d, real), 1, mode)
        # the log quotes what the node sent, so an operator sees "out of memory", not just "bad"
        quoted = {"garbage": "HTTP/1.1 200 OK.[2J.", "mn_ok": "HTTP/1.1 200 OK.[2J.",
                  "full": "SERVER_ERROR Out of memory allocating new item"}.get(mode)
        if quoted is not None:
            self.assertIn('%s sent an invalid or unexpected reply: "%s"' % (fake.addr, quoted), d.log())
        # and nothing the node sent reaches the log raw (no terminal escapes, no NULs)
        self.assertNotRegex(d.log(), "[\x00-\x08\x0b-\x1f\x7f]", mode)
        if mode not in ("mn_ok", "full"):  # those pass the probe, so they may flap back in between failures
            self.assertEqual(self.node_up(d, fake), 0, "%s: the bad node must be reported down" % mode)
            # each of the 2 loop threads keeps its own ring: until the slower one ejects the node
            # too, its requests for that node fail open (admitted uncounted), as the SPEC allows
            h.wait_until(lambda: d.metrics().sum("ratelimitd_backend_ejections_total", node=fake.addr) >= 2, 3.0)
            wrong = self.exact_bursts(d)
            self.assertFalse(wrong, "%s: with the bad node ejected, counting must be exact: %r" % (mode, wrong))
        self.check_alive_and_small(d)
        d.stop()
        fake.stop()
        real.kill()

    def test_idle_daemon_counts_closes_and_no_traffic(self):
        """No request at all. A node that closes every connection is failing, and errors_total
        says so although no request waited on it (only the probe sent on connect). The healthy
        node is only probed, and probes are not traffic: the write/read counters stay 0."""
        (real,) = self.memcached(1)
        fake = h.FakeMemcached("close")
        self.addCleanup(fake.stop)
        d = self.start_daemon([real.addr, fake.addr], "open")

        def unreachable():
            return d.metrics().get("ratelimitd_backend_errors_total", 0, node=fake.addr, reason="unreachable")

        self.assertTrue(h.wait_until(lambda: unreachable() >= 1, 3.0),
                        "closes with no request waiting were not counted: %r (%d connections accepted)" %
                        (d.metrics().find("ratelimitd_backend_errors_total", node=fake.addr), fake.accepted))
        # a node idle for 1 s is probed again (every 0.5 s): by 2.5 s the healthy one has been
        time.sleep(max(0.0, 2.5 - (time.monotonic() - d.started_at)))
        m = d.metrics()
        self.assertEqual(m.get("ratelimitd_backend_node_up", None, node=real.addr), 1)  # probes were answered
        for name in ("ratelimitd_backend_writes_total", "ratelimitd_backend_write_requests_total",
                     "ratelimitd_backend_reads_total", "ratelimitd_backend_read_replies_total"):
            self.assertEqual(m.sum(name), 0, "%s counts probes: %r" % (name, m.find(name)))
        self.assertEqual(m.sum("ratelimitd_backend_errors_total", node=real.addr), 0)
        self.check_alive_and_small(d)

    def test_blackholed_node_connect_never_completes(self):
        """A node whose host died without a reset: SYNs vanish, so connects hang. Its keys follow
        on_failure within timeout_ms (they wait in its queue, never on the connect), the waits
        and the connect timeouts count as failures, every thread ejects the node, and its keys
        are then counted exactly on the live node."""
        (real,) = self.memcached(1)
        hole = h.FakeMemcached("blackhole")
        self.addCleanup(hole.stop)
        d = self.start_daemon([real.addr, hole.addr], "open")
        rec = h.LoadGen(d.port, ["hole-%02d" % i for i in range(40)], slow_over=BOUND_S).start()
        try:
            time.sleep(1.0)
        finally:
            rec.finish()
        self.assertFalse(rec.errors, rec.errors)
        self.assertEqual(set(rec.statuses) - {200, 429}, set(), dict(rec.statuses))
        self.assertFalse(rec.slow, "decisions waited on a hanging connect: %r" % rec.slow[:20])
        # 2 loop threads, each ejecting after failure_limit (2) connect timeouts of 1 s
        self.assertTrue(h.wait_until(lambda: d.metrics().sum("ratelimitd_backend_ejections_total",
                                                             node=hole.addr) >= 2, 5.0),
                        "a node whose connects hang was not ejected by both threads: %r" %
                        d.metrics().find("ratelimitd_backend_ejections_total"))
        self.assertEqual(self.node_up(d, hole), 0)
        self.assertEqual(self.node_up(d, real), 1)
        # requests queued on the connecting node time out as a stall, and the log says why
        self.assertRegex(d.log(), r"node %s: no reply for \d+ ms \(timeout_ms \d+, \d+ requests waiting, "
                                  r"still connecting\)" % re.escape(hole.addr))
        wrong = self.exact_bursts(d)
        self.assertFalse(wrong, "with the blackholed node ejected, counting must be exact: %r" % wrong)
        self.check_alive_and_small(d)

    def test_fake_node_modes_with_on_failure_closed(self):
        for mode in ("silent", "garbage", "close"):
            with self.subTest(mode=mode):
                self.run_closed_mode(mode)

    def run_closed_mode(self, mode):
        (real,) = self.memcached(1)
        fake = h.FakeMemcached(mode)
        self.addCleanup(fake.stop)
        d = self.start_daemon([real.addr, fake.addr], "closed")
        rec = h.LoadGen(d.port, ["closed-%s-%02d" % (mode, i) for i in range(40)], slow_over=BOUND_S).start()
        try:
            time.sleep(1.5)
        finally:
            rec.finish()
        self.assertFalse(rec.errors, rec.errors)
        self.assertEqual(set(rec.statuses) - {200, 429, 503}, set(), dict(rec.statuses))
        self.assertFalse(rec.slow, "decisions slower than timeout_ms + slack: %r" % rec.slow[:20])
        self.assertTrue(h.wait_until(lambda: self.node_up(d, fake) == 0, 2.0), "%s node not reported down" % mode)
        self.assertEqual(h.http_get(d.port, "/readyz")[0], 200, "one node answers: ready")
        # each of the 2 loop threads keeps its own ring: let the slower one eject it too
        h.wait_until(lambda: d.metrics().sum("ratelimitd_backend_ejections_total", node=fake.addr) >= 2, 3.0)
        # ejected: its keys now live on the real node and are decided, not refused
        c = d.client()
        self.addCleanup(c.close)
        # A loop thread that has not ejected the node yet (each thread keeps its own ring, and an
        # idle one may not have failed enough) may still 503 up to failure_limit (2) requests.
        statuses = collections.Counter(c.limit("moved-%d-%s" % (i, uuid.uuid4().hex[:6])).status for i in range(40))
        self.assertEqual(set(statuses) - {200, 503}, set(), statuses)
        self.assertLessEqual(statuses[503], 2, "keys of an ejected node must move to live nodes; backend errors: %r" %
                             [x for x in d.metrics().find("ratelimitd_backend_errors_total") if x[1]])
        if statuses[503]:
            print("note: %d of 40 requests got 503 after the silent node was reported down" % statuses[503])
        statuses = collections.Counter(c.limit("moved2-%d-%s" % (i, uuid.uuid4().hex[:6])).status for i in range(40))
        self.assertEqual(statuses, {200: 40}, "once ejected everywhere, no key may 503")
        wrong = self.exact_bursts(d)
        self.assertFalse(wrong, wrong)
        self.check_alive_and_small(d)
        d.stop()
        fake.stop()
        real.kill()

    def test_sigstop_node_under_load_then_sigcont(self):
        nodes = self.memcached(2)
        stalled = nodes[0]
        d = self.start_daemon([n.addr for n in nodes], "open")
        c = d.client()
        self.addCleanup(c.close)
        owners = h.key_owners(c, nodes, ["stall-%02d-%s" % (i, uuid.uuid4().hex[:6]) for i in range(40)])
        rest_keys = [k for k, (node, _) in owners.items() if node == 1]
        self.assertGreaterEqual(len(rest_keys), 5, "too few keys on the healthy node: %r" % owners)
        # the stalled node's keys and the rest are driven by separate clients, so the rest's
        # latency shows whether anything of theirs waits behind the stall
        rec = h.LoadGen(d.port, [k for k in owners if k not in rest_keys], slow_over=BOUND_S).start()
        rest = h.LoadGen(d.port, rest_keys, slow_over=BOUND_S).start()
        stalls = []  # (p99 before, p99 during, answers before, answers during, ejected, re-admitted)
        try:
            time.sleep(0.6)
            # A second stall only when the first one's p99 moved: on a shared two-core machine the
            # whole host (Python clients included) sometimes pauses for ~100 ms, which a 0.5 s
            # window cannot tell from a design fault; a design fault moves both.
            for _ in range(2):
                paused_at = time.monotonic()
                stalled.pause()
                ejected = h.wait_until(lambda: self.node_up(d, stalled) == 0, 2.0)
                time.sleep(0.5)
                resumed_at = time.monotonic()
                stalled.resume()
                up = h.wait_until(lambda: self.node_up(d, stalled) == 1, 3.0)
                before = rest.latencies(paused_at - 0.5, paused_at)
                during = rest.latencies(paused_at, resumed_at)
                stalls.append((h.p99(before or [0]), h.p99(during or [0]), len(before), len(during), ejected, up))
                print("healthy node's keys: p99 %.1f ms over %d answers before the stall, %.1f ms over %d during it"
                      % (stalls[-1][0] * 1000, len(before), stalls[-1][1] * 1000, len(during)))
                if not (ejected and up) or stalls[-1][1] < stalls[-1][0] + 0.05:
                    break
                time.sleep(0.6)
            time.sleep(0.3)
        finally:
            stalled.resume()
            rec.finish()
            rest.finish()
        for load in (rec, rest):
            self.assertFalse(load.errors, load.errors)
            self.assertEqual(set(load.statuses) - {200, 429}, set(), dict(load.statuses))
            self.assertFalse(load.slow,
                             "decisions slower than timeout_ms + slack while a node stalled: %r" % load.slow[:20])
        # a key stays on its node from second to second: the stalled node's keys followed
        # on_failure, the healthy node's keys were all counted
        self.assertGreater(rec.uncounted, 0, "no stalled key was admitted uncounted (on_failure: open)")
        self.assertEqual(rest.uncounted, 0, "the healthy node's keys were admitted uncounted %d times" % rest.uncounted)
        p99_before, p99_during, n_before, n_during, ejected, up = stalls[-1]
        self.assertTrue(ejected, "a stalled node must be ejected: %r" % d.metrics().find("ratelimitd_backend_node_up"))
        self.assertTrue(n_before >= 20 and n_during >= 20, (n_before, n_during))
        self.assertLess(p99_during, p99_before + 0.05,
                        "p99 of the healthy node's keys moved while the other node stalled, in %d stalls: %s" %
                        (len(stalls), ", ".join("%.1f ms -> %.1f ms" % (b * 1000, a * 1000) for b, a, *_ in stalls)))
        self.assertTrue(up, "a resumed node must be re-admitted within 3 s")
        m = d.metrics()
        self.assertGreaterEqual(m.sum("ratelimitd_backend_ejections_total", node=stalled.addr), 1)
        self.assertGreaterEqual(m.sum("ratelimitd_backend_errors_total", node=stalled.addr, reason="timeout"), 1,
                                m.find("ratelimitd_backend_errors_total", node=stalled.addr))
        wrong = self.exact_bursts(d)
        self.assertFalse(wrong, "after re-admission counting is exact again: %r" % wrong)
        # the stall is in the log, with how long the node had been silent, before the ejection
        logged = re.findall(r"node %s: no reply for (\d+) ms \(timeout_ms \d+, (\d+) requests waiting, last reply "
                            r"(\d+) ms ago\)" % re.escape(stalled.addr), d.log())
        self.assertTrue(logged, d.log_tail())
        self.assertTrue(all(int(waited) >= TIMEOUT_MS - 5 for waited, _, _ in logged), logged)
        self.check_alive_and_small(d)

    def test_sigstop_node_with_on_failure_closed_answers_503_in_time(self):
        nodes = self.memcached(2)
        d = self.start_daemon([n.addr for n in nodes], "closed")
        rec = h.LoadGen(d.port, ["stall-c-%02d" % i for i in range(40)], slow_over=BOUND_S).start()
        try:
            time.sleep(0.3)
            nodes[1].pause()
            time.sleep(1.2)
        finally:
            nodes[1].resume()
            rec.finish()
        self.assertFalse(rec.errors, rec.errors)
        self.assertEqual(set(rec.statuses) - {200, 429, 503}, set(), dict(rec.statuses))
        self.assertFalse(rec.slow, rec.slow[:20])
        self.check_alive_and_small(d)

    def test_readyz_503_while_a_connected_node_does_not_answer(self):
        """/readyz needs a node that answers, not only one connected and in the ring: an increment
        that times out on a stalled node turns it 503 although the connection stays up and the
        node is not ejected; an answer in time after the stall turns it 200 again."""
        (mc,) = self.memcached(1)
        port = h.free_port()
        # one loop thread: /readyz asks the thread whose increment timed out. A failure_limit this
        # high keeps the stalled node connected and in the ring.
        cfg = h.base_config(port, [mc.addr], threads=1)
        cfg["backend"].update({"on_failure": "closed", "timeout_ms": TIMEOUT_MS, "failure_limit": 1000})
        d = self.daemon(cfg, port=port)
        self.assertTrue(h.wait_until(lambda: h.status_of(port, "/readyz") == 200, 3.0), "never ready")
        conns = connections_to(mc.port)
        self.assertEqual(len(conns), 1, conns)
        mc.pause()
        try:
            self.assertEqual(h.http_get(port, "/limit", {"X-API-Key": "stalled"})[0], 503)  # timed out
            self.assertEqual(h.status_of(port, "/readyz"), 503, "a node that stopped answering is not ready")
            self.assertEqual(connections_to(mc.port), conns, "the stalled node must still be connected")
            self.assertEqual(d.metrics().sum("ratelimitd_backend_ejections_total"), 0)
        finally:
            mc.resume()
        self.assertTrue(h.wait_until(lambda: h.http_get(port, "/limit", {"X-API-Key": uuid.uuid4().hex})[0] == 200 and
                                     h.status_of(port, "/readyz") == 200, 3.0), "not ready after the node answered")
        self.assertEqual(connections_to(mc.port), conns, "the same connection throughout")
        self.check_alive_and_small(d)

    def test_node_restarted_mid_window(self):
        nodes = self.memcached(2)
        d = self.start_daemon([n.addr for n in nodes], "open", failure_limit=5, retry_interval_ms=200)
        rec = h.LoadGen(d.port, ["restart-%02d" % i for i in range(40)], slow_over=BOUND_S).start()
        try:
            time.sleep(0.5)
            port = nodes[0].port
            nodes[0].kill()
            revived = h.Memcached(port=port).start()
            self.nodes.append(revived)
            time.sleep(1.5)
        finally:
            rec.finish()
        self.assertFalse(rec.errors, rec.errors)
        self.assertEqual(set(rec.statuses) - {200, 429}, set(), dict(rec.statuses))
        self.assertTrue(h.wait_until(lambda: self.node_up(d, revived) == 1, 3.0))
        c = d.client()
        self.addCleanup(c.close)
        self.assertTrue(h.wait_until(lambda: [c.limit("after-%s" % uuid.uuid4().hex) for _ in range(30)] and
                                     revived.curr_items() > 0, 3.0, interval=0.1), "restarted node gets no keys")
        wrong = self.exact_bursts(d, 6)
        self.assertFalse(wrong, wrong)
        self.check_alive_and_small(d)

    def test_stalled_node_does_not_block_the_event_loop(self):
        """One loop thread, memcached stalled: decisions wait (asynchronously) while /healthz,
        /metrics and requests that need no backend call are answered at once."""
        (mc,) = self.memcached(1)
        port = h.free_port()
        cfg = h.base_config(port, [mc.addr], threads=1)
        # a timeout_ms this long needs counters that outlive it (config: at most (window_ttl_s - 2) x 1000)
        cfg["backend"].update({"timeout_ms": 3000, "failure_limit": 100, "window_ttl_s": 5})
        d = self.daemon(cfg, port=port)
        mc.pause()
        pending = []
        try:
            for i in range(20):
                s = socket.create_connection((h.HOST, port), timeout=10)
                s.sendall(b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: wait-%d\r\n\r\n" % i)
                pending.append(s)
            time.sleep(0.2)
            for path, headers, want in (("/healthz", {}, 200), ("/metrics", {}, 200), ("/limit", {}, 401),
                                        ("/limit", {"X-API-Key": "bad key"}, 400)):
                t0 = time.monotonic()
                st = h.http_get(port, path, headers, timeout=2)[0]
                took = time.monotonic() - t0
                self.assertEqual(st, want, path)
                self.assertLess(took, 0.25, "%s took %.3fs while decisions wait on a stalled node" % (path, took))
        finally:
            mc.resume()
        answered = 0
        for s in pending:
            s.settimeout(5)
            try:
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    answered += 1
            finally:
                s.close()
        self.assertEqual(answered, 20, "decisions pending on the stalled node complete once it resumes")
        self.check_alive_and_small(d)

    def test_a_denial_answered_after_its_window_does_not_deny_the_next(self):
        """A 429 counted in window w whose answer comes in w+1 (the node stalled across the
        boundary) is cached for w only: the key's next request, in w+1, is counted afresh."""
        (mc,) = self.memcached(1)
        port = h.free_port()
        cfg = h.base_config(port, [mc.addr], threads=1)
        cfg["limits"]["default"] = 3
        cfg["backend"].update({"timeout_ms": 3000, "failure_limit": 1000, "window_ttl_s": 5})
        d = self.daemon(cfg, port=port)
        c = d.client()
        self.addCleanup(c.close)
        for _ in range(3):
            key = "late-%s" % uuid.uuid4().hex[:12]
            w = h.wait_fresh_second(0.2)
            if [c.limit(key).json["window"] for _ in range(3)] != [w] * 3:
                continue
            time.sleep(max(0.0, w + 0.85 - time.time()))
            result = {}
            mc.pause()
            try:
                t = threading.Thread(target=lambda: result.update(r=c.limit(key)))
                t.start()
                time.sleep(max(0.0, w + 1.2 - time.time()))
            finally:
                mc.resume()
            t.join(5)
            late = result["r"]
            if late.json["window"] != w:
                continue  # decided after the boundary: not the case under test
            self.assertEqual(late.status, 429, late)
            hits = d.metrics().get("ratelimitd_deny_cache_hits_total", 0)
            r = c.limit(key)
            self.assertEqual(r.status, 200, "the denial of window %d was applied to %d: %r" % (w, r.json["window"], r))
            self.assertGreater(r.json["window"], w)
            self.assertEqual(d.metrics().get("ratelimitd_deny_cache_hits_total", 0), hits)
            return
        self.fail("never had a request decided at the end of a window")

    def test_max_pending_fails_fast_when_a_node_stalls(self):
        """backend.max_pending bounds what queues on one node per thread: beyond it, decisions fail
        fast (on_failure open: 200 at once, counted as overload) instead of piling up."""
        (mc,) = self.memcached(1)
        port = h.free_port()
        cfg = h.base_config(port, [mc.addr], threads=1)
        cfg["backend"].update({"timeout_ms": 2000, "failure_limit": 1000, "max_pending": 4, "on_failure": "open",
                               "window_ttl_s": 5})
        d = self.daemon(cfg, port=port)

        def written():
            # an idle probe (`mn`, after 1 s idle) sent after the pause holds one of the max_pending
            # slots; the request it displaces fails fast as overload, and the queue is just as full
            m = d.metrics()
            return (m.get("ratelimitd_backend_write_requests_total", 0, node=mc.addr) +
                    m.get("ratelimitd_backend_errors_total", 0, node=mc.addr, reason="overload"))

        before = written()
        mc.pause()
        socks = []
        try:
            for i in range(4):
                s = socket.create_connection((h.HOST, port), timeout=5)
                s.sendall(b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: queued-%d\r\n\r\n" % i)
                socks.append(s)
            # the queue is full once all four are written to the stalled node (under ASan on a
            # busy machine, a fixed sleep was sometimes too short and the first two below queued)
            self.assertTrue(h.wait_until(lambda: written() >= before + 4, 5.0),
                            "the 4 queued requests never reached the node: %r" % (written() - before))
            fast = []
            for i in range(5):
                t0 = time.monotonic()
                st = h.http_get(port, "/limit", {"X-API-Key": "over-%d" % i}, timeout=3)[0]
                fast.append((st, round(time.monotonic() - t0, 3)))
        finally:
            mc.resume()
        self.assertTrue(all(st == 200 and took < 0.3 for st, took in fast),
                        "beyond max_pending a decision must fail fast (open: 200): %r" % fast)
        m = d.metrics()
        self.assertGreaterEqual(m.get("ratelimitd_backend_errors_total", 0, node=mc.addr, reason="overload"), 5,
                                m.find("ratelimitd_backend_errors_total"))
        for s in socks:
            s.settimeout(5)
            self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200"))
            s.close()
        self.check_alive_and_small(d)


if __name__ == "__main__":
    h.main()
