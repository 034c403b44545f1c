"""
Every memcached node down. on_failure closed: /limit 503 with a JSON error, /readyz 503, /healthz
200, backend errors counted; when nodes appear, /readyz and /limit recover by themselves.
on_failure open: /limit 200 (admitted, uncounted) and the error is counted.
"""

import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl")


def backend_errors(d):
    return d.metrics().get("ratelimitd_requests_total", 0, decision="backend_error")


class AllDownTest(h.RLTestCase):
    def start(self, servers, on_failure, **backend):
        port = h.free_port()
        cfg = h.base_config(port, servers)
        cfg["backend"].update({"on_failure": on_failure, "timeout_ms": 50})
        cfg["backend"].update(backend)
        return self.daemon(cfg, port=port)

    def test_closed_with_nothing_listening_then_nodes_appear(self):
        ports = [h.free_port() for _ in range(3)]
        d = self.start(["127.0.0.1:%d" % p for p in ports], "closed", retry_interval_ms=200)
        c = d.client()
        self.addCleanup(c.close)
        before = backend_errors(d)
        for i in range(5):
            r = c.limit("down-%d" % i)
            self.assertEqual(r.status, 503, r)
            self.assertTrue(r.json.get("error"), r)
            self.assertLess(r.elapsed, 1.0, "a refused connection must not make a request wait")
        self.assertEqual(backend_errors(d) - before, 5, "every 503 is counted as a backend_error decision")
        self.assertEqual(c.get("/readyz").status, 503)
        self.assertEqual(c.get("/healthz").status, 200)
        # a node that never answered is not up (allow a moment for the connect failures to add up)
        all_down = h.wait_until(lambda: all(d.metrics().get("ratelimitd_backend_node_up", None,
                                                            node="127.0.0.1:%d" % p) == 0 for p in ports), 2.0)
        m = d.metrics()
        self.assertTrue(all_down, "node_up should be 0 for nodes with nothing listening: %r" %
                        m.find("ratelimitd_backend_node_up"))
        self.assertGreater(m.sum("ratelimitd_backend_errors_total"), 0)

        # nodes come up on those ports
        for p in ports:
            self.nodes.append(h.Memcached(port=p).start())
        ready = h.wait_until(lambda: h.status_of(d.port, "/readyz") == 200, 5.0)
        self.assertTrue(ready, "/readyz not 200 within 5 s of the nodes starting")
        ok = h.wait_until(lambda: c.limit("up-" + uuid.uuid4().hex).status == 200, 5.0)
        self.assertTrue(ok, "/limit not 200 within 5 s of the nodes starting")
        # and every loop thread decides again: each thread re-admits the nodes on its own retry
        # timer (retry_interval_ms 200 plus reconnect), so within a bound, fresh connections
        # (spread over the threads by SO_REUSEPORT) all get 200
        def fresh_all_ok():
            return all(h.http_get(d.port, "/limit", {"X-API-Key": "fresh-" + uuid.uuid4().hex})[0] == 200
                       for _ in range(10))
        self.assertTrue(h.wait_until(fresh_all_ok, 3.0), "a loop thread still answers 503 3 s after recovery")
        self.assertAlive(d)

    def test_closed_nodes_killed_while_running(self):
        nodes = self.memcached(2)
        d = self.start([n.addr for n in nodes], "closed", failure_limit=2, retry_interval_ms=300)
        c = d.client()
        self.addCleanup(c.close)
        self.assertEqual(c.limit("before").status, 200)
        self.assertEqual(c.get("/readyz").status, 200)
        for n in nodes:
            n.kill()
        # the first requests may still be in the pipeline; soon every decision is 503
        self.assertTrue(h.wait_until(lambda: c.limit("after-" + uuid.uuid4().hex).status == 503, 3.0))
        for i in range(10):
            r = c.limit("after-%d" % i)
            self.assertEqual(r.status, 503, r)
            self.assertIn("error", r.json)
        self.assertTrue(h.wait_until(lambda: h.status_of(d.port, "/readyz") == 503, 3.0), "/readyz stays 200")
        self.assertEqual(h.http_get(d.port, "/healthz")[0], 200)
        # restart on the same ports
        for n in nodes:
            self.nodes.append(h.Memcached(port=n.port).start())
        self.assertTrue(h.wait_until(lambda: h.status_of(d.port, "/readyz") == 200, 5.0))
        self.assertTrue(h.wait_until(lambda: c.limit("back-" + uuid.uuid4().hex).status == 200, 5.0))
        self.assertAlive(d)

    def test_open_with_all_down_admits_and_counts_error(self):
        ports = [h.free_port() for _ in range(2)]
        d = self.start(["127.0.0.1:%d" % p for p in ports], "open")
        c = d.client()
        self.addCleanup(c.close)
        before = backend_errors(d)
        rs = [c.limit("open-key") for _ in range(20)]  # more than the limit: none is counted
        self.assertEqual([r.status for r in rs], [200] * 20, [r.body for r in rs if r.status != 200][:3])
        for r in rs:
            self.assertIs(r.json["allowed"], True)
            self.assertEqual(r.json["limit"], 10)
            self.assertIsNotNone(r.header("RateLimit-Policy"), r)
        self.assertEqual(backend_errors(d) - before, 20, "each fail-open admission counts a backend_error")
        self.assertEqual(c.get("/readyz").status, 503)
        self.assertEqual(c.get("/healthz").status, 200)
        self.assertAlive(d)

    def test_errors_by_node_add_up_when_every_node_is_ejected(self):
        # With every node out of the ring, each failed decision is still charged to its key's
        # node in ratelimitd_backend_errors_total (reason unreachable), not only to
        # requests_total{decision="backend_error"}.
        ports = [h.free_port() for _ in range(2)]
        d = self.start(["127.0.0.1:%d" % p for p in ports], "open", failure_limit=2, retry_interval_ms=60000)
        threads = 2  # base_config
        all_ejected = h.wait_until(
            lambda: d.metrics().sum("ratelimitd_backend_ejections_total") >= threads * len(ports), 5.0)
        self.assertTrue(all_ejected, d.metrics().find("ratelimitd_backend_ejections_total"))
        m0 = d.metrics()
        for i in range(30):
            st, _, _ = h.http_get(d.port, "/limit", {"X-API-Key": "ejected-%d" % i})
            self.assertEqual(st, 200)
        m1 = d.metrics()
        failed = (m1.get("ratelimitd_requests_total", 0, decision="backend_error")
                  - m0.get("ratelimitd_requests_total", 0, decision="backend_error"))
        self.assertEqual(failed, 30)
        charged = {p: m1.sum("ratelimitd_backend_errors_total", node="127.0.0.1:%d" % p, reason="unreachable")
                   - m0.sum("ratelimitd_backend_errors_total", node="127.0.0.1:%d" % p, reason="unreachable")
                   for p in ports}
        self.assertEqual(sum(charged.values()), 30, charged)
        self.assertTrue(all(v > 0 for v in charged.values()), "30 keys spread over both nodes: %r" % charged)
        self.assertAlive(d)


if __name__ == "__main__":
    h.main()
