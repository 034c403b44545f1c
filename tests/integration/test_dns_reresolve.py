"""
A memcached host given by name moves to another address (a rescheduled pod): after the node's
connection is lost, ratelimitd's reconnects resolve the name again and follow it, with no restart.
A name that stops resolving counts as a failure of that node (logged, ejected) and recovers when
it resolves again.

The test cannot edit DNS, so ratelimitd runs with an LD_PRELOAD shim (tests/support/
resolve_shim.c, path in RL_RESOLVE_SHIM) that answers getaddrinfo() for `mc-moves.test` with the
address written in a file; memcached runs on 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback).
Without re-resolution the node would stay at its start-up address and /limit would answer 503
forever (on_failure: closed).
"""

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

REQUIRED_TOOLS = ("memcached", "curl")
FAKE_NAME = "mc-moves.test"
OLD_IP, NEW_IP = "127.0.0.2", "127.0.0.3"


def asan_runtime(binary):
    """The ASan runtime `binary` loads dynamically (gcc -fsanitize=address), or None. It must come
    first in LD_PRELOAD, before the shim, or ASan refuses to start."""
    try:
        out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^\s*libasan\.so[.\d]*\s+=>\s+(\S+)", out, re.M)
    return m.group(1) if m else None


def shim_env(resolve_file):
    shim = os.environ.get("RL_RESOLVE_SHIM")
    if not shim or not os.path.isfile(shim):
        h.fail_hard("RL_RESOLVE_SHIM=%r is not the built resolve shim (run through ctest)" % shim)
    preload = [shim]
    asan = asan_runtime(h.rl_binary())
    if asan:
        preload.insert(0, asan)
    return {"LD_PRELOAD": " ".join(preload), "RL_TEST_RESOLVE_FILE": resolve_file, "RL_TEST_RESOLVE_NAME": FAKE_NAME}


