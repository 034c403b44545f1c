"""
bench/h2keys, the HTTP/2 load generator behind bench/run's h2-keys scenario: what it reports
must be what ratelimitd saw. Against the local store with 50 keys of limit 10, every whole
window second admits exactly 500 requests, so its 200 count also proves that it rotates over
exactly the keys it was given (one key would get 10 a second, 100 keys 1,000).
"""

import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl")
CONNS, STREAMS, KEYS, LIMIT = 4, 10, 50, 10


def h2keys_binary():
    b = os.environ.get("RL_H2KEYS", "")
    if not b or not os.access(b, os.X_OK):
        h.fail_hard("RL_H2KEYS=%r is not an executable (built with ratelimitd when libnghttp2-dev is installed: "
                    "scripts/deps test)" % b)
    return b


def run_h2keys(port, seconds, keys=KEYS, conns=CONNS):
    r = h.run_cmd([h2keys_binary(), "-c", str(conns), "-m", str(STREAMS), "-d", str(seconds), "-k", str(keys),
                   h.HOST, str(port)], timeout=seconds + 30)
    m = re.search(r"^BENCH_JSON (.*)$", r.stdout, re.M)
    if not m:
        raise AssertionError("h2keys printed no result (exit %d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    return r.returncode, json.loads(m.group(1))


class H2keysTest(h.RLTestCase):
    def setUp(self):
        super().setUp()
        self.port = h.free_port()
        self.d = self.daemon(h.base_config(self.port), port=self.port)

    def decisions(self):
        m = self.d.metrics()
        return {d: m.get("ratelimitd_requests_total", 0, decision=d) for d in ("allowed", "limited")}

    def test_counts_are_the_daemons_and_every_key_is_used(self):
        before = self.decisions()
        t0 = time.time()
        rc, res = run_h2keys(self.port, 2.5)
        t1 = time.time()
        after = self.decisions()
        self.assertEqual(rc, 0, res)
        self.assertEqual(set(res["errors"].values()), {0}, res)
        self.assertLessEqual(set(res["status"]), {"200", "429"}, res)
        ok, limited = res["status"].get("200", 0), res["status"].get("429", 0)
        self.assertEqual(ok + limited, res["requests"], res)
        # windows the run touched; the first and the last may be partial
        windows = int(t1) - int(t0) + 1
        self.assertGreaterEqual(ok, KEYS * LIMIT * (windows - 2), (windows, res))
        self.assertLessEqual(ok, KEYS * LIMIT * windows, (windows, res))
        self.assertGreater(limited, ok, "the keys should be over their limit most of the time: %r" % res)
        # streams still open at the deadline were answered by the daemon but are not counted
        in_flight = CONNS * STREAMS
        for decision, seen in (("allowed", ok), ("limited", limited)):
            delta = after[decision] - before[decision]
            self.assertGreaterEqual(delta, seen, (decision, res))
            self.assertLessEqual(delta - seen, in_flight, (decision, delta, res))
        self.assertTrue(0 < res["p50_us"] <= res["p90_us"] <= res["p99_us"] <= res["max_us"], res)
        self.assertAlmostEqual(res["duration_us"] / 1e6, 2.5, delta=0.2)

    def test_a_refused_connection_is_an_error(self):
        rc, res = run_h2keys(h.free_port(), 0.5, conns=3)
        self.assertEqual(rc, 1, res)
        self.assertEqual(res["errors"]["connect"], 3, res)
        self.assertEqual(res["requests"], 0, res)

    def test_a_server_that_goes_away_is_an_error(self):
        # the daemon stops mid-run: GOAWAY and closed connections are read errors, not answers
        stopper = threading.Timer(1.0, self.d.stop)
        stopper.start()
        try:
            rc, res = run_h2keys(self.port, 3)
        finally:
            stopper.join()
        self.assertEqual(rc, 1, res)
        self.assertGreater(res["requests"], 0, res)
        self.assertEqual(res["errors"]["read"], CONNS, res)


if __name__ == "__main__":
    h.main()
