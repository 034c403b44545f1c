"""
The HTTP contract of /limit and the admin endpoints, with the local (in-process) backend, and the
command line (--check-config, --version, --help, unknown flags). No memcached is needed here.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl")


def unique(prefix="k"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


class LimitApiTest(h.RLTestCase):
    def setUp(self):
        super().setUp()
        self.d = self.daemon()
        self.c = self.d.client()
        self.addCleanup(self.c.close)

    def test_local_store_reports_its_node_up(self):
        """An alert on ratelimitd_backend_node_up == 0 must not fire for the in-process store."""
        m = self.d.metrics()
        self.assertEqual(m.get("ratelimitd_backend_node_up", None, node="local"), 1, m.find("ratelimitd_backend_node_up"))

    def burst(self, n, key_prefix="k", method="GET"):
        """n requests for a fresh key, all inside one window (retries on a boundary crossing).
        Returns (key, [Response])."""
        for _ in range(4):
            key = unique(key_prefix)
            h.wait_fresh_second(0.15)
            rs = [self.c.limit(key, method) for _ in range(n)]
            windows = {r.json["window"] for r in rs if r.body}
            if len(windows) == 1:
                return key, rs
        self.fail("could not fit %d requests into one window" % n)

    def check_decision(self, r, allowed, limit, remaining, tier="default"):
        self.assertEqual(r.status, 200 if allowed else 429, r)
        self.assertEqual(r.header("RateLimit-Policy"), '"%s";q=%d;w=1' % (tier, limit), r)
        rl = h.parse_ratelimit(r.header("RateLimit"))
        self.assertIsNotNone(rl, "RateLimit header malformed: %r" % r.header("RateLimit"))
        self.assertEqual(rl[0], tier, r)
        self.assertEqual(rl[1], remaining, r)
        self.assertTrue(0 <= rl[2] <= 1, "t= must be the whole seconds to reset (0..1): %r" % (r,))
        self.assertIn("application/json", r.header("Content-Type", ""), r)
        body = r.json
        self.assertIs(body["allowed"], allowed, r)
        self.assertEqual(body["limit"], limit, r)
        self.assertEqual(body["remaining"], remaining, r)
        self.assertIsInstance(body["window"], int)
        self.assertTrue(abs(body["window"] - time.time()) < 3, "window %r is not the current Unix second" % body)
        self.assertIsInstance(body["reset_ms"], int)
        self.assertTrue(0 <= body["reset_ms"] <= 1000, body)
        # t= is the rest of the window rounded up, as Retry-After is: 580 ms left is t=1, not "now"
        self.assertEqual(rl[2], (body["reset_ms"] + 999) // 1000, r)
        # window and reset_ms place the decision between sending and receiving (same host clock)
        decided_ms = (body["window"] + 1) * 1000 - body["reset_ms"]
        self.assertTrue(r.sent_at * 1000 - 50 <= decided_ms <= r.received_at * 1000 + 50,
                        "window/reset_ms %r do not match the request time %.3f..%.3f" %
                        (body, r.sent_at, r.received_at))
        if not allowed:
            ra = r.header("Retry-After")
            self.assertIsNotNone(ra, "429 without Retry-After: %r" % r)
            self.assertRegex(ra.strip(), r"^\d+$", "Retry-After must be whole seconds")
            self.assertGreaterEqual(int(ra), 1)
            if body["reset_ms"] > 0:
                self.assertEqual(int(ra), rl[2], r)

    def test_under_limit_200_counts_down_then_11th_is_429(self):
        key, rs = self.burst(11)
        t_before = time.time()
        for i, r in enumerate(rs[:10]):
            self.check_decision(r, True, 10, 9 - i)
        self.check_decision(rs[10], False, 10, 0)
        self.assertEqual(rs[10].json["window"], rs[0].json["window"])
        self.assertLessEqual(rs[0].json["window"], int(t_before))
        # a 12th in the same window is still 429 (answered by the deny cache)
        r12 = self.c.limit(key)
        if r12.json["window"] == rs[0].json["window"]:
            self.check_decision(r12, False, 10, 0)

    def test_next_window_admits_again(self):
        key, rs = self.burst(11)
        self.assertEqual(rs[10].status, 429)
        w = rs[0].json["window"]
        while int(time.time()) <= w:
            time.sleep(0.05)
        r = self.c.limit(key)
        self.check_decision(r, True, 10, 9)
        self.assertGreater(r.json["window"], w)

    def test_premium_and_free_tier_policy_names(self):
        r = self.c.limit("premium-key-1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("RateLimit-Policy"), '"premium";q=100;w=1')
        rl = h.parse_ratelimit(r.header("RateLimit"))
        self.assertEqual(rl[0], "premium")
        self.assertEqual(r.json["limit"], 100)
        self.assertTrue(90 <= r.json["remaining"] <= 99, r)
        _, rs = self.burst(12, "prem")
        # unlisted keys use the default limit and the policy name "default"
        self.assertEqual([x.status for x in rs], [200] * 10 + [429] * 2)

    def test_premium_key_allows_100_per_window(self):
        for _ in range(4):
            h.wait_fresh_second(0.1)
            rs = [self.c.limit("premium-key-1") for _ in range(101)]
            if len({x.json["window"] for x in rs}) == 1:
                break
        else:
            self.fail("101 requests did not fit one window")
        self.assertEqual([x.status for x in rs], [200] * 100 + [429], [x.json for x in rs[-3:]])
        self.check_decision(rs[99], True, 100, 0, tier="premium")
        self.check_decision(rs[100], False, 100, 0, tier="premium")

    def test_get_post_head_all_count(self):
        for _ in range(4):
            key = unique("m")
            h.wait_fresh_second(0.15)
            r1 = self.c.limit(key, "GET")
            r2 = self.c.limit(key, "POST")
            r3 = self.c.limit(key, "HEAD")
            r4 = self.c.limit(key, "GET")
            if r1.json["window"] == r4.json["window"]:
                break
        self.check_decision(r1, True, 10, 9)
        self.check_decision(r2, True, 10, 8)
        self.assertEqual(r3.status, 200)
        self.assertEqual(r3.body, b"", "HEAD must have no body")
        self.assertEqual(h.parse_ratelimit(r3.header("RateLimit"))[1], 7, r3)
        self.assertEqual(r3.header("RateLimit-Policy"), '"default";q=10;w=1')
        self.check_decision(r4, True, 10, 6)

    def test_head_answers_have_no_body_on_the_wire(self):
        """http.client drops whatever follows a HEAD answer, so read the bytes: a body after a HEAD
        answer would be taken by a keep-alive client as the start of the next answer."""
        over, rs = self.burst(11)
        self.assertEqual(rs[-1].status, 429)
        key = unique("head")
        req = (b"HEAD /limit HTTP/1.1\r\nHost: a\r\nX-API-Key: " + key.encode() + b"\r\n\r\n" +
               b"HEAD /limit HTTP/1.1\r\nHost: a\r\n\r\n" +
               b"HEAD /limit HTTP/1.1\r\nHost: a\r\nX-API-Key: " + over.encode() + b"\r\n\r\n" +
               b"HEAD /nope HTTP/1.1\r\nHost: a\r\n\r\n" +
               b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        buf, closed = h.raw_exchange(self.d.port, req, read_until_close=True)
        self.assertTrue(closed, buf)
        statuses = []
        for method in ("HEAD", "HEAD", "HEAD", "HEAD", "GET"):
            self.assertTrue(buf.startswith(b"HTTP/1.1 "), "answer %d does not start a status line: %r" %
                            (len(statuses) + 1, buf[:200]))
            head, _, buf = buf.partition(b"\r\n\r\n")
            statuses.append(int(head.split(b" ")[1]))
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if method == "GET":
                buf = buf[int(length.group(1)):]
        self.assertEqual(statuses, [200, 401, 429, 404, 200])
        self.assertEqual(buf, b"", "bytes after the last answer")

    def assertErrorJson(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertIn("application/json", r.header("Content-Type", ""), r)
        body = r.json
        self.assertIn("error", body, r)
        self.assertIsInstance(body["error"], str)
        self.assertTrue(body["error"])

    def test_missing_or_empty_key_is_401(self):
        for r in (self.c.limit(None), self.c.limit(""), self.c.limit(None, "POST")):
            self.assertErrorJson(r, 401)
            # RFC 9110 15.5.2: a 401 says how to authenticate
            self.assertEqual(r.header("WWW-Authenticate"), 'ApiKey header="x-api-key"', r)
        # the connection is still usable afterwards
        self.assertEqual(self.c.limit(unique()).status, 200)

    def test_key_length_bounds(self):
        k256 = ("a" * 240 + uuid.uuid4().hex)[:256]
        self.assertEqual(len(k256), 256)
        r = self.c.limit(k256)
        self.check_decision(r, True, 10, 9)
        self.assertErrorJson(self.c.limit(k256 + "b"), 400)
        self.assertErrorJson(self.c.limit("x" * 1000), 400)

    def test_key_with_forbidden_bytes_is_400(self):
        self.assertErrorJson(self.c.limit("has space"), 400)
        self.assertErrorJson(self.c.limit("tab\there"), 400)
        # bytes http.client would mangle or refuse go out on a raw socket
        for bad in (b"del\x7fkey", b"high\x80byte", b"\xc3\xa9t\xc3\xa9"):
            req = b"GET /limit HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + bad + b"\r\nConnection: close\r\n\r\n"
            buf, _ = h.raw_exchange(self.d.port, req)
            self.assertEqual(h.parse_raw_status(buf), 400, "key %r: %r" % (bad, buf[:200]))
        self.assertEqual(self.c.limit(unique()).status, 200)
        self.assertAlive(self.d)

    def test_two_api_key_headers_are_400_and_charge_neither_key(self):
        """Charging the first of two keys would let the client (or a proxy that appends its own)
        choose which key pays."""
        k1, k2 = unique(), unique()
        for first, second in ((k1, k2), (k1, ""), ("", k2)):
            req = (b"GET /limit HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: " + first.encode() +
                   b"\r\nx-api-key: " + second.encode() + b"\r\nConnection: close\r\n\r\n")
            buf, _ = h.raw_exchange(self.d.port, req, read_until_close=True)
            self.assertEqual(h.parse_raw_status(buf), 400, "%r, %r: %r" % (first, second, buf[:300]))
            self.assertIn(b'{"error":"more than one API key"}', buf)
        # neither key was counted: each still has its whole quota
        self.check_decision(self.c.limit(k1), True, 10, 9)
        self.check_decision(self.c.limit(k2), True, 10, 9)

    def test_http1_whitespace_around_the_key_is_not_part_of_it(self):
        """RFC 9110 5.5: a gateway may pad the value with spaces or tabs; the key is what is
        between them, charged like the bare key (h2o 2.2.5 strips only the leading side)."""
        for _ in range(4):
            key = unique()
            h.wait_fresh_second(0.15)
            answers = []
            for value in (b" " + key.encode() + b" ", b"\t" + key.encode() + b" \t "):
                req = b"GET /limit HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key:" + value + b"\r\nConnection: close\r\n\r\n"
                buf, _ = h.raw_exchange(self.d.port, req)
                self.assertEqual(h.parse_raw_status(buf), 200, "%r: %r" % (value, buf[:300]))
                answers.append(buf)
            r = self.c.limit(key)
            if len({r.json["window"]} | {int(re.search(rb'"window":(\d+)', b).group(1)) for b in answers}) == 1:
                self.check_decision(r, True, 10, 7)
                break
        else:
            self.fail("could not fit 3 requests into one window")
        buf, _ = h.raw_exchange(self.d.port, b"GET /limit HTTP/1.1\r\nHost: a\r\nX-API-Key: \t \r\nConnection: close\r\n\r\n")
        self.assertEqual(h.parse_raw_status(buf), 401, buf[:300])

    def test_what_h2o_answers_itself_is_a_plain_400_and_not_counted(self):
        """The README's HTTP API row: requests h2o's parser refuses never reach ratelimitd, and an
        obsolete folded header reaches it as its first line only."""
        before = self.d.metrics().sum("ratelimitd_requests_total")
        many = b"".join(b"X-Pad-%d: v\r\n" % i for i in range(120))
        for head in (b"X-API-Key: ctl\x01key\r\n", b"X-API-Key: " + unique().encode() + b"\r\n" + many):
            buf, _ = h.raw_exchange(self.d.port, b"GET /limit HTTP/1.1\r\nHost: a\r\n" + head +
                                    b"Connection: close\r\n\r\n", read_until_close=True)
            self.assertEqual(h.parse_raw_status(buf), 400, buf[:300])
            self.assertIn(b"text/plain", buf.split(b"\r\n\r\n")[0].lower(), buf[:300])
        self.assertEqual(self.d.metrics().sum("ratelimitd_requests_total"), before)

        for _ in range(4):
            key = unique("fold")
            h.wait_fresh_second(0.15)
            buf, _ = h.raw_exchange(self.d.port, b"GET /limit HTTP/1.1\r\nHost: a\r\nX-API-Key: " + key.encode() +
                                    b"\r\n  extra\r\nConnection: close\r\n\r\n")
            self.assertEqual(h.parse_raw_status(buf), 200, buf[:300])
            r = self.c.limit(key)
            if r.json["window"] == int(re.search(rb'"window":(\d+)', buf).group(1)):
                self.check_decision(r, True, 10, 8)  # the folded request was charged to its first line
                break
        else:
            self.fail("could not fit 2 requests into one window")

    def test_printable_ascii_key_is_accepted(self):
        key = "".join(chr(c) for c in range(0x21, 0x7F)) + uuid.uuid4().hex
        self.assertEqual(self.c.limit(key).status, 200)

    def test_admin_endpoints_and_unknown_paths(self):
        r = self.c.get("/healthz")
        self.assertEqual(r.status, 200)
        r = self.c.get("/readyz")
        self.assertEqual(r.status, 200)
        r = self.c.get("/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r.headers)
        h.Metrics(r.body.decode())  # parses as Prometheus text
        self.assertIn("ratelimitd_requests_total", r.body.decode())
        # a 404 is an error like any other: a JSON body {"error":"..."} (the fallback, /limit's own
        # path check, and an admin endpoint's)
        self.assertErrorJson(self.c.get("/nope"), 404)
        self.assertErrorJson(self.c.request("GET", "/limit/extra", {"X-API-Key": "a"}), 404)
        self.assertErrorJson(self.c.get("/healthz/extra"), 404)
        for method in ("PUT", "DELETE", "PATCH"):
            r = self.c.request(method, "/limit", {"X-API-Key": unique()})
            self.assertEqual(r.status, 405, "%s /limit: %r" % (method, r))
            allow = r.header("Allow") or ""
            self.assertIn("GET", allow, "405 should list allowed methods in Allow: %r" % r)
        for path in ("/healthz", "/readyz", "/metrics"):
            for method in ("POST", "PUT", "DELETE"):
                r = self.c.request(method, path)
                self.assertErrorJson(r, 405)
                allow = r.header("Allow") or ""
                self.assertIn("GET", allow, "%s %s: %r" % (method, path, r))
                self.assertIn("HEAD", allow, "%s %s: %r" % (method, path, r))
        self.assertErrorJson(self.c.request("POST", "/nope"), 404)
        # a target without its leading "/" is no path of ours, though h2o's normalisation adds one
        before = self.d.metrics().sum("ratelimitd_requests_total")
        for target in (b"limit", b"healthz", b"metrics"):
            buf, _ = h.raw_exchange(self.d.port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nX-API-Key: " +
                                    unique().encode() + b"\r\nConnection: close\r\n\r\n")
            self.assertEqual(h.parse_raw_status(buf), 404, "%r: %r" % (target, buf[:300]))
        self.assertEqual(self.d.metrics().sum("ratelimitd_requests_total"), before)
        # still serving on the same connection
        self.assertEqual(self.c.limit(unique()).status, 200)

    def test_http11_without_host_is_400_and_charges_nothing(self):
        """RFC 9112 3.2: an HTTP/1.1 request without Host is answered 400 (HTTP/1.0 has no Host:
        test_http10_and_connection_close)."""
        key = unique("nohost")
        before = self.d.metrics().sum("ratelimitd_requests_total", decision="bad_request")
        for path in (b"/limit", b"/healthz"):
            buf, _ = h.raw_exchange(self.d.port, b"GET " + path + b" HTTP/1.1\r\nX-API-Key: " + key.encode() +
                                    b"\r\nConnection: close\r\n\r\n", read_until_close=True)
            self.assertEqual(h.parse_raw_status(buf), 400, buf[:300])
            self.assertIn(b'{"error":"missing Host header"}', buf)
        self.assertEqual(self.d.metrics().sum("ratelimitd_requests_total", decision="bad_request"), before + 1)
        self.check_decision(self.c.limit(key), True, 10, 9)

    def test_http10_and_connection_close(self):
        key = unique("h10")
        buf, closed = h.raw_exchange(self.d.port, b"GET /limit HTTP/1.0\r\nX-API-Key: " + key.encode() + b"\r\n\r\n",
                                     read_until_close=True)
        self.assertEqual(h.parse_raw_status(buf), 200, buf[:300])
        self.assertTrue(closed, "HTTP/1.0 without keep-alive: the server closes")
        self.assertIn(b'"allowed":true', buf)
        buf, closed = h.raw_exchange(self.d.port, b"GET /limit?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                                     b"X-API-Key: " + key.encode() + b"\r\n\r\n", read_until_close=True)
        self.assertEqual(h.parse_raw_status(buf), 200, buf[:300])
        self.assertTrue(closed)


class SlowBackendTest(h.RLTestCase):
    def test_an_answer_delayed_past_its_window_says_the_window_is_over(self):
        """reset_ms, t= and Retry-After tell the client what is left of the window when the answer
        leaves, not when the request came: a decision that waited for a stalled node past the end
        of its window must not send the client to wait for a second that is already over."""
        (mc,) = self.memcached(1)
        port = h.free_port()
        cfg = h.base_config(port, [mc.addr])
        cfg["limits"]["default"] = 1
        cfg["backend"].update({"timeout_ms": 1800, "window_ttl_s": 4, "failure_limit": 1000})
        d = self.daemon(cfg, port=port)
        c = d.client()
        self.addCleanup(c.close)
        key = unique()
        h.wait_fresh_second(0.3)
        self.assertEqual(c.limit(key).status, 200)
        mc.pause()
        try:
            result = {}
            t = threading.Thread(target=lambda: result.update(r=c.limit(key)))
            t.start()
            time.sleep(1.3)
        finally:
            mc.resume()
        t.join(5)
        r = result["r"]
        self.assertEqual(r.status, 429, r)
        body = r.json
        left_ms = max(0, (body["window"] + 1) * 1000 - r.received_at * 1000)
        self.assertGreater(r.received_at, body["window"] + 1, "the answer was meant to come after its window")
        self.assertLessEqual(body["reset_ms"], left_ms + 50, r)
        self.assertEqual(h.parse_ratelimit(r.header("RateLimit"))[2], 0, r)
        self.assertEqual(r.header("Retry-After"), "1", r)


class ConfigVariantsTest(h.RLTestCase):
    def test_unknown_keys_reject_gives_403_for_unlisted_keys(self):
        port = h.free_port()
        cfg = h.base_config(port)
        cfg["limits"]["unknown_keys"] = "reject"
        cfg["limits"]["keys"]["listed-free"] = "free"
        d = self.daemon(cfg, port=port)
        c = d.client()
        self.addCleanup(c.close)
        r = c.limit("stranger")
        self.assertEqual(r.status, 403, r)
        self.assertIn("error", r.json)
        r = c.limit("premium-key-1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("RateLimit-Policy"), '"premium";q=100;w=1')
        r = c.limit("listed-free")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("RateLimit-Policy"), '"free";q=10;w=1')
        # 401/400 still win over 403
        self.assertEqual(c.limit(None).status, 401)
        self.assertEqual(c.limit("a b").status, 400)

    def test_custom_api_key_header(self):
        port = h.free_port()
        cfg = h.base_config(port, api_key_header="X-Client-Token")
        d = self.daemon(cfg, port=port)
        c = d.client()
        self.addCleanup(c.close)
        h.wait_fresh_second(0.2)
        r1 = c.limit("abc", header="X-Client-Token")
        self.assertEqual(r1.status, 200, r1)
        r = c.limit("abc", header="x-client-token")  # header names are case-insensitive
        self.assertEqual(r.status, 200, r)
        if r.json["window"] == r1.json["window"]:
            self.assertEqual(r.json["remaining"], 8, r)
        r = c.limit("abc", header="X-API-Key")  # the default header is not consulted any more
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.header("WWW-Authenticate"), 'ApiKey header="x-client-token"', r)


def find_pos(text, line_contains, token):
    """1-based (line, column) of `token` on the first line containing `line_contains`."""
    for i, line in enumerate(text.splitlines()):
        if line_contains in line:
            return i + 1, line.index(token) + 1
    raise AssertionError("no line with %r" % line_contains)


class CommandLineTest(h.RLTestCase):
    def run_bin(self, *args, timeout=10):
        return h.run_cmd([h.rl_binary()] + list(args), timeout=timeout)

    def test_a_loop_thread_that_cannot_be_created_fails_start_up_cleanly(self):
        """A pids limit can refuse a thread. The loops already started must be stopped and joined
        before the server they use is freed: before, this exited by SIGSEGV or abort, or under
        ASan with a heap-use-after-free, most of the time."""
        shim = os.environ.get("RL_RESOLVE_SHIM")
        if not shim or not os.path.isfile(shim):
            h.fail_hard("RL_RESOLVE_SHIM=%r is not the built test shim (run through ctest)" % shim)
        port = h.free_port()
        path = os.path.join(self.tmpdir, "threads.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(h.base_config(port, threads=8)))
        # the shim first, so that its pthread_create is the one ratelimitd calls (under ASan it
        # then calls ASan's, which must be told not to insist on coming first)
        env = dict(os.environ, LD_PRELOAD=shim, RL_TEST_FAIL_PTHREAD_CREATE_AT="4",
                   ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
        for attempt in range(10):
            r = subprocess.run([h.rl_binary(), "-c", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=20, env=env)
            self.assertEqual(r.returncode, 1, "attempt %d: %r" % (attempt, r.stderr[-3000:]))
            self.assertIn("pthread_create: Resource temporarily unavailable", r.stderr)
            self.assertNotIn("AddressSanitizer", r.stderr)
        self.assertFalse(h.port_accepts(port))

    def test_check_config_ok(self):
        port = h.free_port()
        path = os.path.join(self.tmpdir, "good.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(h.base_config(port, ["127.0.0.1:%d" % h.free_port()])))
        t0 = time.monotonic()
        r = self.run_bin("--check-config", "--config", path)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout.strip(), "ok", r)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertFalse(h.port_accepts(port), "--check-config must not listen")
        r = self.run_bin("-c", path, "--check-config")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "ok"), r)

    def test_check_config_reports_every_error_with_line_and_column(self):
        port = h.free_port()
        text = ("listen:\n"
                "  - address: 127.0.0.1\n"
                "    port: %d\n"
                "limits:\n"
                "  default: ten\n"
                "  bogus_field: 1\n"
                "  tiers:\n"
                "    gold: 0\n"
                "backend:\n"
                "  timeout_ms: 99999999\n" % port)
        path = os.path.join(self.tmpdir, "bad.yaml")
        with open(path, "w") as f:
            f.write(text)
        # bind the port ourselves: a daemon that tried to listen would fail, or block
        with socket.socket() as guard:
            guard.bind((h.HOST, port))
            guard.listen(1)
            r = self.run_bin("--check-config", "-c", path)
        self.assertEqual(r.returncode, 2, r)
        out = r.stdout + r.stderr
        self.assertNotIn("\nok", "\n" + r.stdout)
        lines = out.splitlines()
        for line_contains, key_tok, val_tok, key_path in (("default: ten", "default", "ten", "limits.default"),
                                                          ("bogus_field", "bogus_field", "1", "limits.bogus_field"),
                                                          ("gold: 0", "gold", "0", "limits.tiers.gold"),
                                                          ("timeout_ms", "timeout_ms", "99999999",
                                                           "backend.timeout_ms")):
            ln, kcol = find_pos(text, line_contains, key_tok)
            _, vcol = find_pos(text, line_contains, val_tok)
            cands = ["%s:%d:%d:" % (path, ln, kcol), "%s:%d:%d:" % (path, ln, vcol)]
            hits = [x for x in lines if any(x.startswith(c) for c in cands)]
            self.assertTrue(hits, "expected an error at %s (1-based line:column) in:\n%s" % (" or ".join(cands), out))
            self.assertTrue(any(key_path in x for x in hits), "error at %s should name %s: %r" % (cands, key_path, hits))

    def test_check_config_yaml_syntax_error(self):
        path = os.path.join(self.tmpdir, "syntax.yaml")
        with open(path, "w") as f:
            f.write("listen:\n  - port: 8080\nlimits: [unclosed\n")
        r = self.run_bin("--check-config", "-c", path)
        self.assertEqual(r.returncode, 2, r)
        self.assertRegex(r.stdout + r.stderr, r"%s:\d+:\d+" % path.replace(".", r"\."))

    def test_check_config_missing_file(self):
        path = os.path.join(self.tmpdir, "does-not-exist.yaml")
        r = self.run_bin("--check-config", "-c", path)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("does-not-exist.yaml", r.stdout + r.stderr)

    def test_config_file_of_exactly_64_mib_is_read_and_one_byte_more_is_refused(self):
        """README: the file is at most 64 MiB. A 64 MiB file, padded by a comment, is checked ok;
        one byte more is refused, naming the file."""
        limit = 64 << 20
        head = b"limits:\n  default: 10\n#"
        for size, ok in ((limit, True), (limit + 1, False)):
            path = os.path.join(self.tmpdir, "big-%d.yaml" % size)
            with open(path, "wb") as f:
                f.write(head + b"x" * (size - len(head) - 1) + b"\n")
            self.assertEqual(os.path.getsize(path), size)
            r = self.run_bin("--check-config", "-c", path, timeout=60)
            os.unlink(path)
            if ok:
                self.assertEqual((r.returncode, r.stdout.strip()), (0, "ok"), r)
            else:
                self.assertEqual(r.returncode, 2, r)
                self.assertIn("%s: File too large" % path, r.stdout + r.stderr)

    def test_run_with_bad_config_exits_nonzero_without_listening(self):
        port = h.free_port()
        path = os.path.join(self.tmpdir, "bad-run.yaml")
        with open(path, "w") as f:
            f.write("listen:\n  - port: %d\n    address: 127.0.0.1\nlimits:\n  default: -5\n" % port)
        r = self.run_bin("-c", path, timeout=10)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn("bad-run.yaml:5:", r.stdout + r.stderr)

    def test_check_config_meaning_errors(self):
        text = ("limits:\n"
                "  keys: { \"k1\": nosuchtier }\n"
                "  tiers: { \"bad tier\": 5 }\n"
                "backend:\n"
                "  type: memcached\n"
                "  servers: []\n")
        path = os.path.join(self.tmpdir, "meaning.yaml")
        with open(path, "w") as f:
            f.write(text)
        r = self.run_bin("--check-config", "-c", path)
        self.assertEqual(r.returncode, 2, r)
        out = r.stdout + r.stderr
        for line_no, what in ((2, "nosuchtier"), (3, "bad tier"), (6, "servers")):
            self.assertRegex(out, r"%s:%d:\d+: " % (re.escape(path), line_no), "%s error expected on line %d:\n%s" %
                             (what, line_no, out))

    def test_port_in_use_fails_fast(self):
        with socket.socket() as guard:
            guard.bind((h.HOST, 0))
            guard.listen(1)
            port = guard.getsockname()[1]
            path = os.path.join(self.tmpdir, "busy.yaml")
            with open(path, "w") as f:
                f.write(h.to_yaml(h.base_config(port)))
            r = self.run_bin("-c", path, timeout=10)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn(str(port), r.stderr, r)

    def test_bad_tls_files_pass_check_config_but_fail_start_up(self):
        """--check-config reads only the config file (README), so a rendered config checks
        anywhere; start-up loads the certificate and key and refuses a missing or mismatched one,
        naming the file."""
        cert, key = h.make_self_signed_cert(self.tmpdir)
        other = os.path.join(self.tmpdir, "other")
        os.mkdir(other)
        _, other_key = h.make_self_signed_cert(other)
        missing = os.path.join(self.tmpdir, "missing.pem")
        for name, tls, expect in (("missing", {"certificate": missing, "key": key},
                                   "cannot load TLS certificate %s: No such file or directory" % missing),
                                  ("nokey", {"certificate": cert, "key": missing},
                                   "cannot load TLS key %s: No such file or directory" % missing),
                                  ("mismatch", {"certificate": cert, "key": other_key},
                                   "cannot load TLS key %s: " % other_key)):
            cfg = h.base_config(h.free_port())
            cfg["listen"].append({"address": h.HOST, "port": h.free_port(), "tls": tls})
            path = os.path.join(self.tmpdir, name + ".yaml")
            with open(path, "w") as f:
                f.write(h.to_yaml(cfg))
            r = self.run_bin("--check-config", "-c", path)
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "ok"), r)
            r = self.run_bin("-c", path, timeout=10)
            self.assertNotEqual(r.returncode, 0, r)
            self.assertIn(expect, r.stderr, r)
            self.assertNotIn("(null)", r.stderr, r)

    def test_default_config_path_is_conf_ratelimitd_yaml(self):
        """Without -c the file is conf/ratelimitd.yaml under the working directory."""
        cwd = os.path.join(self.tmpdir, "cwd")
        os.makedirs(os.path.join(cwd, "conf"))

        def check():
            return subprocess.run([h.rl_binary(), "--check-config"], cwd=cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=10)

        r = check()
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("conf/ratelimitd.yaml: No such file or directory", r.stdout, r)
        with open(os.path.join(cwd, "conf", "ratelimitd.yaml"), "w") as f:
            f.write("threads: 1\nno_such_field: 1\n")
        r = check()
        self.assertEqual(r.returncode, 2, r)
        self.assertTrue(r.stdout.startswith("conf/ratelimitd.yaml:2:1: "), r)
        with open(os.path.join(cwd, "conf", "ratelimitd.yaml"), "w") as f:
            f.write(h.to_yaml(h.base_config(h.free_port())))
        r = check()
        self.assertEqual((r.returncode, r.stdout), (0, "ok\n"), r)

    def test_threads_zero_means_one_per_usable_cpu(self):
        """threads: 0 starts one loop thread per CPU the process may run on (its affinity mask,
        so a container's cpuset is respected), as the start-up line reports."""
        usable = os.sched_getaffinity(0)
        for cpus in ({min(usable)}, usable):
            port = h.free_port()
            cfg = h.base_config(port)
            cfg["threads"] = 0
            d = self.daemon(cfg, port=port, name="t%d" % len(cpus), cpus=cpus)
            # the line is logged once the threads run, which may be just after /healthz answers
            self.assertTrue(h.wait_until(lambda: " started: " in d.log(), 3.0), d.log_tail())
            self.assertIn("listener(s), %d loop thread(s)," % len(cpus), d.log())
            self.assertEqual(h.http_get(port, "/limit", {"X-API-Key": "t0"})[0], 200)
            self.assertEqual(d.stop(), 0)

    def test_an_empty_or_short_key_hash_secret_is_warned_about_with_memcached(self):
        """The default secret is empty, which makes every memcached key a plain hash of its API
        key, and a short one (the example file's placeholder) is guessable: the start-up log says
        so, and says nothing once a secret of 16 bytes or more is set."""
        for secret, warning in (("", "backend.key_hash_secret is empty"),
                                ("change-me", "backend.key_hash_secret has only 9 bytes"),
                                ("s3cret-from-a-vault", None)):
            warned = warning is not None
            port = h.free_port()
            cfg = h.base_config(port, ["127.0.0.1:%d" % h.free_port()])  # no memcached needed
            cfg["backend"]["key_hash_secret"] = secret
            d = self.daemon(cfg, port=port, name="secret-%d" % len(secret))
            self.assertTrue(h.wait_until(lambda: " started: " in d.log(), 3.0), d.log_tail())
            self.assertEqual("backend.key_hash_secret" in d.log(), warned, d.log_tail())
            if warned:
                self.assertIn(warning, d.log())
            self.assertEqual(d.stop(), 0)

    def test_second_daemon_on_the_same_port_fails_fast(self):
        """SO_REUSEPORT must not let a second ratelimitd share a running one's port and take
        part of its connections."""
        first = self.daemon()
        path = os.path.join(self.tmpdir, "second.yaml")
        with open(path, "w") as f:
            f.write(h.to_yaml(h.base_config(first.port)))
        r = self.run_bin("-c", path, timeout=10)
        self.assertNotEqual(r.returncode, 0, r)
        self.assertIn("cannot listen on 127.0.0.1:%d" % first.port, r.stderr, r)
        self.assertEqual(h.http_get(first.port, "/healthz")[0], 200)

    def test_unknown_flag_prints_usage_and_exits_2(self):
        r = self.run_bin("--definitely-not-a-flag")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("unknown option: --definitely-not-a-flag", r.stderr, r)
        self.assertIn("usage", r.stderr.lower(), r)
        r = self.run_bin("-Z")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("usage", r.stderr.lower(), r)
        # the bad letter itself is named, also inside a group and after other arguments
        for args, bad in ((["-Z"], "-Z"), (["-Zv"], "-Z"), (["-c", "x.yaml", "-Zq"], "-Z")):
            r = self.run_bin(*args)
            self.assertIn("unknown option: %s\n" % bad, r.stderr, (args, r))
        r = self.run_bin("-c")
        self.assertIn("missing argument for option: -c\n", r.stderr, r)

    def test_version_and_help(self):
        r = self.run_bin("--version")
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, r"\d+\.\d+")
        r = self.run_bin("--help")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("--config", r.stdout)
        self.assertIn("--check-config", r.stdout)
        self.assertIn("Usage: ratelimitd [--config FILE] [--check-config] [--version] [--help]\n", r.stdout)
        # every argument is checked before --version or --help acts, whichever comes first
        for args in (("--version", "--bogus"), ("--help", "stray"), ("-v", "-x")):
            r = self.run_bin(*args)
            self.assertEqual(r.returncode, 2, (args, r))
            self.assertEqual(r.stdout, "", (args, r))


if __name__ == "__main__":
    h.main()
