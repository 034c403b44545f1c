"""
Hostile and broken clients: junk bytes, huge headers, thousands of idle and half-sent
connections, connection floods over the open-file limit, pipelining without reading, clients
that vanish mid-decision, HTTP/2 stream resets and junk frames. The daemon answers 4xx or closes, keeps serving everyone else, enforces
idle_timeout_ms, and its memory stays bounded.
"""

import http.client
import os
import random
import re
import resource
import socket
import struct
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl")
IDLE_MS = 1000
RSS_LIMIT_KB = 200 * 1024


def h2_frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_str(s):
    b = s.encode()
    assert len(b) < 127
    return bytes([len(b)]) + b


def h2_request_block(path, key):
    return (b"\x82" + b"\x86" + b"\x04" + hpack_str(path) + b"\x01" + hpack_str("127.0.0.1") +
            b"\x00" + hpack_str("x-api-key") + hpack_str(key))


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


DT_NULL, DT_FLAGS, DT_FLAGS_1 = 0, 30, 0x6ffffffb
DF_SYMBOLIC, DF_BIND_NOW, DF_1_NOW = 0x2, 0x8, 0x1


def copy_libh2o(directory, flags_on=0, flags_off=0, flags_1_off=0):
    """Copies the libh2o-evloop that ratelimitd loads into `directory`, under its soname, with
    DT_FLAGS bits `flags_on` set (DF_SYMBOLIC is what -Bsymbolic sets) and `flags_off` cleared,
    and DT_FLAGS_1 bits `flags_1_off` cleared. A missing DT_FLAGS takes the place of a spare
    DT_NULL at the end of the dynamic section."""
    ldd = subprocess.run(["ldd", h.rl_binary()], stdout=subprocess.PIPE, text=True, check=True).stdout
    found = re.search(r"^\s*(libh2o-evloop\.so\S*) => (\S+)", ldd, re.M)
    if found is None:
        raise AssertionError("ratelimitd does not load a shared libh2o-evloop:\n" + ldd)
    with open(found.group(2), "rb") as f:
        elf = bytearray(f.read())
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        h.fail_hard("%s is not a 64-bit little-endian ELF object" % found.group(2))
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    dynamic = None
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type == 2:  # PT_DYNAMIC
            dynamic = range(p_offset, p_offset + p_filesz - 15, 16)
    entries = {struct.unpack_from("<q", elf, at)[0]: at for at in reversed(dynamic)}
    if DT_FLAGS not in entries:
        nulls = [at for at in dynamic if struct.unpack_from("<q", elf, at)[0] == DT_NULL]
        if len(nulls) < 2:
            h.fail_hard("%s has neither DT_FLAGS nor a spare DT_NULL" % found.group(2))
        struct.pack_into("<qQ", elf, nulls[0], DT_FLAGS, 0)
        entries[DT_FLAGS] = nulls[0]
    at = entries[DT_FLAGS]
    struct.pack_into("<Q", elf, at + 8, (struct.unpack_from("<Q", elf, at + 8)[0] | flags_on) & ~flags_off)
    if DT_FLAGS_1 in entries:
        at = entries[DT_FLAGS_1]
        struct.pack_into("<Q", elf, at + 8, struct.unpack_from("<Q", elf, at + 8)[0] & ~flags_1_off)
    with open(os.path.join(directory, found.group(1)), "wb") as f:
        f.write(elf)



def hpack_bomb_frames(stream, end_stream):
    """A request whose header block is as large as h2o 2.2.5 accepts (417,000 bytes over
    CONTINUATION frames): one 4 KB dynamic-table entry, then one-byte references to it, ~412,000
    header fields once decoded."""
    # a literal with incremental indexing (it becomes dynamic entry 62) with a 4000-byte value
    entry = b"\x40" + hpack_str("x-bomb") + b"\x7f" + bytes([(4000 - 127) & 0x7f | 0x80, (4000 - 127) >> 7])
    entry += b"v" * 4000
    block = h2_request_block("/limit", "bomb") + entry
    block += b"\xbe" * (417000 - len(block))
    chunks = [block[i:i + 16000] for i in range(0, len(block), 16000)]
    frames = [h2_frame(1, 0x1 if end_stream else 0, stream, chunks[0])]
    frames += [h2_frame(9, 0x4 if i == len(chunks) - 1 else 0, stream, c) for i, c in enumerate(chunks[1:], 1)]
    return b"".join(frames)


def own_socket_room(wanted):
    """Raises this process's soft open-file limit toward its hard one; returns how many sockets
    (up to `wanted`) it may open, leaving room for the test's own descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, wanted + 256)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return min(wanted, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 256)


def recv_eof(sock, timeout):
    """True if the peer has closed `sock` (EOF or reset), waiting up to `timeout` (0: not at all)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except (socket.timeout, BlockingIOError):
        return False


