"""
HTTP/2: cleartext h2c with prior knowledge or by Upgrade, h2 over TLS chosen by ALPN, HTTP/1.1 over
TLS, and a short h2load run; the rate-limit contract is the same over every protocol. Every test
runs twice: with the local store (answers in the same loop turn) and with memcached (answers a
loop turn later, while an HTTP/1.1 socket is parked: src/http1_park.c), and with an RSA and an
ECDSA certificate respectively.
"""

import json
import os
import re
import socket
import ssl
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl", "h2load", "nghttp", "openssl")
IDLE_MS = 1500


def parse_curl_i(out):
    """Splits `curl -i` output into a list of (status line, headers dict, body) per response."""
    responses = []
    for m in re.finditer(r"(HTTP/[\d.]+ \d{3}[^\r\n]*)\r?\n(.*?)\r?\n\r?\n", out, re.S):
        hdrs = {}
        for line in m.group(2).splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        responses.append((m.group(1).strip(), hdrs, m.end()))
    return responses


class Http2Test(h.RLTestCase):
    KEY_TYPE = "rsa:2048"

    def backend(self):
        return None

    def setUp(self):
        super().setUp()
        self.cert, self.key = h.make_self_signed_cert(self.tmpdir, self.KEY_TYPE)
        self.port = h.free_port()
        self.tls_port = h.free_port()
        cfg = h.base_config(self.port, self.backend())
        cfg["listen"].append({"address": h.HOST, "port": self.tls_port,
                              "tls": {"certificate": self.cert, "key": self.key}})
        cfg["limits"]["tiers"]["bulk"] = 1000
        cfg["limits"]["keys"]["bulk-key"] = "bulk"
        cfg["server"] = {"idle_timeout_ms": IDLE_MS}
        self.d = self.daemon(cfg, port=self.port)
        self.assertTrue(h.wait_port(self.tls_port, 3), "TLS listener not accepting")

    def test_h2c_prior_knowledge(self):
        key = "h2c-" + uuid.uuid4().hex
        r = h.curl(["-i", "--http2-prior-knowledge", "-H", "X-API-Key: " + key,
                    "http://127.0.0.1:%d/limit" % self.port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("HTTP/2 200"), r.stdout)
        (status, hdrs, end), = parse_curl_i(r.stdout)
        self.assertEqual(hdrs.get("ratelimit-policy"), '"default";q=10;w=1', hdrs)
        rl = h.parse_ratelimit(hdrs.get("ratelimit"))
        self.assertEqual(rl[:2], ("default", 9), hdrs)
        body = json.loads(r.stdout[end:])
        self.assertEqual((body["allowed"], body["limit"], body["remaining"]), (True, 10, 9))

    def test_h2_over_tls_via_alpn(self):
        r = h.curl(["-k", "--http2", "-i", "-H", "X-API-Key: premium-key-1", "-w", "\n%{http_version}",
                    "https://127.0.0.1:%d/limit" % self.tls_port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.rsplit("\n", 1)[1], "2", "ALPN should negotiate h2: %s" % r.stdout)
        self.assertTrue(r.stdout.startswith("HTTP/2 200"), r.stdout)
        (status, hdrs, end), = parse_curl_i(r.stdout)
        self.assertEqual(hdrs.get("ratelimit-policy"), '"premium";q=100;w=1', hdrs)
        # admin endpoints over h2 too
        r = h.curl(["-k", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                    "https://127.0.0.1:%d/healthz" % self.tls_port])
        self.assertEqual(r.stdout, "200 2", r.stderr)

    def test_http11_over_tls(self):
        r = h.curl(["-k", "--http1.1", "-i", "-H", "X-API-Key: tls11-" + uuid.uuid4().hex, "-w", "\n%{http_version}",
                    "https://127.0.0.1:%d/limit" % self.tls_port])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.rsplit("\n", 1)[1], "1.1", r.stdout)
        self.assertTrue(r.stdout.startswith("HTTP/1.1 200"), r.stdout)
        (status, hdrs, end), = parse_curl_i(r.stdout)
        self.assertEqual(hdrs.get("ratelimit-policy"), '"default";q=10;w=1', hdrs)

    def test_h2c_upgrade_then_keepalive_http11_over_tls(self):
        # curl --http2 on http:// asks for h2c with Upgrade; the first request is answered as
        # HTTP/2 stream 1. Then several HTTP/1.1 requests on one TLS keep-alive connection.
        key = "upgrade-" + uuid.uuid4().hex
        h.wait_fresh_second(0.1)
        r = h.curl(["--http2", "-i", "-H", "X-API-Key: " + key, "http://127.0.0.1:%d/limit" % self.port,
                    "http://127.0.0.1:%d/limit" % self.port]).stdout
        self.assertIn("101 Switching Protocols", r)
        statuses = re.findall(r"HTTP/[0-9.]+ (\d{3})", r)
        self.assertEqual(statuses, ["101", "200", "200"], r[:800])
        self.assertEqual(sorted(re.findall(r'"remaining":(\d+)', r)), ["8", "9"], r[:800])
        urls = ["https://127.0.0.1:%d/limit" % self.tls_port] * 4
        r = h.curl(["-k", "--http1.1", "-i", "-H", "X-API-Key: " + key] + urls).stdout
        self.assertEqual(re.findall(r"HTTP/[0-9.]+ (\d{3})", r), ["200"] * 4, r[:800])
        if len(set(re.findall(r'"window":(\d+)', r))) == 1:
            self.assertEqual(re.findall(r'"remaining":(\d+)', r), ["7", "6", "5", "4"], r[:800])

    def test_padded_key_is_trimmed_when_sent_as_http11_and_refused_over_http2(self):
        """README, HTTP API: whitespace around the key is trimmed where HTTP/1.1 allows it, which
        includes the request an h2c Upgrade carries over as stream 1; HTTP/2's own header blocks
        forbid it (400)."""
        for _ in range(4):
            key = "upgrade-pad-" + uuid.uuid4().hex
            h.wait_fresh_second(0.1)
            r = h.curl(["--http2", "-i", "-H", "X-API-Key: %s \t" % key,
                        "http://127.0.0.1:%d/limit" % self.port]).stdout
            self.assertIn("101 Switching Protocols", r)
            self.assertEqual(re.findall(r"HTTP/[0-9.]+ (\d{3})", r), ["101", "200"], r[:800])
            after = self.d.client()
            try:
                a = after.limit(key)
            finally:
                after.close()
            if re.findall(r'"window":(\d+)', r) == [str(a.json["window"])]:
                self.assertEqual(a.json["remaining"], 8, r[:800])
                break
        else:
            self.fail("could not fit 2 requests into one window")
        out = h.run_cmd(["nghttp", "-v", "-H", "X-API-Key: h2-pad-%s " % uuid.uuid4().hex,
                         "http://127.0.0.1:%d/limit" % self.port], timeout=15)
        self.assertEqual(out.returncode, 0, out.stdout[-2000:] + out.stderr)
        self.assertIn(":status: 400", out.stdout, out.stdout[-2000:])

    def test_a_key_in_a_trailer_is_charged_only_where_the_readme_says(self):
        """README, HTTP API: HTTP/1.1 ignores trailers (401); h2o 2.2.5 merges HTTP/2 request
        trailers into the header fields, so a key there is charged, and a key in both is two keys.
        If an h2o upgrade changes this, the README's row must change with it."""
        body = os.path.join(self.tmpdir, "trailer-body")
        with open(body, "w") as f:
            f.write("x")
        key = "trailer-" + uuid.uuid4().hex
        out = h.run_cmd(["nghttp", "-v", "-d", body, "--trailer", "x-api-key: " + key,
                         "http://127.0.0.1:%d/limit" % self.port], timeout=15)
        self.assertEqual(out.returncode, 0, out.stdout[-2000:] + out.stderr)
        self.assertIn(":status: 200", out.stdout, out.stdout[-2000:])
        out = h.run_cmd(["nghttp", "-v", "-d", body, "-H", "x-api-key: " + key, "--trailer", "x-api-key: " + key,
                         "http://127.0.0.1:%d/limit" % self.port], timeout=15)
        self.assertIn(":status: 400", out.stdout, out.stdout[-2000:])
        self.assertIn("more than one API key", out.stdout, out.stdout[-2000:])
        req = (b"POST /limit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-API-Key\r\n"
               b"Connection: close\r\n\r\n1\r\nx\r\n0\r\nX-API-Key: " + key.encode() + b"\r\n\r\n")
        buf, _ = h.raw_exchange(self.port, req)
        self.assertEqual(h.parse_raw_status(buf), 401, buf[:300])

    def test_cleartext_port_still_speaks_http11(self):
        c = self.d.client()
        try:
            self.assertEqual(c.limit("plain-" + uuid.uuid4().hex).status, 200)
        finally:
            c.close()

    def nghttp_burst(self, n):
        """n requests for one fresh key multiplexed on one h2c connection (nghttp; curl 7.88's
        prior-knowledge connection reuse fails client-side). Returns {stream: headers}, body text."""
        for _ in range(4):
            key = "h2-burst-" + uuid.uuid4().hex
            h.wait_fresh_second(0.1)
            urls = ["http://127.0.0.1:%d/limit?n=%d" % (self.port, i) for i in range(n)]
            r = h.run_cmd(["nghttp", "-v", "-H", "X-API-Key: " + key] + urls, timeout=15)
            self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr)
            streams = {}
            for sid, name, value in re.findall(r"recv \(stream_id=(\d+)\) ([^:\s][^:]*|:status): (.*)", r.stdout):
                streams.setdefault(int(sid), {})[name.strip()] = value.strip()
            windows = set(re.findall(r'"window":(\d+)', r.stdout))
            if len(windows) == 1:
                return streams, r.stdout
        self.fail("%d requests never fitted one window" % n)

    def test_eleventh_request_over_h2_is_429(self):
        streams, out = self.nghttp_burst(11)
        self.assertEqual(len(streams), 11, out[-3000:])
        statuses = sorted(s[":status"] for s in streams.values())
        self.assertEqual(statuses, ["200"] * 10 + ["429"], out[-3000:])
        self.assertEqual(out.count('"allowed":false'), 1)
        remaining = sorted(h.parse_ratelimit(s["ratelimit"])[1] for s in streams.values())
        self.assertEqual(remaining, [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])

    def test_429_headers_over_h2(self):
        streams, out = self.nghttp_burst(12)
        limited = [s for s in streams.values() if s[":status"] == "429"]
        self.assertEqual(len(limited), 2, out[-3000:])
        for hdrs in limited:
            self.assertGreaterEqual(int(hdrs["retry-after"]), 1)
            self.assertEqual(h.parse_ratelimit(hdrs["ratelimit"]), ("default", 0, h.parse_ratelimit(hdrs["ratelimit"])[2]))
            self.assertEqual(hdrs["ratelimit-policy"], '"default";q=10;w=1')
            self.assertIn("json", hdrs.get("content-type", ""))

    def test_tls_handshake_timeout_and_garbage(self):
        # a client that connects to the TLS port and never says hello is closed after idle_timeout_ms
        t0 = time.monotonic()
        buf, closed = h.raw_exchange(self.tls_port, b"", timeout=IDLE_MS / 1000 + 3, read_until_close=True)
        took = time.monotonic() - t0
        self.assertTrue(closed, "silent TLS client never closed")
        self.assertLess(took, IDLE_MS / 1000 + 2.5)
        # plaintext HTTP and junk on the TLS port: closed (or a TLS alert), never served
        for junk in (b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: a\r\n\r\n", bytes(range(256)) * 20):
            buf, closed = h.raw_exchange(self.tls_port, junk, timeout=4, read_until_close=True)
            self.assertTrue(closed, "junk on the TLS port: connection left open")
            self.assertNotIn(b"allowed", buf)
        r = h.curl(["-k", "--http2", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-API-Key: after-junk",
                    "https://127.0.0.1:%d/limit" % self.tls_port])
        self.assertEqual(r.stdout, "200", r.stderr)
        self.assertAlive(self.d)

    @staticmethod
    def tls12_context(alpn=None, tickets=True):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if not tickets:
            ctx.options |= ssl.OP_NO_TICKET
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def tls_connect(self, ctx, session=None):
        return ctx.wrap_socket(socket.create_connection((h.HOST, self.tls_port), timeout=5), session=session)

    def test_alpn_offers_h2_and_http11_only(self):
        for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (["h2-14"], None)):
            with self.tls_connect(self.tls12_context(alpn=offered)) as s:
                self.assertEqual(s.selected_alpn_protocol(), chosen, "ALPN for %r" % offered)
                if chosen != "h2":  # served as HTTP/1.1, with or without ALPN
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200"))

    def test_tls_sessions_resume_by_ticket_not_from_a_server_cache(self):
        """OpenSSL's server-side cache would hold up to 20,480 TLS 1.2 sessions per listener: it is
        off, and sessions resume by ticket instead."""
        for tickets in (True, False):
            ctx = self.tls12_context(tickets=tickets)
            with self.tls_connect(ctx) as first:
                first.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                first.recv(100)  # the session (and any ticket) is complete once data has flowed
                session = first.session
            with self.tls_connect(ctx, session=session) as again:
                self.assertEqual(again.session_reused, tickets, "TLS 1.2 with tickets=%s" % tickets)

    def test_h2load_all_2xx(self):
        r = h.run_cmd(["h2load", "-n", "200", "-c", "2", "-m", "10", "-H", "X-API-Key: bulk-key",
                       "http://127.0.0.1:%d/limit" % self.port], timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", r.stdout)
        self.assertIsNotNone(m, r.stdout)
        self.assertEqual(tuple(map(int, m.groups())), (200, 0, 0, 0), r.stdout)
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", r.stdout)
        self.assertEqual(int(m.group(4)), 200, r.stdout)
        self.assertIn("h2c", r.stdout)
        self.assertAlive(self.d)

    def test_h2load_over_tls(self):
        r = h.run_cmd(["h2load", "-n", "100", "-c", "2", "-m", "5", "-H", "X-API-Key: bulk-key",
                       "https://127.0.0.1:%d/limit" % self.tls_port], timeout=30)
        m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertEqual(tuple(map(int, m.groups())), (100, 0, 0, 0), r.stdout)
        self.assertRegex(r.stdout, r"Application protocol: h2", r.stdout)


class Http2MemcachedTest(Http2Test):
    KEY_TYPE = "ec"  # the certificate scripts/run makes: ECDSA P-256

    def backend(self):
        (node,) = self.memcached(1)
        return [node.addr]


if __name__ == "__main__":
    h.main()
