"""
Exactness across instances: two ratelimitd processes share three memcached nodes (same
key_hash_secret). Many keep-alive clients spread over both hammer 50 keys for a few seconds. For
every (key, window) the number of 200s is never above the key's limit, and equals it whenever
that (key, window) saw more requests than the limit (no backend failure here, so neither more
nor fewer). Every node holds some counters: consistent hashing spreads the keys. Also: the local
store across loop threads, h2load-level concurrency over HTTP/2, and key_hash_secret isolation.
"""

import collections
import os
import re
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl", "h2load")
NUM_KEYS = 50
NUM_CLIENTS = 8
DURATION_S = 4.0


def key_limit(i):
    return 5 if i % 2 == 0 else 10


def hammer(daemons, keys, duration, clients=NUM_CLIENTS):
    """Keep-alive clients (spread over `daemons`) send /limit for `keys` for `duration` seconds.
    Returns (records [(key, window or None, status)], errors)."""
    records, errors = [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def worker(idx):
        d = daemons[idx % len(daemons)]
        mine = []
        try:
            c = d.client(timeout=5)
            n = idx
            while time.monotonic() < stop_at:
                key = keys[(n * 7 + idx * 13) % len(keys)]  # a spread over all keys, per client
                n += 1
                r = c.limit(key)
                if r.status in (200, 429):
                    mine.append((key, r.json["window"], r.status))
                else:
                    mine.append((key, None, r.status))
            c.close()
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append("client %d: %r" % (idx, e))
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 30)
    return records, errors