def pipelined_limits(port, keys, batch=100):
    """One /limit per key on one connection, `batch` requests per write: 1,700 round trips one
    after another took up to half a second on a loaded machine, too long to fit one window."""
    out = []
    with socket.create_connection((h.HOST, port), timeout=5) as s:
        for i in range(0, len(keys), batch):
            part = keys[i:i + batch]
            s.sendall(b"".join(b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\n\r\n" % k.encode() for k in part))
            answers = h.split_responses(h.recv_until(s, lambda buf: len(h.split_responses(buf)) == len(part)))
            if len(answers) != len(part):
                raise AssertionError("%d of %d pipelined answers" % (len(answers), len(part)))
            out += answers
    return out


class H2Raw:
    """A minimal raw HTTP/2 client connection (prior knowledge) for abusive frame sequences."""

    def __init__(self, port):
        self.s = socket.create_connection((h.HOST, port), timeout=5)
        self.buf = b""
        self.s.sendall(H2_PREFACE + h2_frame(4, 0, 0))

    def frames(self, timeout=2.0):
        """Reads frames until nothing arrives for `timeout` or the peer closes; yields
        (type, flags, stream, payload)."""
        deadline = time.monotonic() + timeout
        while True:
            while len(self.buf) >= 9:
                ln = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + ln:
                    break
                ftype, flags = self.buf[3], self.buf[4]
                stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                payload = self.buf[9:9 + ln]
                self.buf = self.buf[9 + ln:]
                yield ftype, flags, stream, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.s.settimeout(left)
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                return
            except OSError:
                return
            if not data:
                return
            self.buf += data

    def send(self, data):
        self.s.sendall(data)

    def close(self):
        self.s.close()


def h2_exchange(port, frames, wait_for=None):
    """Sends `frames` on a new h2c connection and reads until the server closes it, sends
    GOAWAY, answers stream `wait_for` or is silent for 5 s; returns the streams answered with
    HEADERS, the GOAWAY's (error code, debug data) or None, and whether the server closed (h2o
    closes a loop turn or more after its GOAWAY, so that close is waited for)."""
    conn = H2Raw(port)
    answered, goaway = set(), None
    try:
        conn.send(frames)
        for ftype, _, stream, payload in conn.frames(timeout=5):
            if ftype == 1:
                answered.add(stream)
                if stream == wait_for:
                    break
            elif ftype == 7:
                goaway = (struct.unpack(">I", payload[4:8])[0], payload[8:])
                break
        closed = recv_eof(conn.s, 2 if goaway else 0.01)
    except OSError:
        closed = True
    finally:
        conn.close()
    return answered, goaway, closed


def extra_fields(n):
    return b"".join(b"\x00" + hpack_str("x-f%d" % i) + hpack_str("v") for i in range(n))


def many_fields_block(fields):
    """A GET /healthz header block of `fields` fields: 4 pseudo-fields, the key, and fillers."""
    return h2_request_block("/healthz", "fields") + extra_fields(fields - 5)


class HostileClientsTest(h.RLTestCase):
    def setUp(self):
        super().setUp()
        (self.mc,) = self.memcached(1)
        self.port = h.free_port()
        cfg = h.base_config(self.port, [self.mc.addr])
        cfg["server"] = {"idle_timeout_ms": IDLE_MS, "max_header_bytes": 16384}
        self.d = self.daemon(cfg, port=self.port)

    def tearDown(self):
        # whatever the test did: still alive, still serving, memory bounded
        self.assertAlive(self.d)
        st, _, _ = h.http_get(self.port, "/limit", {"X-API-Key": "after-" + uuid.uuid4().hex})
        self.assertEqual(st, 200)
        self.assertEqual(h.http_get(self.port, "/healthz")[0], 200)
        rss = self.d.rss_kb()
        limit = RSS_LIMIT_KB + (h.ASAN_QUARANTINE_KB if h.sanitized() else 0)
        self.assertLess(rss, limit, "RSS %d kB after hostile clients" % rss)

    def good_request_ok(self):
        st, _, _ = h.http_get(self.port, "/limit", {"X-API-Key": "good-" + uuid.uuid4().hex}, timeout=3)
        self.assertEqual(st, 200)

    def assertClosedOr4xx(self, buf, closed, what):
        status = h.parse_raw_status(buf)
        if status is None:
            self.assertTrue(closed, "%s: neither an HTTP answer nor a close: %r" % (what, buf[:200]))
        else:
            self.assertTrue(400 <= status < 500 or status == 505, "%s: got %d" % (what, status))

    def test_junk_bytes_get_400_or_close(self):
        rnd = random.Random(1234)
        junk = [
            bytes(rnd.randrange(256) for _ in range(4096)),
            b"GARBAGE\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello on the cleartext port
            b"GET /limit HTTP/1.1\r\nX-API-Key\r\n\r\n",  # header without a colon
            b"GET /limit\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /limit HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"POST /limit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-API-Key: a\r\n\r\nZZZ\r\n",
            b"\r\n" * 5000,
            b"A" * 70000 + b" /limit HTTP/1.1\r\n\r\n",
            b"GET /limit?" + b"q" * 200000 + b" HTTP/1.1\r\nHost: x\r\nX-API-Key: a\r\n\r\n",
            H2_PREFACE + b"\xff" * 100,
        ]
        for i, data in enumerate(junk):
            buf, closed = h.raw_exchange(self.port, data, timeout=3, read_until_close=True)
            self.assertClosedOr4xx(buf, closed, "junk #%d" % i)
            self.good_request_ok()

    def test_huge_headers(self):
        # over max_header_bytes but within what the parser takes: 431 (README), no backend call
        before = self.mc.increments()
        req = (b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: big-" + uuid.uuid4().hex.encode() +
               b"\r\nX-Filler: " + b"f" * 20000 + b"\r\n\r\n")
        buf, _ = h.raw_exchange(self.port, req)
        self.assertEqual(h.parse_raw_status(buf), 431, buf[:300])
        self.assertEqual(self.mc.increments(), before, "a 431 must not reach memcached")
        # 64 KiB in one header, 1 MiB in many, thousands of headers: 4xx or a close, never a crash
        for name, filler in (("64k", b"X-Big: " + b"b" * 65536 + b"\r\n"),
                             ("1m", b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(1024))),
                             ("many", b"".join(b"X-H%d: v\r\n" % i for i in range(5000)))):
            req = b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\n" + filler + b"\r\n"
            buf, closed = h.raw_exchange(self.port, req, timeout=5, read_until_close=True)
            self.assertClosedOr4xx(buf, closed, name)
            self.good_request_ok()

    def test_thousands_of_idle_and_half_sent_connections(self):
        """2000 connections that send nothing, half a request, or one request and then nothing:
        everyone else is served at once, memory stays bounded (tearDown), and idle_timeout_ms
        closes all of them."""
        count = own_socket_room(2000)
        self.assertGreaterEqual(count, 1000, "this process's open-file limit is too low for the test")
        held = []
        try:
            for i in range(count):
                s = socket.create_connection((h.HOST, self.port), timeout=5)
                if i % 3 == 1:
                    s.sendall(b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-")
                elif i % 3 == 2:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                held.append(s)
            c = self.d.client(timeout=3)
            try:
                for i in range(50):
                    r = c.limit("busy-%d" % (i // 10))
                    self.assertIn(r.status, (200, 429))
                    self.assertLess(r.elapsed, 0.5)
            finally:
                c.close()
            gauge = self.d.metrics().get("ratelimitd_open_connections")
            self.assertGreaterEqual(gauge, count * 0.9, "open connections gauge with %d held" % count)
            self.assertTrue(h.wait_until(lambda: self.d.metrics().get("ratelimitd_open_connections") <= 5,
                                         IDLE_MS / 1000 + 4),
                            "held connections not closed by idle_timeout_ms: %s open" %
                            self.d.metrics().get("ratelimitd_open_connections"))
        finally:
            for s in held:
                s.close()

    def test_connection_flood_over_a_low_open_file_limit(self):
        """A daemon whose open-file limit is below server.max_connections says so at start and
        sheds what does not fit, instead of running out of descriptors and spinning on accept."""
        port = h.free_port()
        d = self.daemon(h.base_config(port), port=port, name="lownofile", nofile=256)
        allowed = re.search(r"allows (\d+) client connections", d.log())
        self.assertIsNotNone(allowed, "no warning about the open-file limit\n" + d.log_tail())
        allowed = int(allowed.group(1))
        self.assertLess(allowed, 256)
        held = []
        try:
            for _ in range(400):
                held.append(socket.create_connection((h.HOST, port), timeout=3))
            time.sleep(0.3)
            self.assertLess(d.cpu_used_during(1.5), 0.3, "the daemon spins while flooded")
            shed = sum(1 for s in held if recv_eof(s, 0))
            self.assertGreaterEqual(shed, 400 - allowed, "connections over the limit were not closed")
        finally:
            for s in held:
                s.close()
        self.assertTrue(h.wait_until(lambda: h.status_of(port, "/healthz", timeout=1) == 200, 3.0))
        m = d.metrics()
        self.assertGreaterEqual(m.get("ratelimitd_connections_shed_total"), 400 - allowed)
        self.assertEqual(m.get("ratelimitd_max_connections"), allowed, "the limit in force, as the warning said")
        self.assertAlive(d)

    def test_an_open_file_limit_too_low_for_the_loops_fails_start_up_with_a_reason(self):
        """Below what the loop threads need, h2o aborted while creating a loop (exit 134, "pipe:
        Too many open files"); start-up now says which limit to raise and exits 1."""
        port = h.free_port()
        d = self.daemon(h.base_config(port, threads=16), port=port, name="tinynofile", nofile=64, start=False)
        d.start(wait=False)
        rc = d.proc.wait(20)
        self.assertEqual(rc, 1, d.log_tail())
        self.assertIn("the open-file limit (64) cannot hold 16 loop threads", d.log())
        self.assertNotIn("AddressSanitizer", d.log())

    def test_accept_pauses_when_descriptors_run_out(self):
        """Descriptors gone from under the daemon (its limit lowered while it runs): accept()
        fails with EMFILE and the listener stays readable; the daemon pauses accepting instead
        of spinning, says why, and serves again once descriptors are back."""
        port, port2 = h.free_port(), h.free_port()
        cfg = h.base_config(port, threads=1)
        cfg["listen"].append({"address": h.HOST, "port": port2})  # every listener pauses and resumes
        d = self.daemon(cfg, port=port, name="emfile")
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (128, 128))
        held = []
        try:
            for i in range(300):
                held.append(socket.create_connection((h.HOST, (port, port2)[i % 2]), timeout=3))
            time.sleep(0.3)
            self.assertLess(d.cpu_used_during(1.5), 0.3, "the daemon spins on accept while out of descriptors")
        finally:
            for s in held:
                s.close()
        for p in (port, port2):
            self.assertTrue(h.wait_until(lambda: h.status_of(p, "/healthz", timeout=1) == 200, 3.0), p)
        self.assertIn("Too many open files", d.log())
        self.assertGreaterEqual(d.metrics().get("ratelimitd_accept_pauses_total"), 1)
        self.assertAlive(d)

    def test_half_sent_request_is_closed_after_idle_timeout(self):
        s = socket.create_connection((h.HOST, self.port), timeout=10)
        try:
            s.sendall(b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-")
            t0 = time.monotonic()
            data = b""
            closed = False
            while time.monotonic() - t0 < 6:
                try:
                    chunk = s.recv(4096)
                except (socket.timeout, ConnectionResetError):
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                data += chunk
            took = time.monotonic() - t0
        finally:
            s.close()
        self.assertTrue(closed, "a stalled half request was never closed")
        self.assertLess(took, IDLE_MS / 1000 + 2, "closed after %.2fs, idle_timeout_ms=%d" % (took, IDLE_MS))
        self.assertGreater(took, IDLE_MS / 1000 * 0.5, "closed too early (%.2fs)" % took)
        self.assertTrue(data == b"" or h.parse_raw_status(data) in (400, 408), data[:200])

    def test_idle_keepalive_connection_closed_after_idle_timeout(self):
        c = self.d.client(timeout=5)
        try:
            self.assertEqual(c.limit("ka").status, 200)
            sock = c.conn.sock
            t0 = time.monotonic()
            sock.settimeout(IDLE_MS / 1000 + 3)
            try:
                data = sock.recv(1)
            except (socket.timeout, ConnectionResetError):
                data = None
            took = time.monotonic() - t0
        finally:
            c.close()
        self.assertEqual(data, b"", "server did not close an idle keep-alive connection")
        self.assertLess(took, IDLE_MS / 1000 + 2)

    def test_h2_idle_connection_closed_after_idle_timeout(self):
        conn = H2Raw(self.port)
        try:
            t0 = time.monotonic()
            goaway = False
            for ftype, flags, stream, payload in conn.frames(IDLE_MS / 1000 + 3):
                if ftype == 4 and not flags & 1:
                    conn.send(h2_frame(4, 1, 0))
                if ftype == 7:
                    goaway = True
            took = time.monotonic() - t0
        finally:
            conn.close()
        self.assertLess(took, IDLE_MS / 1000 + 2.5, "idle h2 connection not closed (GOAWAY seen: %s)" % goaway)

    def test_max_connections(self):
        port = h.free_port()
        cfg = h.base_config(port, server={"max_connections": 20})
        d = self.daemon(cfg, port=port, name="maxconn")
        held = []
        try:
            for _ in range(40):
                held.append(socket.create_connection((h.HOST, port), timeout=3))
            served = 0
            for s in held:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in held:
                s.settimeout(2)
                try:
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        served += 1
                except OSError:
                    pass
            self.assertLessEqual(served, 20, "more connections served than server.max_connections")
            self.assertGreaterEqual(served, 15)
        finally:
            for s in held:
                s.close()
        # once they are gone, new connections are served again
        self.assertTrue(h.wait_until(lambda: h.status_of(port, "/healthz", timeout=1) == 200, 3.0))
        self.assertAlive(d)

    def test_admin_listener_serves_while_api_connections_are_exhausted(self):
        """A listener with role admin serves /healthz, /readyz and /metrics on connections that do
        not count against server.max_connections: kubelet probes and scrapes still get in when
        clients hold every API connection (so a full pod is not restarted for failing its liveness
        probe, and the shed counter can be read). It serves nothing else, and holds at most
        RL_ADMIN_MAX_CONNECTIONS (64) itself."""
        port, admin_port = h.free_port(), h.free_port()
        cfg = h.base_config(port, server={"max_connections": 5})
        cfg["listen"].append({"address": h.HOST, "port": admin_port, "role": "admin"})
        d = self.daemon(cfg, port=port, name="admin")

        # Scrapes that found their port's limit still taken (a close the daemon had not processed yet)
        # and were shed, by port: the daemon counts each as a shed too, and the checks at the end
        # add them in.
        refused = {port: 0, admin_port: 0}

        def gauges(via):
            """(API, admin) connections open and the API limit, or None while `via` sheds the scrape."""
            try:
                m = h.scrape_metrics(via, timeout=2)
            except TimeoutError:
                return None
            except (OSError, http.client.HTTPException):
                refused[via] += 1
                return None
            return (m.get("ratelimitd_open_connections"), m.get("ratelimitd_admin_open_connections"),
                    m.get("ratelimitd_max_connections"))

        def settled(api_open, admin_open=1, via=admin_port):
            """Waits until the daemon counts only the connections held open and the scrape asking
            (on the admin port, by default): closes reach its loop threads a moment after the client's."""
            want = (api_open, admin_open, 5)
            seen = []
            if not h.wait_until(lambda: seen.append(gauges(via)) or seen[-1] == want, 3.0):
                # no extra scrape on success: it could still hold a slot when the next step counts them
                self.fail("(API, admin, limit) gauges %r, want %r" % (seen[-1], want))

        held = []
        try:
            settled(0)
            for _ in range(5):
                s = socket.create_connection((h.HOST, port), timeout=3)
                held.append(s)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200"))
            self.assertIsNone(h.status_of(port, "/healthz", timeout=1), "a 6th API connection was served")
            for path in ("/healthz", "/readyz", "/metrics"):
                self.assertEqual(h.status_of(admin_port, path), 200, path)
            status, _, body = h.http_get(admin_port, "/metrics")
            self.assertIn(b"\nratelimitd_connections_shed_total 1\n", body)
            self.assertEqual(h.status_of(admin_port, "/limit", headers={"X-API-Key": "alice"}), 404)
            settled(5)
            shed_before = h.scrape_metrics(admin_port).get("ratelimitd_admin_connections_shed_total")
            refused_before = refused[admin_port]
            admin_held = [socket.create_connection((h.HOST, admin_port), timeout=3) for _ in range(80)]
            held.extend(admin_held)
            for s in admin_held:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            served = 0
            for s in admin_held:
                s.settimeout(2)
                try:
                    served += s.recv(100).startswith(b"HTTP/1.1 200")
                except OSError:
                    pass
            # 64 at most; one fewer when the scrape's own connection just before was not released yet
            self.assertTrue(63 <= served <= 64, "%d admin connections served, their limit is 64" % served)
            # each role's gauge counts its own (asked on the API port, once a held one is given back)
            held.pop(0).close()
            settled(5, admin_open=served, via=port)
        finally:
            for s in held:
                s.close()
        settled(0)
        m = h.scrape_metrics(admin_port)
        self.assertEqual(m.get("ratelimitd_admin_connections_shed_total") - shed_before,
                         80 - served + refused[admin_port] - refused_before,
                         "every admin connection not served is counted as an admin shed")
        self.assertEqual(m.get("ratelimitd_connections_shed_total"), 1 + refused[port],
                         "admin sheds counted as API sheds")
        self.assertAlive(d)

    def test_key_flood_local_store_stays_bounded(self):
        """More distinct keys in one window than the local store has slots (1.5 per
        backend.local_max_keys): it holds at least local_max_keys and at most its slots, the rest
        fail open and count store_full, and it frees itself with the window."""
        port = h.free_port()
        cfg = h.base_config(port, None)
        cfg["backend"] = {"type": "local", "local_max_keys": 1024}
        KEYS = 1700  # noqa: N806 (more than the 1536 slots)
        d = self.daemon(cfg, port=port, name="flood")
        c = d.client()
        self.addCleanup(c.close)
        for attempt in range(4):
            before = d.metrics()
            h.wait_fresh_second(0.05)
            rs = pipelined_limits(port, ["flood-%d-%d" % (attempt, i) for i in range(KEYS)])
            if len({r.json["window"] for r in rs}) == 1:
                break
        else:
            self.fail("%d requests never fitted one window" % KEYS)
        after = d.metrics()
        self.assertEqual({r.status for r in rs}, {200}, "on_failure open: a full store admits uncounted")
        counted = sum(1 for r in rs if r.json["remaining"] == 9)
        self.assertTrue(1024 <= counted <= 1536, "local_max_keys to 1.5x counters in one window: %d" % counted)
        full = after.get("ratelimitd_backend_errors_total", 0, node="local", reason="store_full") - before.get(
            "ratelimitd_backend_errors_total", 0, node="local", reason="store_full")
        self.assertEqual(full, KEYS - counted, after.find("ratelimitd_backend_errors_total"))
        w = rs[0].json["window"]
        while int(time.time()) <= w:
            time.sleep(0.05)
        r = c.limit("flood-next-window")
        self.assertEqual((r.status, r.json["remaining"]), (200, 9), "the next window has room again")
        self.assertLess(d.rss_kb(), RSS_LIMIT_KB)
        self.assertAlive(d)

    def test_pipelined_requests_answered_in_order(self):
        key = "pipe-" + uuid.uuid4().hex
        h.wait_fresh_second(0.1)
        req = b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode() + b"\r\n\r\n"
        buf, _ = h.raw_exchange(self.port, req * 12 + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                timeout=5, read_until_close=True)
        statuses = [int(x) for x in re.findall(rb"HTTP/1\.1 (\d{3})", buf)]
        self.assertEqual(len(statuses), 13, buf[:500])
        rem = [int(x) for x in re.findall(rb'"remaining":(\d+)', buf)]
        windows = set(re.findall(rb'"window":(\d+)', buf))
        if len(windows) == 1:
            self.assertEqual(statuses, [200] * 10 + [429] * 2 + [200])
            self.assertEqual(rem, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0])

    def test_pipelining_without_reading_stays_bounded(self):
        s = socket.create_connection((h.HOST, self.port), timeout=5)
        s.setblocking(False)
        req = b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: flood\r\n\r\n"
        sent = 0
        t0 = time.monotonic()
        try:
            blob = req * 1000
            while time.monotonic() - t0 < 2 and sent < 50 * len(blob):
                try:
                    sent += s.send(blob)
                except BlockingIOError:
                    time.sleep(0.01)
                except OSError:
                    break
            self.good_request_ok()
            rss = self.d.rss_kb()
            self.assertLess(rss, RSS_LIMIT_KB, "RSS %d kB with a client that never reads" % rss)
        finally:
            s.close()

    def test_bytes_arriving_while_a_decision_waits(self):
        # While a decision waits for memcached, the HTTP/1.1 socket stays in epoll without being
        # read (src/http1_park.c). A pipelined request, a half-sent one and a client's FIN that
        # arrive in that time must neither be lost nor make the loop spin on a readable socket.
        key = "park-" + uuid.uuid4().hex
        pipelined = socket.create_connection((h.HOST, self.port), timeout=5)
        finished = socket.create_connection((h.HOST, self.port), timeout=5)
        req = b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode() + b"\r\n\r\n"
        h.wait_fresh_second(0.1)
        self.mc.pause()
        try:
            pipelined.sendall(req)
            finished.sendall(req)
            time.sleep(0.1)  # both decisions are waiting for the stalled node now
            pipelined.sendall(req + req[:20])
            finished.shutdown(socket.SHUT_WR)
            spent = self.d.cpu_used_during(0.5)
        finally:
            self.mc.resume()
        # an idle daemon spends ~0; spinning on the readable sockets would burn the whole 0.5 s
        self.assertLess(spent, 0.15, "daemon used %.2f s of CPU while decisions waited" % spent)
        pipelined.sendall(req[20:])
        answers = h.recv_until(pipelined, lambda buf: buf.count(b"HTTP/1.1 ") == 3 and buf.endswith(b"}"))
        pipelined.close()
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d{3})", answers), [b"200"] * 3, answers[:600])
        # the connection that sent FIN still gets its answer, then is closed by the daemon
        tail = h.recv_until(finished)
        finished.close()
        self.assertEqual(h.parse_raw_status(tail), 200, tail[:300])
        remaining = sorted(int(x) for x in re.findall(rb'"remaining":(\d+)', answers + tail))
        if len(set(re.findall(rb'"window":(\d+)', answers + tail))) == 1:
            self.assertEqual(remaining, [6, 7, 8, 9], "every request counted once")

    def test_clients_that_vanish_mid_decision(self):
        # the memcached node is stalled, so every decision is pending when its client resets
        self.mc.pause()
        try:
            for i in range(100):
                s = socket.create_connection((h.HOST, self.port), timeout=2)
                s.sendall(b"GET /limit HTTP/1.1\r\nHost: x\r\nX-API-Key: gone-%d\r\n\r\n" % i)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()  # RST
            time.sleep(0.05)
        finally:
            self.mc.resume()
        time.sleep(0.3)
        self.good_request_ok()
        # and abrupt closes with nothing sent, many times
        for _ in range(300):
            s = socket.create_connection((h.HOST, self.port), timeout=2)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        self.good_request_ok()

    def test_h2_rapid_stream_resets(self):
        conn = H2Raw(self.port)
        try:
            got_settings = False
            for ftype, flags, stream, payload in conn.frames(1.0):
                if ftype == 4 and not flags & 1:
                    got_settings = True
                    break
            self.assertTrue(got_settings, "no server SETTINGS over h2c prior knowledge")
            conn.send(h2_frame(4, 1, 0))  # ACK
            block = h2_request_block("/limit", "reset-" + uuid.uuid4().hex)
            out = []
            for i in range(1000):
                sid = 1 + 2 * i
                out.append(h2_frame(1, 0x5, sid, block))  # HEADERS, END_STREAM | END_HEADERS
                out.append(h2_frame(3, 0, sid, struct.pack(">I", 8)))  # RST_STREAM CANCEL
            try:
                conn.send(b"".join(out))
                conn.send(h2_frame(1, 0x5, 2001, h2_request_block("/healthz", "x")))
            except OSError:
                pass  # the server may have sent GOAWAY and closed: acceptable
            answered = goaway = False
            for ftype, flags, stream, payload in conn.frames(3.0):
                if ftype == 1 and stream == 2001:
                    answered = True
                    break
                if ftype == 7:
                    goaway = True
                    break
            self.assertTrue(answered or goaway, "neither an answer nor GOAWAY after 1000 reset streams")
            print("after 1000 reset streams: %s" % ("answered" if answered else "GOAWAY"))
        finally:
            conn.close()
        self.good_request_ok()

    def test_h2_continuation_flood_and_hpack_bomb(self):
        """Two known HTTP/2 memory attacks. A HEADERS frame followed by endless CONTINUATION
        frames (the header block never ends): the connection is closed long before the flood
        ends. Blocks that add one 4 KB entry to the HPACK dynamic table and then reference it
        ~412,000 times per request (417 KB on the wire, the most h2o 2.2.5 accepts): the
        connection is closed at the first, nothing reaches memcached, memory stays bounded,
        and everyone else is served."""
        rss = self.d.rss_kb()
        s = socket.create_connection((h.HOST, self.port), timeout=5)
        sent = 0
        try:
            s.sendall(H2_PREFACE + h2_frame(4, 0, 0) + h2_frame(1, 0, 1, h2_request_block("/limit", "flood")))
            while sent < 64 << 20:
                s.sendall(h2_frame(9, 0, 1, b"\x00" * 16000))  # CONTINUATION without END_HEADERS
                sent += 16000
        except OSError:
            pass
        finally:
            s.close()
        print("CONTINUATION flood: connection closed after %d bytes sent" % sent)
        self.assertLess(sent, 16 << 20, "a header block that never ends was read for %d bytes" % sent)

        increments = self.mc.increments()
        after_round = [self.hpack_bomb_round() for _ in range(3)]
        print("HPACK bombs, one per connection: RSS %d KiB before, %r KiB after each" % (rss, after_round))
        self.assertEqual(self.mc.increments(), increments, "a bomb reached memcached")
        self.good_request_ok()
        if not h.sanitized():  # ASan's quarantine keeps freed memory resident
            self.assertLess(max(after_round) - rss, 150 * 1024,
                            "RSS after each round of bombs (KiB, from %d): %r" % (rss, after_round))

    def hpack_bomb_round(self):
        """Sends one request on a new HTTP/2 connection whose header block is an HPACK bomb,
        then an ordinary request: the server must close the connection at the bomb with
        COMPRESSION_ERROR, count it in ratelimitd_http2_header_blocks_refused_total, and not answer the second request.
        Returns RSS after."""
        before = self.refused_blocks()
        frames = hpack_bomb_frames(1, end_stream=True)
        # then an ordinary request on the same connection (no backend call): it must get no answer
        frames += h2_frame(1, 0x5, 3, h2_request_block("/healthz", "after-bomb"))
        answered, goaway, closed = h2_exchange(self.port, frames)
        self.assertTrue(closed, "the connection that sent an HPACK bomb was not closed")
        self.assertNotIn(3, answered, "a request after the bomb was answered on the same connection")
        self.assertEqual(goaway, (9, b"too many header fields"), "GOAWAY (error code, debug data)")
        # counted by the loop thread that read the bomb, maybe after the client saw the close
        self.assertTrue(h.wait_until(lambda: self.refused_blocks() - before == 1, 5),
                        "the bomb was not counted as a refused header block")
        return self.d.rss_kb()

    def test_h2_hpack_bombs_back_to_back_without_end_stream(self):
        """Bombs that h2o once decoded before any handler could refuse them: 20 back to back in
        one write, on streams that never end (h2o waits for a body before it calls a handler).
        Without the field bound, 3 such connections left 519 MB, 1.34 GB and 1.68 GB resident."""
        rss = self.d.rss_kb()
        before = self.refused_blocks()
        after = []
        for _ in range(3):
            frames = b"".join(hpack_bomb_frames(1 + 2 * i, end_stream=False) for i in range(20))
            # the server closes while the client still sends, so its GOAWAY may be lost in a reset
            _, _, closed = h2_exchange(self.port, frames)
            self.assertTrue(closed, "a connection sending HPACK bombs was not closed")
            after.append(self.d.rss_kb())
        print("20 HPACK bombs without END_STREAM per connection: RSS %d KiB before, %r KiB after each" % (rss, after))
        # each connection stops at its first bomb
        self.assertTrue(h.wait_until(lambda: self.refused_blocks() - before == 3, 5),
                        "bombs counted: %d, not 3" % (self.refused_blocks() - before))
        self.good_request_ok()
        if not h.sanitized():
            self.assertLess(max(after) - rss, 50 * 1024, "RSS after each connection (KiB, from %d): %r" % (rss, after))

    def test_h2_header_field_bound(self):
        """The bound is HTTP/1.1's 100 header lines plus HTTP/2's four request pseudo-fields:
        a request of 104 fields is served, one of 105 closes its connection, a trailer block is
        bounded on its own, and a request whose header fields (not pseudo-fields) number more
        than 100 gets ratelimitd's 431."""
        answered, goaway, closed = h2_exchange(self.port, h2_frame(1, 0x5, 1, many_fields_block(104)), wait_for=1)
        self.assertIn(1, answered, "a request of 104 header fields was not answered")
        self.assertIsNone(goaway)
        self.assertFalse(closed)
        answered, goaway, closed = h2_exchange(self.port, h2_frame(1, 0x5, 1, many_fields_block(105)))
        self.assertNotIn(1, answered, "a request of 105 header fields was answered")
        self.assertEqual(goaway, (9, b"too many header fields"))
        self.assertTrue(closed)
        # a POST's headers, one byte of body, then trailers of 105 fields
        post = b"\x83\x86\x04" + hpack_str("/healthz") + b"\x01" + hpack_str("127.0.0.1")
        frames = h2_frame(1, 0x4, 1, post) + h2_frame(0, 0, 1, b"x") + h2_frame(1, 0x5, 1, extra_fields(105))
        answered, goaway, closed = h2_exchange(self.port, frames)
        self.assertEqual(goaway, (9, b"too many header fields"), "a trailer block of 105 fields")
        self.assertTrue(closed)
        # without :authority, 101 header fields pass the bound, and get 431
        no_authority = b"\x82\x86\x04" + hpack_str("/healthz") + extra_fields(101)
        conn = H2Raw(self.port)
        try:
            conn.send(h2_frame(1, 0x5, 1, no_authority))
            status = next((p for t, _, sid, p in conn.frames(5) if t == 1 and sid == 1), b"")
        finally:
            conn.close()
        self.assertIn(b"431", status, "101 header fields over HTTP/2: %r" % status)

    def test_h2_integer_lengths_agree_with_the_counter(self):
        """src/hpack_count.c calls a block malformed at an integer of more than 4 continuation
        bytes and leaves it to libh2o. That is safe only while libh2o refuses such an integer too:
        if it accepted one, a bomb behind it would be decoded uncounted."""
        for continuation_bytes, refused in ((4, False), (5, True)):
            update = b"\x3f" + b"\x80" * (continuation_bytes - 1) + b"\x00"  # table size 31
            block = update + many_fields_block(104 if refused else 5)
            answered, goaway, _ = h2_exchange(self.port, h2_frame(1, 0x5, 1, block), wait_for=1)
            if refused:
                self.assertEqual(goaway and goaway[0], 9, "libh2o accepted %d continuation bytes" % continuation_bytes)
            else:
                self.assertIn(1, answered, "%d continuation bytes" % continuation_bytes)

    def test_start_up_refuses_a_libh2o_whose_calls_would_miss_the_guard(self):
        """The bound works only while libh2o's calls to h2o_hpack_parse_headers reach ratelimitd's
        definition. A library linked with -Bsymbolic binds them to its own: ratelimitd must then
        refuse to start, not run without the bound. One bound lazily cannot be checked before its
        first call: refused too, unless LD_BIND_NOW=1 binds it at load. The test makes such
        libraries from the installed one by changing its dynamic flags."""
        cases = [("symbolic", dict(flags_on=DF_SYMBOLIC), {},
                  "the library binds it to its own definition, as -Bsymbolic does"),
                 ("lazy", dict(flags_off=DF_BIND_NOW, flags_1_off=DF_1_NOW), {}, "the library is bound lazily"),
                 ("lazy-bound-now", dict(flags_off=DF_BIND_NOW, flags_1_off=DF_1_NOW), {"LD_BIND_NOW": "1"}, None)]
        for name, flags, extra_env, refusal in cases:
            lib_dir = os.path.join(self.tmpdir, name)
            os.mkdir(lib_dir)
            copy_libh2o(lib_dir, **flags)
            port = h.free_port()
            path = os.path.join(self.tmpdir, name + ".yaml")
            with open(path, "w") as f:
                f.write(h.to_yaml(h.base_config(port)))
            env = dict(os.environ, LD_LIBRARY_PATH=lib_dir, **extra_env)
            proc = subprocess.Popen([h.rl_binary(), "-c", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
            try:
                if refusal is None:
                    self.assertTrue(h.wait_port(port, 10), "%s: did not start" % name)
                    _, goaway, _ = h2_exchange(port, h2_frame(1, 0x5, 1, many_fields_block(105)))
                    self.assertEqual(goaway, (9, b"too many header fields"), name)
                    proc.terminate()
                _, stderr = proc.communicate(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if refusal is not None:
                self.assertEqual(proc.returncode, 1, "%s: %s" % (name, stderr[-3000:]))
                self.assertIn("h2o_hpack_parse_headers would not reach ratelimitd's (" + refusal, stderr)
                self.assertFalse(h.port_accepts(port))
            else:
                self.assertEqual(proc.returncode, 0, "%s: %s" % (name, stderr[-3000:]))

    def refused_blocks(self):
        return self.d.metrics().get("ratelimitd_http2_header_blocks_refused_total", 0)

    def test_h2_junk_frames(self):
        cases = [
            h2_frame(0, 1, 1, b"data on an idle stream"),
            h2_frame(1, 0x4, 1, b"\xff\xff\xff\xff"),  # undecodable HPACK
            h2_frame(4, 0, 0, b"\x00\x04\xff\xff\xff\xff"),  # INITIAL_WINDOW_SIZE too large
            h2_frame(8, 0, 0, struct.pack(">I", 0)),  # zero WINDOW_UPDATE increment
            h2_frame(1, 0x5, 2, h2_request_block("/limit", "even")),  # even stream id from a client
            b"\x00\x40\x00\x00\x00\x00\x00\x00\x00" + b"\x00" * 100,  # DATA on stream 0, truncated
        ]
        for i, payload in enumerate(cases):
            conn = H2Raw(self.port)
            try:
                conn.send(payload)
                frames = list(conn.frames(2.0))
                types = [f[0] for f in frames]
                # answered with GOAWAY or RST_STREAM, or just closed: never served, never crashed
                self.assertFalse(any(t == 1 and f[2] in (1, 2) and f[3][:1] == b"\x88" for t, f in
                                     zip(types, frames)), "junk h2 case %d got a 200" % i)
            finally:
                conn.close()
            self.assertAlive(self.d)
        self.good_request_ok()


if __name__ == "__main__":
    h.main()
