"""
Shared helpers for ratelimitd's integration tests (not a test itself: no test_ prefix).

Every test file is a standalone script run by ctest as `python3 FILE` with RL_BINARY (the built
daemon) and RL_SOURCE_DIR (the repository root) in the environment. This module starts real
memcached nodes and real ratelimitd processes on free loopback ports, talks HTTP to them, scrapes
/metrics, and cleans up every process it started (by PID, never by name) when the test ends or
the interpreter exits. Only the Python standard library is used.

Missing tools (memcached, curl, the daemon binary) are a failure, never a skip: a test that skips
in CI proves nothing.
"""

import atexit
import http.client
import json
import collections
import errno
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"
CURL = shutil.which("curl") or "/usr/bin/curl"
HOST = "127.0.0.1"

# Every process this module started and has not reaped yet; killed at exit whatever happens.
_live_procs = []
_live_lock = threading.Lock()


def _register(proc):
    with _live_lock:
        _live_procs.append(proc)


def _unregister(proc):
    with _live_lock:
        if proc in _live_procs:
            _live_procs.remove(proc)


def stop_process(proc, sig=signal.SIGTERM, timeout=5.0):
    """Signals `proc` (a Popen we started) with `sig`, waits up to `timeout`, then SIGKILLs it.
    Also resumes a SIGSTOPped process so it can act on the signal. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            proc.wait(5)
    _unregister(proc)
    return proc.returncode


@atexit.register
def _kill_leftovers():
    with _live_lock:
        procs = list(_live_procs)
    for p in procs:
        try:
            stop_process(p, signal.SIGKILL, 2)
        except Exception:
            pass


def fail_hard(msg):
    """For set-up problems (missing tools): print and exit non-zero, never skip."""
    print("FATAL: " + msg, file=sys.stderr)
    sys.exit(1)


def require_tools(*tools):
    """Fails the test run (exit 1) when a needed tool is missing. Tools: 'memcached', 'curl',
    'h2load', 'nghttp', 'openssl'. RL_BINARY is always required."""
    binary = rl_binary()
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        fail_hard("RL_BINARY=%r is not an executable file" % binary)
    for t in tools:
        path = {"memcached": MEMCACHED, "curl": CURL}.get(t) or shutil.which(t)
        if not path or not os.access(path, os.X_OK):
            fail_hard("required tool %r not found (install it; integration tests do not skip)" % t)


def rl_binary():
    b = os.environ.get("RL_BINARY")
    if b:
        return b
    src = source_dir()
    for cand in ("build/ratelimitd", "build-it/ratelimitd"):
        p = os.path.join(src, cand)
        if os.path.exists(p):
            return p
    return os.path.join(src, "build", "ratelimitd")


_SANITIZED = {}


def sanitized():
    """True if the daemon under test is an AddressSanitizer build. Its allocator keeps freed
    memory in a quarantine (up to 256 MiB by default), so RSS there is no measure of leaks."""
    path = rl_binary()
    if path not in _SANITIZED:
        with open(path, "rb") as f:
            _SANITIZED[path] = b"__asan_init" in f.read()
    return _SANITIZED[path]


ASAN_QUARANTINE_KB = 256 * 1024

# What a sanitizer build prints to stderr when it finds a memory error, a leak at exit or
# undefined behaviour.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: ThreadSanitizer")


def source_dir():
    return os.environ.get("RL_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


# ---------------------------------------------------------------- ports and time


# Ports this test process has handed out. The kernel may give the same port to two binds to
# port 0 in a row once the first socket is closed (about 1 in 5,000 triples here), and a test that
# asks for three node ports then starts a daemon refusing "duplicate server".
_PORTS_HANDED_OUT = set()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed
    out before (bind to port 0, read it, close)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _PORTS_HANDED_OUT:
            _PORTS_HANDED_OUT.add(port)
            return port
    raise RuntimeError("no port left that this process has not handed out (%d handed out)" % len(_PORTS_HANDED_OUT))


def port_accepts(port, host=HOST, timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port, timeout=5.0, proc=None, host=HOST):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if port_accepts(port, host):
            return True
        time.sleep(0.02)
    return False


def wait_port_closed(port, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not port_accepts(port):
            return True
        time.sleep(0.02)
    return False


def wait_fresh_second(max_frac=0.2, min_left=0.0):
    """Sleeps until the wall clock is just past a second boundary (fraction < max_frac), so a
    short burst falls in one window. Returns the window (Unix second) we are now in."""
    while True:
        now = time.time()
        frac = now - int(now)
        if frac < max_frac and frac >= min_left:
            return int(now)
        time.sleep(1.0 - frac + 0.01)


def wait_until(pred, timeout, interval=0.05):
    """Polls pred() until it returns a truthy value or `timeout` passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def all_threads_stopped(pid):
    """Whether every thread of `pid` is in the stopped state (T) in /proc."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return False
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]  # comm, in parentheses, may hold spaces
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that exited meanwhile is not running either
        if state not in ("T", "t"):
            return False
    return True


# ---------------------------------------------------------------- YAML


def _yaml_scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """A small block-style YAML emitter for dicts, lists and scalars (enough for our configs)."""
    pad = "  " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = k if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", str(k)) else json.dumps(str(k))
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:\n%s" % (pad, key, to_yaml(v, indent + 1)))
            elif isinstance(v, dict):
                out.append("%s%s: {}\n" % (pad, key))
            elif isinstance(v, list):
                out.append("%s%s: []\n" % (pad, key))
            else:
                out.append("%s%s: %s\n" % (pad, key, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict) and v:
                inner = to_yaml(v, indent + 1)
                # put the first key on the dash line
                first, rest = inner.split("\n", 1)
                out.append("%s- %s\n%s" % (pad, first.lstrip(), rest))
            else:
                out.append("%s- %s\n" % (pad, _yaml_scalar(v)))
    else:
        out.append(pad + _yaml_scalar(obj) + "\n")
    return "".join(out)


# ---------------------------------------------------------------- memcached


class Memcached:
    """One real memcached process on host:port (127.0.0.1 and a free port unless given)."""

    def __init__(self, port=None, memory_mb=16, host=HOST):
        self.host = host
        self.port = port or free_port()
        self.memory_mb = memory_mb
        self.proc = None
        self.addr = "%s:%d" % (host, self.port)

    def start(self, timeout=5.0):
        cmd = [MEMCACHED, "-u", "nobody", "-l", self.host, "-p", str(self.port), "-U", "0", "-t", "1",
               "-m", str(self.memory_mb)]
        err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _register(self.proc)
        try:
            if not wait_port(self.port, timeout, self.proc, self.host):
                stop_process(self.proc, signal.SIGKILL)
                err.seek(0)
                raise RuntimeError("memcached on %s did not start: %r" % (self.addr, err.read()[-2000:]))
        finally:
            err.close()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL (a crash), by PID, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        _unregister(self.proc)

    def stop(self):
        stop_process(self.proc, signal.SIGTERM, 3)

    def pause(self, timeout=5.0):
        """SIGSTOP, then waits until every thread has stopped. kill() returns before a group stop
        completes: on this 2-vCPU VM a memcached worker thread still running on the other CPU was
        seen answering an `ma` sent 0.7 ms after kill() returned, and a "stalled" node counted."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        if not wait_until(lambda: all_threads_stopped(self.proc.pid), timeout, interval=0.001):
            raise AssertionError("memcached %d did not stop within %.1fs of SIGSTOP" % (self.proc.pid, timeout))

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def command(self, line, timeout=2.0):
        """Sends one text-protocol command and returns the reply up to END/terminal line. Several
        meta commands can go in one call when the last is `mn`: its MN ends the reply."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(line.encode() + b"\r\n")
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if buf.endswith((b"END\r\n", b"MN\r\n")) or re.search(rb"^(ERROR|OK|STORED|NOT_FOUND|VERSION [^\r]*)\r\n$", buf):
                    break
            return buf.decode(errors="replace")

    def stats(self):
        out = {}
        for line in self.command("stats").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
        return out

    def curr_items(self):
        return int(self.stats().get("curr_items", 0))

    def increments(self):
        """A number that grows with every increment (`ma`) this node served, and not with `mn`
        probes: arithmetic hits and misses plus items created. Not an exact count: memcached
        also counts an item as created when a counter's value gains a digit (9 -> 10)."""
        st = self.stats()
        return sum(int(st.get(k, 0)) for k in ("incr_hits", "incr_misses", "total_items"))

    def incr_hits(self):
        """Increments (`ma`) that found their counter: exactly one per `ma` except the one that
        created the counter."""
        return int(self.stats().get("incr_hits", 0))

    def total_items(self):
        return int(self.stats().get("total_items", 0))

    def flush(self):
        self.command("flush_all")