def check_exact(test, records, limit_of):
    """Per (key, window): 200s <= limit, and == limit when more requests than the limit came."""
    bad_status = collections.Counter(s for _, w, s in records if w is None)
    test.assertFalse(bad_status, "only 200 and 429 expected: %r" % bad_status)
    total = collections.Counter((k, w) for k, w, _ in records)
    ok = collections.Counter((k, w) for k, w, s in records if s == 200)
    over, under = [], []
    saturated = 0
    for kw, n in total.items():
        lim = limit_of(kw[0])
        if ok[kw] > lim:
            over.append((kw, ok[kw], lim, n))
        if n > lim:
            saturated += 1
            if ok[kw] != lim:
                under.append((kw, ok[kw], lim, n))
    test.assertFalse(over, "more 200s than the limit in a window ((key, window), 200s, limit, requests): %r" %
                     over[:20])
    test.assertFalse(under, "fewer 200s than the limit though more requests came ((key, window), 200s, limit, "
                     "requests): %r" % under[:20])
    return total, saturated


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

        records, errors = hammer(daemons, keys, DURATION_S)
        self.assertFalse(errors, errors)
        for d in daemons:
            self.assertAlive(d)
        self.assertGreater(len(records), 2000, "too little load to prove anything")
        total, saturated = check_exact(self, records, limits.get)
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

    def test_local_backend_exact_across_threads(self):
        port = h.free_port()
        cfg = h.base_config(port, None)
        cfg["limits"] = {"default": 7, "tiers": {}, "keys": {}}
        d = self.daemon(cfg, port=port)
        keys = ["local-%02d" % i for i in range(20)]
        records, errors = hammer([d], keys, 2.5)
        self.assertFalse(errors, errors)
        self.assertGreater(len(records), 1000)
        total, saturated = check_exact(self, records, lambda k: 7)
        self.assertGreater(saturated, 20)
        self.assertAlive(d)

    def test_h2load_concurrency_two_instances_one_hot_key(self):
        """Hundreds of concurrent HTTP/2 streams on both instances for one key: the 200s summed
        over both instances never exceed limit x windows touched, and fill every inner window."""
        nodes = self.memcached(3)
        limit = 50
        daemons = []
        for name in ("a", "b"):
            port = h.free_port()
            cfg = h.base_config(port, [n.addr for n in nodes])
            cfg["limits"] = {"default": limit, "tiers": {}, "keys": {}}
            cfg["backend"]["timeout_ms"] = 1000
            cfg["backend"]["key_hash_secret"] = "shared-secret"
            daemons.append(self.daemon(cfg, port=port, name=name))
        key = "hot-" + uuid.uuid4().hex
        t0 = time.time()
        procs = [subprocess.Popen(["h2load", "-D", "3", "-c", "4", "-m", "50", "-H", "X-API-Key: " + key,
                                   "http://127.0.0.1:%d/limit" % d.port], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for d in daemons]
        outs = []
        try:
            for p in procs:
                outs.append(p.communicate(timeout=30)[0])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        t1 = time.time()
        windows = int(t1) - int(t0) + 1
        allowed = 0
        for d, out in zip(daemons, outs):
            m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
            self.assertIsNotNone(m, out)
            self.assertEqual(int(m.group(4)), 0, "5xx under load: " + out)
            self.assertGreater(int(m.group(3)), 1000, "the key should be far over its limit: " + out)
            allowed += int(m.group(1))
            self.assertEqual(d.metrics().get("ratelimitd_requests_total", 0, decision="backend_error"), 0)
            self.assertAlive(d)
        self.assertLessEqual(allowed, limit * windows, "more 200s than %d x %d windows" % (limit, windows))
        self.assertGreaterEqual(allowed, limit * (windows - 2), "inner windows must be filled to the limit")
        print("h2load: %d x 200 over %d windows (limit %d)" % (allowed, windows, limit))

    def test_different_hash_secrets_do_not_share_counters(self):
        (mc,) = self.memcached(1)
        daemons = []
        for name, secret in (("s1", "secret-one"), ("s2", "secret-two")):
            port = h.free_port()
            cfg = h.base_config(port, [mc.addr])
            cfg["backend"]["key_hash_secret"] = secret
            daemons.append(self.daemon(cfg, port=port, name=name))
        c1, c2 = daemons[0].client(), daemons[1].client()
        self.addCleanup(c1.close)
        self.addCleanup(c2.close)
        for _ in range(4):
            key = "iso-" + uuid.uuid4().hex
            h.wait_fresh_second(0.1)
            r1 = [c1.limit(key) for _ in range(10)]
            r2 = c2.limit(key)
            if len({r.json["window"] for r in r1 + [r2]}) == 1:
                break
        self.assertEqual(r1[-1].json["remaining"], 0)
        self.assertEqual(r2.json["remaining"], 9, "another secret must give another memcached key")
        self.assertGreaterEqual(mc.curr_items(), 2)

    def test_a_counter_is_one_96_byte_item_with_the_window_ttl(self):
        """docs/DEPLOY.md sizes memcached from this: with the default key_prefix each counter is
        one item in memcached's 96-byte slab class, expiring window_ttl_s (3) after it is made."""
        (mc,) = self.memcached(1)
        d = self.daemon(backend=[mc.addr])
        c = d.client()
        self.addCleanup(c.close)
        for i in range(500):
            c.limit("sizing-%d-%s" % (i, uuid.uuid4().hex[:8]))
        slabs = mc.command("stats slabs")
        chunks = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"STAT (\d+):chunk_size (\d+)", slabs)}
        used = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"STAT (\d+):used_chunks (\d+)", slabs)}
        in_use = {chunks[cls] for cls, n in used.items() if n > 0}
        self.assertEqual(in_use, {96}, "slab chunk sizes holding counters: %r" % in_use)
        self.assertEqual(sum(used.values()), mc.curr_items())
        # each key was used once, so its last access is its creation: it lives window_ttl_s
        dump = mc.command("lru_crawler metadump all")
        lifetimes = [int(m.group(1)) - int(m.group(2)) for m in re.finditer(r" exp=(\d+) la=(\d+) ", dump)]
        self.assertEqual(len(lifetimes), mc.curr_items())
        self.assertEqual(set(lifetimes), {3}, "expiry minus creation, seconds")


if __name__ == "__main__":
    h.main()
