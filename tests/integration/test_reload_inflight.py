"""A SIGHUP that lands while a decision waits on memcached must not free what that decision
still uses (regression: the tier name lived in the old limits and was read after the reload
freed them; under ASan the daemon aborted). The node is stalled with SIGSTOP so the decision
stays pending across two reloads, then times out and is answered fail-open with its tier."""
import os
import signal
import tempfile
import threading
import unittest

import rlharness as h


def one_thread_daemon(tmp, node, backend):
    """A daemon with one loop thread on one memcached node, not started yet: (daemon, config)."""
    d = h.Daemon(tmp, backend=["127.0.0.1:%d" % node.port])
    cfg = h.base_config(d.port, ["127.0.0.1:%d" % node.port])
    cfg["threads"] = 1
    cfg["backend"].update(backend)
    return d, cfg


class ReloadInflightTest(unittest.TestCase):
    def test_reload_while_a_decision_is_pending_keeps_its_tier(self):
        with tempfile.TemporaryDirectory() as tmp:
            node = h.Memcached().start()
            try:
                d, cfg = one_thread_daemon(tmp, node, {"timeout_ms": 1500, "window_ttl_s": 4, "failure_limit": 1000})
                cfg["limits"] = {"default": 10, "tiers": {"gold-a": 50}, "keys": {"k1": "gold-a"}}
                d.write_config(cfg)
                d.start()
                try:
                    # Reload once so the worker holds limits that only it references.
                    cfg["limits"]["tiers"] = {"gold-b": 50}
                    cfg["limits"]["keys"] = {"k1": "gold-b"}
                    d.write_config(cfg)
                    d.send_signal(signal.SIGHUP)
                    self.assertTrue(h.wait_until(lambda: "reloaded limits" in d.log(), 5), d.log_tail())

                    def written():
                        return d.metrics().get("ratelimitd_backend_write_requests_total", 0, node=node.addr)

                    before = written()
                    node.pause()
                    result = {}

                    def pending_request():
                        result["r"] = d.client(timeout=10).limit("k1")

                    t = threading.Thread(target=pending_request)
                    t.start()
                    # the increment waits on the stalled node once written (not after a fixed sleep)
                    self.assertTrue(h.wait_until(lambda: written() > before, 5.0, interval=0.01),
                                    "the increment never reached the node\n" + d.log_tail())
                    cfg["limits"]["tiers"] = {"gold-c": 50}
                    cfg["limits"]["keys"] = {"k1": "gold-c"}
                    d.write_config(cfg)
                    d.send_signal(signal.SIGHUP)  # frees the limits the pending decision came from
                    t.join(10)
                    self.assertFalse(t.is_alive(), "request never answered\n" + d.log_tail())
                    r = result["r"]
                    self.assertEqual(r.status, 200, d.log_tail())  # on_failure: open after timeout_ms
                    self.assertEqual(r.header("RateLimit-Policy"), '"gold-b";q=50;w=1')
                    # The whole quota left: the increment was never counted, so the decision really
                    # waited on the stalled node across the reload and was answered after timeout_ms.
                    self.assertRegex(r.header("RateLimit"), r'^"gold-b";r=50;t=\d+$', d.log_tail())
                    self.assertTrue(d.alive(), "daemon died\n" + d.log_tail())
                    self.assertTrue(h.wait_until(lambda: d.log().count("reloaded limits") == 2, 5), d.log_tail())
                    node.resume()
                    self.assertEqual(d.client().limit("k1").header("RateLimit-Policy"), '"gold-c";q=50;w=1')
                finally:
                    node.resume()
                    self.assertEqual(d.stop(), 0, d.log_tail())
            finally:
                node.stop()

    def test_a_denial_decided_before_a_reload_does_not_outlive_it(self):
        """README: a reload empties the deny caches, so a key whose limit was raised is counted
        again at once. A decision that waited on memcached across the reload is answered under
        the limit it was made with, but its denial must not go back into the emptied cache: that
        denied the key, with the new limit in its headers, until the window ended."""
        with tempfile.TemporaryDirectory() as tmp:
            node = h.Memcached().start()
            try:
                d, cfg = one_thread_daemon(tmp, node, {"timeout_ms": 1000, "failure_limit": 1000})
                cfg["limits"] = {"default": 10, "tiers": {"free": 10}, "keys": {}}
                d.write_config(cfg)
                d.start()
                try:
                    for attempt in range(4):
                        key = "k-raise-%d" % attempt
                        cfg["limits"]["tiers"] = {"free": 10}
                        cfg["limits"]["keys"] = {key: "free"}
                        d.write_config(cfg)
                        reloads = d.log().count("reloaded limits")
                        d.send_signal(signal.SIGHUP)
                        self.assertTrue(h.wait_until(lambda: d.log().count("reloaded limits") > reloads, 5),
                                        d.log_tail())
                        window = h.wait_fresh_second(0.1)
                        c = d.client()
                        self.assertEqual([c.limit(key).status for _ in range(10)], [200] * 10)
                        before = d.metrics().get("ratelimitd_backend_write_requests_total", 0, node=node.addr)
                        node.pause()
                        result = {}
                        t = threading.Thread(target=lambda: result.update(r=d.client(timeout=10).limit(key)))
                        try:
                            t.start()
                            self.assertTrue(h.wait_until(
                                lambda: d.metrics().get("ratelimitd_backend_write_requests_total", 0,
                                                        node=node.addr) > before, 5.0, interval=0.01),
                                "the 11th increment never reached the node\n" + d.log_tail())
                            cfg["limits"]["tiers"] = {"free": 100}
                            d.write_config(cfg)
                            reloads = d.log().count("reloaded limits")
                            d.send_signal(signal.SIGHUP)
                            self.assertTrue(h.wait_until(lambda: d.log().count("reloaded limits") > reloads, 5),
                                            d.log_tail())
                        finally:
                            node.resume()
                        t.join(10)
                        r11, r12 = result["r"], c.limit(key)
                        if r11.status != 429 or r12.json.get("window") != window:
                            continue  # timed out (fail-open) or the window ended: try again
                        self.assertEqual(r11.header("RateLimit-Policy"), '"free";q=10;w=1')
                        self.assertEqual(r12.status, 200, "denied from the cache after the reload: %r" % (r12,))
                        self.assertEqual(r12.header("RateLimit-Policy"), '"free";q=100;w=1')
                        self.assertEqual(r12.json["remaining"], 88)
                        break
                    else:
                        self.fail("could not fit the sequence into one window in 4 attempts\n" + d.log_tail())
                finally:
                    node.resume()
                    self.assertEqual(d.stop(), 0, d.log_tail())
            finally:
                node.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