def start_memcached_nodes(n):
    nodes = []
    try:
        for _ in range(n):
            nodes.append(Memcached().start())
    except Exception:
        for m in nodes:
            m.kill()
        raise
    return nodes


# ---------------------------------------------------------------- ratelimitd


def base_config(port, backend=None, **overrides):
    """A config dict listening on 127.0.0.1:port. `backend` is None (local store) or a list of
    "host:port" strings (memcached). Keyword overrides replace top-level sections."""
    cfg = {
        "listen": [{"address": HOST, "port": port}],
        "threads": 2,
        "limits": {"default": 10, "tiers": {"free": 10, "premium": 100}, "keys": {"premium-key-1": "premium"}},
        "shutdown_grace_ms": 600,  # quick clean exits in cleanup; test_shutdown sets its own
        "log_level": "info",
    }
    if backend is not None:
        cfg["backend"] = {"type": "memcached", "servers": list(backend), "timeout_ms": 1000,
                          "on_failure": "open", "key_prefix": "rl:", "key_hash_secret": "test-secret"}
    cfg.update(overrides)
    return cfg


class Daemon:
    """One ratelimitd process. `config` is a dict (written as YAML) or a YAML string. `env`: extra
    environment variables for the process (on top of this one's), or None for none. `nofile`: the
    process's open-file limit (soft and hard), or None to inherit this one's. `cpus`: the set of
    CPUs the process may run on, or None to inherit this one's. `stderr`: a file descriptor for the
    process's stderr instead of the log file (the caller reads it, and may copy it to log_path)."""

    def __init__(self, tmpdir, config=None, port=None, backend=None, name="rl", extra_args=(), env=None,
                 nofile=None, cpus=None, stderr=None):
        self.tmpdir = tmpdir
        self.name = name
        self.port = port or free_port()
        if config is None:
            config = base_config(self.port, backend)
        self.config = config
        self.conf_path = os.path.join(tmpdir, "%s.yaml" % name)
        self.log_path = os.path.join(tmpdir, "%s.stderr" % name)
        self.out_path = os.path.join(tmpdir, "%s.stdout" % name)
        self.extra_args = list(extra_args)
        self.env = dict(env) if env else None
        self.nofile = nofile
        self.cpus = cpus
        self.stderr = stderr
        self.proc = None
        self.write_config(config)

    def write_config(self, config):
        self.config = config
        text = config if isinstance(config, str) else to_yaml(config)
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf_path)

    def start(self, wait=True, timeout=5.0):
        self._err = open(self.log_path, "ab") if self.stderr is None else None
        self._out = open(self.out_path, "ab")
        self.proc = subprocess.Popen([rl_binary(), "-c", self.conf_path] + self.extra_args, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err if self.stderr is None else self.stderr,
                                     cwd=self.tmpdir, env=None if self.env is None else dict(os.environ, **self.env),
                                     preexec_fn=None if self.nofile is None and self.cpus is None else self._preexec)
        _register(self.proc)
        self.started_at = time.monotonic()
        if wait:
            self.wait_healthy(timeout)
        return self

    def _preexec(self):
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)

    def wait_healthy(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("ratelimitd exited during start-up with %s\n%s" % (self.proc.returncode,
                                                                                        self.log_tail()))
            try:
                st, _, _ = http_get(self.port, "/healthz", timeout=0.5)
                if st == 200:
                    return
                last = st
            except OSError as e:
                last = e
            time.sleep(0.03)
        raise AssertionError("ratelimitd did not answer /healthz 200 within %.1fs (last: %r)\n%s" %
                             (timeout, last, self.log_tail()))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Waits for exit; returns the exit status or None on timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=8.0):
        rc = stop_process(self.proc, sig, timeout)
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f:
                f.close()
        return rc

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        lines = self.log().splitlines()
        return "---- %s stderr (last %d of %d lines) ----\n%s\n----" % (self.name, min(n, len(lines)), len(lines),
                                                                       "\n".join(lines[-n:]))

    def cpu_seconds(self):
        """utime + stime of the daemon so far, from /proc/<pid>/stat."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_used_during(self, seconds):
        """Sleeps `seconds` and returns the CPU seconds the daemon used meanwhile: ~0 when idle,
        about `seconds` per thread when a loop spins."""
        before = self.cpu_seconds()
        time.sleep(seconds)
        return self.cpu_seconds() - before

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def client(self, timeout=5.0):
        return Client(self.port, timeout=timeout)

    def metrics(self):
        return scrape_metrics(self.port)


# ---------------------------------------------------------------- HTTP


class Response:
    def __init__(self, status, headers, body, elapsed=0.0):
        self.status = status
        self.headers = headers  # list of (name, value) as received
        self.body = body
        self.elapsed = elapsed

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def json(self):
        return json.loads(self.body.decode())

    def __repr__(self):
        return "<Response %s %r %r>" % (self.status, self.headers, self.body[:300])


class Client:
    """An HTTP/1.1 keep-alive client on one connection (http.client). Reconnects only when
    asked to (reconnect()) so tests can check that a connection survives."""

    def __init__(self, port, timeout=5.0, header="X-API-Key"):
        self.port = port
        self.timeout = timeout
        self.header_name = header
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.conn.auto_open = 0
        self.conn.connect()

    def reconnect(self):
        self.close()
        self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        self.conn.auto_open = 0
        self.conn.connect()

    def request(self, method, path, headers=None, body=None):
        t0 = time.monotonic()
        wall0 = time.time()
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        resp = Response(r.status, r.getheaders(), data, time.monotonic() - t0)
        resp.sent_at, resp.received_at = wall0, time.time()
        return resp

    def limit(self, key, method="GET", header=None):
        hdrs = {}
        if key is not None:
            hdrs[header or self.header_name] = key
        return self.request(method, "/limit", hdrs)

    def get(self, path, headers=None):
        return self.request("GET", path, headers)

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass


def http_get(port, path, headers=None, timeout=5.0):
    """One request on a fresh connection. Returns (status, headers, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def status_of(port, path, headers=None, timeout=2.0):
    """The status of one GET on a fresh connection, or None if the connection failed."""
    try:
        return http_get(port, path, headers, timeout)[0]
    except (OSError, http.client.HTTPException):
        return None


def raw_exchange(port, data, timeout=3.0, read_until_close=False, max_bytes=1 << 20):
    """Sends raw bytes on a new connection and reads what comes back: until the peer closes, or
    (unless read_until_close) until one complete HTTP/1.1 response with Content-Length arrived.
    Returns (bytes, closed_by_peer)."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    buf = b""
    closed = False
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(buf) < max_bytes:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            if not read_until_close and _complete_response(buf):
                break
    finally:
        s.close()
    return buf, closed


def recv_until(sock, done=lambda buf: False, timeout=5.0):
    """Reads from a connected socket until done(bytes so far), the peer closes, or timeout."""
    sock.settimeout(timeout)
    buf = b""
    while not done(buf):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def _response_end(buf):
    """Where the first complete HTTP/1.1 answer in `buf` ends (its body by Content-Length, none
    without one), or None while it is incomplete."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    m = re.search(rb"(?im)^content-length:\s*(\d+)", buf[:head_end])
    end = head_end + 4 + (int(m.group(1)) if m else 0)
    return end if len(buf) >= end else None


def _complete_response(buf):
    return _response_end(buf) is not None


def split_responses(buf):
    """The complete HTTP/1.1 answers at the start of `buf` (pipelined), as Responses."""
    out = []
    while (end := _response_end(buf)) is not None:
        head, _, body = buf[:end].partition(b"\r\n\r\n")
        out.append(Response(int(head.split(b" ", 2)[1]), [], body))
        buf = buf[end:]
    return out


def parse_raw_status(buf):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- rate-limit fields

_POLICY_RE = re.compile(r'^"([^"]+)";q=(\d+);w=(\d+)$')
_RATELIMIT_RE = re.compile(r'^"([^"]+)";r=(\d+);t=(\d+)$')


def parse_policy(value):
    """RateLimit-Policy: "name";q=N;w=1 -> (name, q, w) or None."""
    m = _POLICY_RE.match((value or "").strip())
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def parse_ratelimit(value):
    """RateLimit: "name";r=N;t=S -> (name, r, t) or None."""
    m = _RATELIMIT_RE.match((value or "").strip())
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


# ---------------------------------------------------------------- metrics

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """Parsed Prometheus text: samples[(name, frozenset(labels.items()))] = float."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.types = {}
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3]
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise ValueError("unparseable metrics line: %r" % line)
            labels = dict(_LABEL_RE.findall(m.group(3) or ""))
            self.samples[(m.group(1), frozenset(labels.items()))] = float(m.group(4))

    def get(self, name, default=None, **labels):
        """The sample with exactly these labels (or default)."""
        return self.samples.get((name, frozenset(labels.items())), default)

    def find(self, name, **labels):
        """All samples of `name` whose labels include `labels`: list of (labels dict, value)."""
        want = set(labels.items())
        return [(dict(k[1]), v) for k, v in self.samples.items() if k[0] == name and want <= set(k[1])]

    def sum(self, name, **labels):
        return sum(v for _, v in self.find(name, **labels))

    def has(self, name):
        return any(k[0] == name for k in self.samples)


def scrape_metrics(port, timeout=5.0):
    st, hdrs, body = http_get(port, "/metrics", timeout=timeout)
    if st != 200:
        raise AssertionError("/metrics answered %d" % st)
    return Metrics(body.decode())


# ---------------------------------------------------------------- curl and friends


def run_cmd(args, timeout=30, input=None):
    """Runs a command; returns CompletedProcess with text stdout/stderr."""
    return subprocess.run(args, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          text=True)


def curl(args, timeout=15):
    return run_cmd([CURL, "-sS", "--max-time", str(max(1, timeout - 2))] + list(args), timeout=timeout)


def make_self_signed_cert(tmpdir, key_type="rsa:2048"):
    """`key_type` as openssl req -newkey takes it; "ec" makes an ECDSA P-256 key (scripts/run's)."""
    cert = os.path.join(tmpdir, "cert.pem")
    key = os.path.join(tmpdir, "key.pem")
    newkey = ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if key_type == "ec" else [key_type]
    r = run_cmd(["openssl", "req", "-x509", "-newkey"] + newkey + ["-nodes", "-keyout", key, "-out", cert,
                 "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl failed: %s" % r.stderr)
    return cert, key


# ---------------------------------------------------------------- unittest glue


class RLTestCase(unittest.TestCase):
    """Gives each test a temp dir and stops every daemon/memcached it started; prints daemon
    stderr when the test failed."""

    tools = ("memcached", "curl")

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="rl-it-")
        self.daemons = []
        self.nodes = []
        self.addCleanup(self._cleanup)

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return True
        if hasattr(outcome, "success"):
            return not outcome.success
        return True

    def _cleanup(self):
        failed = self._failed()
        problems = []
        for d in self.daemons:
            was_running = d.alive()
            try:
                rc = d.stop(signal.SIGTERM, 5)
            except Exception as e:
                rc = "stop failed: %r" % e
            log = d.log()
            # Memory errors, undefined behaviour and leaks reported by a sanitizer build fail any
            # test, and so does a daemon that was still running and did not exit 0 on SIGTERM
            # (LeakSanitizer turns a leak into a non-zero exit; a hang ends in SIGKILL).
            if any(m in log for m in SANITIZER_MARKERS):
                problems.append(d.log_tail(120))
            elif was_running and rc != 0:
                problems.append("%s exited %r on SIGTERM at cleanup, not 0\n%s" % (d.name, rc, d.log_tail(80)))
            elif failed:
                print("\n" + d.log_tail(80), file=sys.stderr)
        for m in self.nodes:
            try:
                m.kill()
            except Exception:
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        if problems:
            raise AssertionError("ratelimitd did not stop cleanly:\n" + "\n".join(problems))

    def memcached(self, n=1):
        nodes = start_memcached_nodes(n)
        self.nodes.extend(nodes)
        return nodes

    def daemon(self, config=None, port=None, backend=None, name=None, start=True, **kw):
        d = Daemon(self.tmpdir, config=config, port=port, backend=backend, name=name or "rl%d" % len(self.daemons),
                   **kw)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def assertAlive(self, d):
        if not d.alive():
            self.fail("ratelimitd died (exit %s)\n%s" % (d.proc.returncode, d.log_tail()))


def main():
    """Runs the unittest cases of __main__ and exits non-zero on failure, with a summary."""
    require_tools(*getattr(sys.modules["__main__"], "REQUIRED_TOOLS", ("memcached", "curl")))
    t0 = time.monotonic()
    prog = unittest.main(module="__main__", exit=False, verbosity=2)
    r = prog.result
    name = os.path.basename(sys.argv[0])
    print("%s: %d run, %d failures, %d errors, %d skipped in %.1fs" %
          (name, r.testsRun, len(r.failures), len(r.errors), len(r.skipped), time.monotonic() - t0))
    sys.exit(0 if r.wasSuccessful() and not r.skipped and r.testsRun > 0 else 1)


# ---------------------------------------------------------------- a misbehaving memcached


class FakeMemcached:
    """A TCP server on 127.0.0.1 that plays a broken memcached node. Modes:
    garbage   answers every read with bytes that are no memcached reply
    truncated answers the start of a reply, then closes
    silent    accepts and reads, never answers
    close     closes every connection at once
    mn_ok     answers the `mn` probe correctly (MN) but garbage to everything else
    full      answers the probe, and every increment with memcached's SERVER_ERROR for a full
              node started with -M (no evictions)
    blackhole never accepts and its accept queue is full, so the kernel drops every SYN: a
              connect never completes, as with a host that died without a reset
    Runs on daemon threads; stop() closes the listener and every connection."""

    # control bytes in the first line too: the daemon quotes that line in its log, sanitised
    GARBAGE = b"HTTP/1.1 200 OK\x1b[2J\x00\r\n\x00\xff\xfe VA x y z\r\n-1\r\nEN\r\n"
    SERVER_FULL = b"SERVER_ERROR Out of memory allocating new item\r\n"

    def __init__(self, mode, port=None):
        self.mode = mode
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port or 0))
        self.sock.listen(0 if mode == "blackhole" else 128)
        self.port = self.sock.getsockname()[1]
        self.addr = "%s:%d" % (HOST, self.port)
        self.conns = []
        self.accepted = 0
        self.bytes_in = 0
        self.running = True
        self.lock = threading.Lock()
        if mode == "blackhole":
            self._fill_accept_queue()
        else:
            threading.Thread(target=self._accept_loop, daemon=True).start()

    def _fill_accept_queue(self):
        """A backlog of 0 queues one connection; once it is queued, later SYNs are dropped."""
        filler = socket.create_connection((HOST, self.port), timeout=2)
        self.conns.append(filler)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setblocking(False)
        self.conns.append(probe)
        if probe.connect_ex((HOST, self.port)) not in (errno.EINPROGRESS, errno.EAGAIN):
            raise AssertionError("blackhole: a second connect did not hang")
        if select.select([], [probe], [], 0.3)[1]:
            raise AssertionError("blackhole: the kernel completed a connect over a full accept queue")

    def _accept_loop(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            if self.mode == "close":
                c.close()
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while self.running:
                data = c.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.bytes_in += len(data)
                if self.mode == "silent":
                    continue
                if self.mode == "garbage":
                    c.sendall(self.GARBAGE)
                elif self.mode == "truncated":
                    c.sendall(b"VA 1 O")
                    break
                elif self.mode in ("mn_ok", "full"):
                    buf += data
                    while b"\r\n" in buf:
                        line, buf = buf.split(b"\r\n", 1)
                        if line.strip() == b"mn":
                            c.sendall(b"MN\r\n")
                        else:
                            c.sendall(self.GARBAGE if self.mode == "mn_ok" else self.SERVER_FULL)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        self.running = False
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


def key_owners(client, nodes, keys):
    """Sends one /limit per key through `client` and finds which of `nodes` counted it (the one
    whose total_items grew). Returns {key: (node index, response)}; fails if not exactly one node
    grew, so keys must be fresh in the current window."""
    owners = {}
    totals = [n.total_items() for n in nodes]
    for k in keys:
        r = client.limit(k)
        now = [n.total_items() for n in nodes]
        grew = [i for i in range(len(nodes)) if now[i] > totals[i]]
        if len(grew) != 1:
            raise AssertionError("key %s: one new counter on exactly one node expected: %r -> %r" % (k, totals, now))
        owners[k] = (grew[0], r)
        totals = now
    return owners


def p99(values):
    """The 99th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class LoadGen:
    """Keep-alive clients sending /limit over `keys` in the background until finish(). Records
    every status, the slowest answer, each answer slower than `slow_over` seconds, every answer
    as (monotonic time it arrived, seconds it took) in `answers`, and in `uncounted` the 200s
    that were admitted without a count (on_failure: open reports the whole limit as remaining,
    which a counted request, at least the first of its window, never does)."""

    def __init__(self, port, keys, clients=2, pause=0.002, slow_over=None):
        self.port, self.keys, self.pause, self.slow_over = port, keys, pause, slow_over
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses = collections.Counter()
        self.slowest = 0.0
        self.slow = []
        self.answers = []
        self.errors = []
        self.uncounted = 0
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def run(self, idx):
        try:
            c = Client(self.port, timeout=5)
            n = idx
            while not self.stop.is_set():
                r = c.limit(self.keys[n % len(self.keys)])
                n += 1
                with self.lock:
                    self.statuses[r.status] += 1
                    if r.status == 200 and r.json.get("remaining") == r.json.get("limit"):
                        self.uncounted += 1
                    self.slowest = max(self.slowest, r.elapsed)
                    self.answers.append((time.monotonic(), r.elapsed))
                    if self.slow_over is not None and r.elapsed > self.slow_over:
                        self.slow.append(round(r.elapsed, 3))
                if self.pause:
                    time.sleep(self.pause)
            c.close()
        except Exception as e:  # noqa: BLE001
            with self.lock:
                self.errors.append(repr(e))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return self

    def latencies(self, since, until):
        """Seconds taken by the answers that arrived between the two monotonic times."""
        with self.lock:
            return [took for at, took in self.answers if since <= at < until]
