"""
Exactness across instances: two ratelimitd processes share three memcached nodes (same
key_hash_secret). Many keep-alive clients spread over both hammer 50 keys for a few seconds. For
every (key, window) the number of 200s is never above the key's limit, and equals it whenever
that (key, window) saw more requests than the limit (no backend failure here, so neither more
nor fewer). Every node holds some counters: consistent hashing spreads the keys.
"""

import collections
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl")
NUM_KEYS = 50
NUM_CLIENTS = 8
DURATION_S = 4.0


def key_limit(i):
    return 5 if i % 2 == 0 else 10


class ExactnessTest(h.RLTestCase):
    def test_two_instances_three_nodes_exact_per_window(self):
        nodes = self.memcached(3)
        servers = [n.addr for n in nodes]
        keys = ["exact-%02d" % i for i in range(NUM_KEYS)]
        limits = {k: key_limit(i) for i, k in enumerate(keys)}
        daemons = []
        for name in ("a", "b"):
            port = h.free_port()
            cfg = h.base_config(port, servers)
            cfg["limits"] = {"default": 10, "tiers": {"five": 5, "ten": 10},
                             "keys": {k: ("five" if limits[k] == 5 else "ten") for k in keys}}
            cfg["backend"]["timeout_ms"] = 1000  # a slow CI box must not turn into failures
            cfg["backend"]["key_hash_secret"] = "shared-secret"
            daemons.append(self.daemon(cfg, port=port, name=name))

        records = []  # (key, window, status) from every client
        errors = []
        lock = threading.Lock()
        stop_at = time.monotonic() + DURATION_S

        def worker(idx):
            d = daemons[idx % 2]
            mine = []
            try:
                c = d.client(timeout=5)
                n = idx
                while time.monotonic() < stop_at:
                    # a spread over all keys, different per client, deterministic
                    key = keys[(n * 7 + idx * 13) % NUM_KEYS]
                    n += 1
                    r = c.limit(key)
                    if r.status not in (200, 429):
                        mine.append((key, None, r.status))
                        continue
                    body = r.json
                    mine.append((key, body["window"], r.status))
                c.close()
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append("client %d: %r" % (idx, e))
            with lock:
                records.extend(mine)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(NUM_CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION_S + 30)
        self.assertFalse(errors, errors)
        for d in daemons:
            self.assertAlive(d)

        bad_status = collections.Counter(s for _, w, s in records if w is None)
        self.assertFalse(bad_status, "only 200 and 429 expected: %r" % bad_status)
        total = collections.Counter((k, w) for k, w, _ in records)
        ok = collections.Counter((k, w) for k, w, s in records if s == 200)
        self.assertGreater(len(records), 2000, "too little load to prove anything")

        over, under = [], []
        saturated = 0
        for kw, n in total.items():
            lim = limits[kw[0]]
            if ok[kw] > lim:
                over.append((kw, ok[kw], lim, n))
            if n > lim:
                saturated += 1
                if ok[kw] != lim:
                    under.append((kw, ok[kw], lim, n))
        self.assertFalse(over, "more 200s than the limit in a window (key, window), 200s, limit, requests: %r" %
                         over[:20])
        self.assertFalse(under, "fewer 200s than the limit though more requests came (key, window), 200s, limit, "
                         "requests: %r" % under[:20])
        self.assertGreater(saturated, NUM_KEYS, "most (key, window) pairs should have been over their limit")

        # both instances took part
        for d in daemons:
            m = d.metrics()
            self.assertGreater(m.get("ratelimitd_requests_total", 0, decision="allowed"), 0, d.name)
            self.assertEqual(m.get("ratelimitd_requests_total", 0, decision="backend_error"), 0, d.name)
            self.assertEqual(m.sum("ratelimitd_backend_errors_total"), 0, d.name)

        # consistent hashing spread the counters over every node (TTL >= 3 s: still there)
        items = [n.curr_items() for n in nodes]
        for n, count in zip(nodes, items):
            self.assertGreater(count, 0, "node %s holds no counter; items per node: %r" % (n.addr, items))
        print("exactness: %d requests, %d (key,window) pairs, %d saturated, items per node %r" %
              (len(records), len(total), saturated, items))


if __name__ == "__main__":
    h.main()