def point_name_at(path, ip, delay_ms=0):
    """What the fake name resolves to from now on ("" = it does not resolve), answered after
    delay_ms (a slow DNS server)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s\n%d\n" % (ip, delay_ms))
    os.replace(tmp, path)


def shared_port():
    """A port free on both test addresses, so the node keeps its port when it moves."""
    for _ in range(20):
        port = h.free_port()
        if not h.port_accepts(port, OLD_IP) and not h.port_accepts(port, NEW_IP):
            return port
    raise RuntimeError("no free port on %s and %s" % (OLD_IP, NEW_IP))


def fresh_limit(d):
    """The status of one /limit on a new connection (new connections spread over the loop threads)."""
    return h.status_of(d.port, "/limit", {"X-API-Key": "k-" + uuid.uuid4().hex})


class DnsReresolveTest(h.RLTestCase):
    def start_daemon(self, mc_port, **overrides):
        self.resolve_file = os.path.join(self.tmpdir, "resolve.txt")
        point_name_at(self.resolve_file, OLD_IP)
        port = h.free_port()
        cfg = h.base_config(port, ["%s:%d" % (FAKE_NAME, mc_port)], **overrides)
        cfg["backend"].update({"on_failure": "closed", "timeout_ms": 200, "failure_limit": 3,
                               "retry_interval_ms": 200})
        d = self.daemon(cfg, port=port, env=shim_env(self.resolve_file))
        self.assertTrue(h.wait_until(lambda: fresh_limit(d) == 200, 5.0),
                        "no 200 from the node at its start-up address\n" + d.log_tail())
        return d

    def start_memcached(self, ip, port):
        m = h.Memcached(port=port, host=ip).start()
        self.nodes.append(m)
        return m

    def assert_all_threads_recover(self, d, what):
        # every loop thread re-resolves on its own: 10 fresh connections in a row must all get 200
        def all_ok():
            return all(fresh_limit(d) == 200 for _ in range(10))

        self.assertTrue(h.wait_until(all_ok, 5.0, interval=0.1), "%s: /limit not 200 again within 5 s\n%s" %
                        (what, d.log_tail()))

    def test_reconnect_follows_the_name_to_its_new_address(self):
        mc_port = shared_port()
        old = self.start_memcached(OLD_IP, mc_port)
        d = self.start_daemon(mc_port)
        self.assertGreater(old.curr_items(), 0, "the first counters must be on the node at %s" % OLD_IP)

        # the pod is rescheduled: the old address goes away, the name now points at the new one
        old.kill()
        new = self.start_memcached(NEW_IP, mc_port)
        point_name_at(self.resolve_file, NEW_IP)

        self.assert_all_threads_recover(d, "after the move")
        self.assertGreater(new.curr_items(), 0, "counters must now go to the node at %s" % NEW_IP)
        line = "memcached: node %s:%d now at %s:%d (was %s:%d)" % (FAKE_NAME, mc_port, NEW_IP, mc_port, OLD_IP,
                                                                    mc_port)
        self.assertIn(line, d.log())
        self.assertEqual(d.metrics().get("ratelimitd_backend_node_up", None, node="%s:%d" % (FAKE_NAME, mc_port)),
                         1)
        self.assertAlive(d)

    def test_a_name_that_stops_resolving_is_a_node_failure_until_it_resolves_again(self):
        mc_port = shared_port()
        old = self.start_memcached(OLD_IP, mc_port)
        d = self.start_daemon(mc_port)
        node = "%s:%d" % (FAKE_NAME, mc_port)

        # the name disappears with the pod (NXDOMAIN): reconnects fail at the lookup
        point_name_at(self.resolve_file, "")
        old.kill()
        self.assertTrue(h.wait_until(lambda: fresh_limit(d) == 503, 3.0), "node still answering after the kill")
        self.assertTrue(h.wait_until(lambda: "node %s: cannot resolve %s: " % (node, FAKE_NAME) in d.log(), 3.0),
                        "a failed lookup must be logged with the node and the resolver's error\n" + d.log_tail())
        # one lost connection is 1 failure; ejection (failure_limit 3) needs the failed lookups too
        self.assertTrue(h.wait_until(lambda: d.metrics().sum("ratelimitd_backend_ejections_total", node=node) >= 1,
                                     3.0), "failed lookups must count towards ejection: %r" %
                        d.metrics().find("ratelimitd_backend_ejections_total"))
        self.assertFalse(h.wait_until(lambda: fresh_limit(d) == 200, 0.5), "200 while the name does not resolve")

        # it comes back, somewhere else
        self.start_memcached(NEW_IP, mc_port)
        point_name_at(self.resolve_file, NEW_IP)
        self.assert_all_threads_recover(d, "after the name resolved again")
        self.assertIn("memcached: node %s now at %s:%d (was %s:%d)" % (node, NEW_IP, mc_port, OLD_IP, mc_port),
                      d.log())
        self.assertAlive(d)

    def test_a_name_that_does_not_resolve_at_start_up_starts_down_and_joins_later(self):
        """A memcached pod still pending has no DNS record yet: ratelimitd must start anyway (a
        configuration error would crash-loop every new pod), with that node down, and take it
        into the ring once the name resolves."""
        mc_port = shared_port()
        self.resolve_file = os.path.join(self.tmpdir, "resolve.txt")
        point_name_at(self.resolve_file, "")
        port = h.free_port()
        node = "%s:%d" % (FAKE_NAME, mc_port)
        cfg = h.base_config(port, [node])
        cfg["backend"].update({"on_failure": "closed", "timeout_ms": 200, "retry_interval_ms": 200})
        d = self.daemon(cfg, port=port, env=shim_env(self.resolve_file))
        self.assertIn("backend server %s: " % node, d.log())
        self.assertIn("the node starts down and is looked up again before each connect", d.log())
        self.assertEqual(fresh_limit(d), 503, "no node resolves, so on_failure: closed answers 503")
        self.assertEqual(h.status_of(port, "/readyz"), 503)

        self.start_memcached(OLD_IP, mc_port)
        point_name_at(self.resolve_file, OLD_IP)
        self.assert_all_threads_recover(d, "once the name resolved")
        self.assertIn("memcached: node %s resolved to %s:%d" % (node, OLD_IP, mc_port), d.log())
        self.assertEqual(h.status_of(port, "/readyz"), 200)
        self.assertAlive(d)

    def test_a_slow_lookup_does_not_hold_up_another_nodes_reconnect(self):
        """While node A's name waits on a slow DNS server, node B (another name) loses its
        connection: its lookup must not queue behind A's. With h2o's resolver (one FIFO, a pool of
        one thread by default) B waited 7.7 s; with a pool of 32, 3.7 s in one CI run."""
        a_port, b_port = shared_port(), h.free_port()
        # B is "localhost" through libc, at the address libc gives first (it may be ::1)
        b_ip = socket.getaddrinfo("localhost", b_port, 0, socket.SOCK_STREAM)[0][4][0]
        a = self.start_memcached(OLD_IP, a_port)
        b = self.start_memcached(b_ip, b_port)
        self.resolve_file = os.path.join(self.tmpdir, "resolve.txt")
        point_name_at(self.resolve_file, OLD_IP)
        port = h.free_port()
        cfg = h.base_config(port, ["%s:%d" % (FAKE_NAME, a_port), "localhost:%d" % b_port])
        cfg["backend"].update({"on_failure": "closed", "timeout_ms": 200, "failure_limit": 3,
                               "retry_interval_ms": 200})
        d = self.daemon(cfg, port=port, env=shim_env(self.resolve_file))
        self.assert_all_threads_recover(d, "at start")
        c = d.client()
        self.addCleanup(c.close)
        owners = h.key_owners(c, [a, b], ["b-%s" % uuid.uuid4().hex for _ in range(40)])
        b_keys = [k for k, (i, _) in owners.items() if i == 1]
        self.assertGreater(len(b_keys), 3, "too few of 40 keys on node B: %r" % owners)

        def b_answers():
            # fresh connections spread over the loop threads; 429 is an answer from B too
            return all(h.status_of(port, "/limit", {"X-API-Key": b_keys[i % len(b_keys)]}) in (200, 429)
                       for i in range(10))

        point_name_at(self.resolve_file, OLD_IP, delay_ms=4000)
        a.kill()  # every loop thread now looks A up again, for 4 s
        self.assertTrue(h.wait_until(lambda: d.metrics().sum("ratelimitd_backend_errors_total",
                                                             node="%s:%d" % (FAKE_NAME, a_port)) >= 2, 3.0))
        time.sleep(0.3)
        b.kill()
        self.nodes.append(h.Memcached(port=b_port, host=b_ip).start())
        t0 = time.monotonic()
        self.assertTrue(h.wait_until(b_answers, 10.0, interval=0.05), "node B never came back\n" + d.log_tail())
        took = time.monotonic() - t0
        print("\nnode B answered again %.2f s after its restart, while node A's lookups took 4 s" % took)
        self.assertLess(took, 2.0, "node B's reconnect waited %.1f s for node A's slow lookups" % took)

    def test_stopping_while_a_lookup_is_in_flight_exits_cleanly(self):
        # the lookups are cancelled; h2o may still answer one, into a queue that must outlive it
        mc_port = shared_port()
        old = self.start_memcached(OLD_IP, mc_port)
        d = self.start_daemon(mc_port, log_level="debug")
        point_name_at(self.resolve_file, OLD_IP, delay_ms=3000)
        old.kill()
        self.assertTrue(h.wait_until(lambda: fresh_limit(d) == 503, 3.0), "node still answering after the kill")
        t0 = time.monotonic()
        rc = d.stop(signal.SIGTERM, 10)
        self.assertEqual(rc, 0, d.log_tail())
        self.assertLess(time.monotonic() - t0, 2.5, "shutdown must not wait for the slow lookup")
        self.assertIn("a host name lookup was still in flight", d.log())
        self.assertIn("info main: stopped", d.log())


if __name__ == "__main__":
    h.main()
