"""
/metrics counts exactly what happened: decisions by kind, deny-cache hits, backend latency
histogram, open connections, build info, per-node series. Runs against one real memcached node.
"""

import os
import re
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl", "h2load")
DECISIONS = ("allowed", "limited", "unauthorized", "bad_request", "forbidden", "backend_error")
HIST = "ratelimitd_backend_request_duration_seconds"


def decisions(m):
    return {d: m.get("ratelimitd_requests_total", None, decision=d) for d in DECISIONS}


class MetricsTest(h.RLTestCase):
    def setUp(self):
        super().setUp()
        (self.mc,) = self.memcached(1)
        self.port = h.free_port()
        cfg = h.base_config(self.port, [self.mc.addr])
        cfg["limits"]["unknown_keys"] = "reject"
        cfg["limits"]["keys"].update({"free-%d" % i: "free" for i in range(8)})
        cfg["limits"]["tiers"]["bulk"] = 1000000
        cfg["limits"]["keys"]["bulk-key"] = "bulk"
        self.d = self.daemon(cfg, port=self.port)
        self.c = self.d.client()
        self.addCleanup(self.c.close)

    def test_every_decision_series_is_exposed(self):
        m = self.d.metrics()
        for name, v in decisions(m).items():
            self.assertIsNotNone(v, "ratelimitd_requests_total{decision=%r} missing" % name)
        self.assertEqual(m.types.get("ratelimitd_requests_total"), "counter")
        self.assertTrue(m.has("ratelimitd_deny_cache_hits_total"))

    def test_decision_counters_match_exactly_what_was_sent(self):
        for attempt in range(8):
            key = "free-%d" % attempt
            before = self.d.metrics()
            h.wait_fresh_second(0.15)
            hits_before = self.mc.incr_hits()
            rs = [self.c.limit(key) for _ in range(12)]
            hits = self.mc.incr_hits() - hits_before
            increments = self.mc.increments()
            for _ in range(3):
                self.assertEqual(self.c.limit(None).status, 401)
            self.assertEqual(self.c.limit("has space").status, 400)
            self.assertEqual(self.c.limit("k" * 257).status, 400)
            self.assertEqual(self.c.limit("not-listed-a").status, 403)
            self.assertEqual(self.c.limit("not-listed-b").status, 403)
            self.assertEqual(self.mc.increments(), increments, "401/400/403 must not reach memcached")
            after = self.d.metrics()
            if len({r.json["window"] for r in rs}) == 1:
                break
        else:
            self.fail("12 requests never fitted one window")
        self.assertEqual([r.status for r in rs], [200] * 10 + [429] * 2)
        b, a = decisions(before), decisions(after)
        delta = {k: a[k] - b[k] for k in DECISIONS}
        self.assertEqual(delta, {"allowed": 10, "limited": 2, "unauthorized": 3, "bad_request": 2, "forbidden": 2,
                                 "backend_error": 0})
        # 401/400/403 make no backend call and the 12th is answered from the deny cache:
        # 11 increments reached memcached (10 admitted + the one that found 11): one created the
        # window's counter and 10 found it, as memcached counts them. The latency histogram
        # (which leaves idle `mn` probes out) timed exactly those 11.
        self.assertEqual(hits, 10, "increments that found the counter, of 12 requests")
        d_backend = after.get(HIST + "_count") - before.get(HIST + "_count")
        self.assertEqual(d_backend, 11, "backend round trips observed by the latency histogram")
        d_deny = after.get("ratelimitd_deny_cache_hits_total") - before.get("ratelimitd_deny_cache_hits_total")
        self.assertEqual(d_deny, 1)

    def test_deny_cache_hits_count_requests_over_limit_in_same_window(self):
        for _ in range(4):
            key = "free-%d" % (7 - _)
            h.wait_fresh_second(0.15)
            before = self.d.metrics()
            hits_before = self.mc.incr_hits()
            rs = [self.c.limit(key) for _ in range(16)]
            hits = self.mc.incr_hits() - hits_before
            after = self.d.metrics()
            if len({r.json["window"] for r in rs}) == 1:
                break
        else:
            self.fail("burst never fitted one window")
        self.assertEqual([r.status for r in rs], [200] * 10 + [429] * 6)
        d_deny = after.get("ratelimitd_deny_cache_hits_total") - before.get("ratelimitd_deny_cache_hits_total")
        # the 11th learns the key is over; the 12th..16th (same connection, same thread) hit the cache
        self.assertEqual(d_deny, 5)
        # 11 increments: one created the counter, 10 found it; the 5 deny-cache answers none
        self.assertEqual(hits, 10, "a deny-cache answer must not reach memcached")
        # deny-cache answers carry the full decision fields too
        last = rs[-1]
        self.assertEqual(last.header("RateLimit-Policy"), '"free";q=10;w=1')
        self.assertEqual(h.parse_ratelimit(last.header("RateLimit"))[1], 0)
        self.assertGreaterEqual(int(last.header("Retry-After")), 1)
        self.assertEqual(last.json["remaining"], 0)
        self.assertIs(last.json["allowed"], False)

    def test_build_info(self):
        m = self.d.metrics()
        infos = m.find("ratelimitd_build_info")
        self.assertEqual(len(infos), 1, infos)
        labels, value = infos[0]
        self.assertEqual(value, 1)
        r = h.run_cmd([h.rl_binary(), "--version"])
        self.assertIn(labels.get("version", "<none>"), r.stdout, "build_info version vs --version")

    def test_backend_latency_histogram(self):
        for i in range(20):
            self.assertEqual(self.c.limit("premium-key-1").status, 200)
        m = self.d.metrics()
        self.assertEqual(m.types.get(HIST), "histogram")
        buckets = m.find(HIST + "_bucket")
        self.assertGreaterEqual(len(buckets), 3, "histogram needs buckets")

        def le(b):
            return float("inf") if b[0]["le"] == "+Inf" else float(b[0]["le"])

        buckets.sort(key=le)
        self.assertEqual(buckets[-1][0]["le"], "+Inf")
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts), "cumulative buckets must not decrease")
        count = m.get(HIST + "_count")
        total = m.get(HIST + "_sum")
        self.assertIsNotNone(count)
        self.assertIsNotNone(total)
        self.assertGreaterEqual(count, 20)
        self.assertEqual(counts[-1], count, "+Inf bucket == _count")
        self.assertGreater(total, 0)
        self.assertLess(total / count, 0.1, "mean memcached round trip on loopback should be far below 100 ms")

    def test_open_connections_gauge(self):
        extra = [self.d.client() for _ in range(3)]
        try:
            # served, hence accepted: a connection the client has opened may still wait in the
            # listener's backlog of a loop thread (the ASan build once counted 4 without this)
            for c in [self.c] + extra:
                self.assertEqual(c.get("/healthz").status, 200)
            m = self.d.metrics()  # on a 4th connection, itself open while it is served
            self.assertGreaterEqual(m.get("ratelimitd_open_connections"), 5,  # 3 + self.c + the scrape
                                    "three extra keep-alive connections plus the test's own are open")
            self.assertEqual(m.types.get("ratelimitd_open_connections"), "gauge")
        finally:
            for c in extra:
                c.close()
        self.c.close()
        v = h.wait_until(lambda: self.d.metrics().get("ratelimitd_open_connections") <= 1, 3.0)
        self.assertTrue(v, "open connections gauge did not fall back after closing: %s" %
                        self.d.metrics().get("ratelimitd_open_connections"))

    def test_per_node_series(self):
        self.assertEqual(self.c.limit("premium-key-1").status, 200)
        m = self.d.metrics()
        self.assertEqual(m.get("ratelimitd_backend_node_up", node=self.mc.addr), 1, m.find("ratelimitd_backend_node_up"))
        ej = m.find("ratelimitd_backend_ejections_total", node=self.mc.addr)
        self.assertEqual([v for _, v in ej], [0])
        errs = m.find("ratelimitd_backend_errors_total", node=self.mc.addr)
        self.assertTrue(errs, "backend_errors_total{node=...,reason=...} series should exist for every node")
        for labels, v in errs:
            self.assertIn("reason", labels)
            self.assertEqual(v, 0, labels)

    def test_memcached_keys_are_hashed_prefixed_windowed_with_ttl(self):
        self.assertEqual(self.c.limit("free-secret-key").status, 403)  # not listed: no backend call
        raw = "premium-key-1"
        r = self.c.limit(raw)
        self.assertEqual(r.status, 200)
        window = r.json["window"]
        dump = self.mc.command("lru_crawler metadump all", timeout=3)
        entries = re.findall(r"key=(\S+) exp=(-?\d+) la=(\d+)", dump)
        self.assertEqual(len(entries), 1, "one counter expected in memcached: %r" % dump)
        key, exp, la = urllib.parse.unquote(entries[0][0]), int(entries[0][1]), int(entries[0][2])
        self.assertTrue(key.startswith("rl:"), key)
        self.assertTrue(key.endswith(":%d" % window), "memcached key must end with :<window>: %r" % key)
        hashed = key[len("rl:"):-len(":%d" % window)]
        self.assertNotIn(raw, key)
        self.assertGreaterEqual(len(hashed), 16, "a 128-bit hash, encoded: %r" % hashed)
        # one increment: created (la) and expiry (exp) both in memcached's own 1-second clock
        self.assertGreaterEqual(exp - la, 3, "TTL must be at least 3 s (exp %d, created %d)" % (exp, la))
        self.assertLessEqual(exp - la, 10)
        # memcached's clock may lag the wall clock by up to a tick; the counter still outlives its window
        self.assertGreaterEqual(exp - window, 2, "counter would expire inside its window (exp %d)" % exp)
        self.assertNotIn(raw, self.d.log(), "the raw API key reached the log")
        self.assertNotIn("free-secret-key", dump + self.d.log())

    def test_memcached_keys_carry_a_configured_key_prefix(self):
        """backend.key_prefix replaces "rl:" (tenants sharing a memcached pool by prefix)."""
        (mc,) = self.memcached(1)
        port = h.free_port()
        cfg = h.base_config(port, [mc.addr])
        cfg["backend"]["key_prefix"] = "tenant7:"
        d = self.daemon(cfg, port=port)
        c = d.client()
        self.addCleanup(c.close)
        r = c.limit("prefixed-key")
        self.assertEqual(r.status, 200)
        dump = mc.command("lru_crawler metadump all", timeout=3)
        keys = [urllib.parse.unquote(k) for k in re.findall(r"key=(\S+) exp=", dump)]
        self.assertEqual(len(keys), 1, "one counter expected in memcached: %r" % dump)
        self.assertTrue(keys[0].startswith("tenant7:"), keys[0])
        self.assertNotIn("rl:", keys[0], "the default prefix must not be used as well")

    def test_increments_to_a_node_are_pipelined(self):
        # 100 concurrent streams on one h2c connection: one loop thread, many increments per turn
        before = self.d.metrics()
        r = h.run_cmd(["h2load", "-n", "3000", "-c", "1", "-m", "100", "-H", "X-API-Key: bulk-key",
                       "http://127.0.0.1:%d/limit" % self.port], timeout=30)
        self.assertIn("3000 succeeded", r.stdout, r.stdout + r.stderr)
        after = self.d.metrics()
        node = self.mc.addr
        writes = after.sum("ratelimitd_backend_writes_total", node=node) - before.sum(
            "ratelimitd_backend_writes_total", node=node)
        reqs = after.sum("ratelimitd_backend_write_requests_total", node=node) - before.sum(
            "ratelimitd_backend_write_requests_total", node=node)
        self.assertGreater(writes, 0)
        self.assertTrue(3000 <= reqs <= 3004, "every increment is written to the node once (plus idle probes): %d"
                        % reqs)
        print("pipelining: %d increments in %d writes (%.1f per write)" % (reqs, writes, reqs / writes))
        self.assertGreaterEqual(reqs / writes, 4, "increments of one loop turn must leave in one write")


if __name__ == "__main__":
    h.main()
