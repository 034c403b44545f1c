"""
bench/run and bench/paired, run for a second or two against ratelimitd's two backends: they must
start what they measure, report what the load generator and the daemon's /metrics saw, apply B's
options in an A/B, and leave no process behind. bench/paired-pool, on runs written here, must pool
their pairs (not their medians) and refuse runs of different comparisons. Their figures are not checked here (speed is for
the benchmark scripts to report, not for ctest to assert); their plumbing is.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rlharness as h  # noqa: E402

REQUIRED_TOOLS = ("memcached", "curl", "wrk")


def bench_memcached_pids():
    """memcached processes started by the bench scripts (their option set is unlike any test's)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # argv[0] is taskset when the scripts pin memcached
        if any(os.path.basename(a) == b"memcached" for a in argv) and b"8192" in argv and b"512" in argv:
            pids.append(int(pid))
    return pids


class BenchScriptsTest(h.RLTestCase):
    def bench(self, script, timeout=120, **env):
        """Runs bench/<script> with its results in the test's directory; (exit code, output)."""
        results = os.path.join(self.tmpdir, "results")
        os.makedirs(results, exist_ok=True)
        # the caller's own BENCH_*/PAIRED_* settings must not change what is tested
        full = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "PAIRED_"))}
        full.update(RATELIMITD=h.rl_binary(), BENCH_NO_BUILD="1", BENCH_NO_DEPS="1", BENCH_RESULTS=results,
                    BENCH_CLIENT_CPUS="", BENCH_SERVER_CPUS="", BENCH_WARMUP="0", **env)
        before = set(bench_memcached_pids())
        p = subprocess.Popen([sys.executable, os.path.join(h.source_dir(), "bench", script)], env=full,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)  # the scripts stop what they started on SIGTERM
            out, err = p.communicate(timeout=30)
            self.fail("bench/%s ran over %d s:\n%s%s" % (script, timeout, out, err))
        self.assertEqual(set(bench_memcached_pids()) - before, set(),
                         "bench/%s left its memcached nodes running" % script)
        return p.returncode, out + err

    def results(self, name):
        with open(os.path.join(self.tmpdir, "results", name)) as f:
            return f.read()

    def test_run_measures_both_backends(self):
        rc, out = self.bench("run", BENCH_ONLY="ratelimitd-mc,ratelimitd-local", BENCH_SCENARIOS="h1-keys,h1-hot",
                             BENCH_SECONDS="1", BENCH_ROUNDS="1")
        self.assertEqual(rc, 0, out)
        runs = {(r["server"], r["scenario"]): r["result"] for r in json.loads(self.results("latest.json"))["runs"]}
        self.assertEqual(set(runs), {(s, c) for s in ("ratelimitd-mc", "ratelimitd-local")
                                     for c in ("h1-keys", "h1-hot")})
        for (server, scenario), r in runs.items():
            what = "%s %s: %r" % (server, scenario, r)
            self.assertGreater(r["requests"], 0, what)
            self.assertGreater(r["cpu_us_per_req"], 0, what)
            # 100,000 keys of limit 10 for a second: all admitted; one hot key: nearly all 429
            admitted = r["status"]["<400"] / r["requests"]
            self.assertGreater(admitted, 0.9, what) if scenario == "h1-keys" else self.assertLess(admitted, 0.1, what)
            # the daemon's own count of decisions matches the client's, give or take those in flight at the end
            self.assertAlmostEqual(r["metrics_delta"]["decisions_total"], r["requests"], delta=r["requests"] * 0.05 + 64)
        mc = runs[("ratelimitd-mc", "h1-keys")]["metrics_delta"]
        self.assertGreater(mc["backend_writes"], 0)
        self.assertGreater(mc["counters_created"], 0)
        self.assertLessEqual(mc["counters_created"], mc["backend_write_requests"])
        self.assertGreater(runs[("ratelimitd-mc", "h1-keys")]["cpu_mc_us_per_req"], 0, "memcached's CPU not counted")
        self.assertNotIn("counters_created", runs[("ratelimitd-local", "h1-keys")]["metrics_delta"])
        self.assertIn("| ratelimitd-mc | h1-keys |", self.results("latest.md"))

    def test_run_counts_system_calls_and_switches_per_request(self):
        probe = subprocess.run(["perf", "stat", "-e", "raw_syscalls:sys_enter", "true"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) if shutil.which("perf") else None
        if probe is None or probe.returncode != 0:
            self.skipTest("perf cannot count syscall tracepoints here (not installed, or no tracefs access)")
        rc, out = self.bench("run", BENCH_ONLY="ratelimitd-local,ratelimitd-mc", BENCH_SCENARIOS="h1-keys",
                             BENCH_SECONDS="1", BENCH_ROUNDS="0", BENCH_PROFILE="syscalls")
        self.assertEqual(rc, 0, out)
        report = json.loads(self.results("syscalls-latest.json"))
        costs = report["host_costs"]
        self.assertEqual(set(costs), {"syscall_us", "pipe_rw_us", "switch_us"}, out)
        self.assertTrue(all(v > 0 for v in costs.values()), costs)
        rows = {(r["server"], r["group"]): r["per_req"] for r in report["rows"] if r["scenario"] == "h1-keys"}
        self.assertEqual(set(rows), {("ratelimitd-local", "ratelimitd-local"), ("ratelimitd-mc", "ratelimitd-mc"),
                                     ("ratelimitd-mc", "memcached")}, out)
        for server in ("ratelimitd-local", "ratelimitd-mc"):
            per = rows[(server, server)]
            # wrk sends one request per round trip on each connection: ratelimitd reads each one
            # and writes each answer (h2o: read, writev), and makes other calls besides
            self.assertGreater(per["read"], 0.9, (server, per))
            self.assertGreater(per["writev"], 0.9, (server, per))
            self.assertLess(per["writev"], 1.5, (server, per))
            self.assertGreaterEqual(per["all"], per["read"] + per["writev"], (server, per))
        # memcached's threads are told apart from ratelimitd's: they read the batches ratelimitd
        # writes (no more reads than increments) and sleep between them
        mc = rows[("ratelimitd-mc", "memcached")]
        self.assertGreater(mc["read"], 0, mc)
        self.assertLessEqual(mc["read"], 1.0, mc)
        self.assertGreater(mc["switches_voluntary"], 0, mc)
        self.assertEqual(mc.get("writev", 0), 0, mc)
        self.assertIn("| ratelimitd-local | h1-keys | ratelimitd-local |", self.results("syscalls-latest.md"))

    def test_paired_alternates_and_reports_ratios(self):
        rc, out = self.bench("paired", PAIRED_SERVERS="ratelimitd-local,ratelimitd-mc", PAIRED_PAIRS="2",
                             PAIRED_SECONDS="1")
        self.assertEqual(rc, 0, out)
        report = json.loads(self.results("paired-latest.json"))
        pairs = report["pairs"]
        self.assertEqual([p["first"] for p in pairs], ["ratelimitd-local", "ratelimitd-mc"])
        for p in pairs:
            self.assertGreater(p["a"]["requests"], 0, p)
            self.assertGreater(p["b"]["requests"], 0, p)
            self.assertAlmostEqual(p["cpu_ratio"], p["a"]["cpu_us_per_req"] / p["b"]["cpu_us_per_req"])
            self.assertAlmostEqual(p["rps_ratio"], p["a"]["rps"] / p["b"]["rps"])
            self.assertEqual(p["a"]["cpu_mc_us_per_req"], 0, "the local store has no memcached")
            self.assertGreater(p["b"]["cpu_mc_us_per_req"], 0, "memcached's CPU not counted for ratelimitd-mc")
        ratios = sorted(p["cpu_ratio"] for p in pairs)
        self.assertAlmostEqual(report["summary"]["cpu_ratio"]["median"], sum(ratios) / 2)
        self.assertIn("| CPU per request, ratelimitd-local ÷ ratelimitd-mc |", self.results("paired-latest.md"))

    def test_paired_ab_gives_b_its_own_memcached_options(self):
        # B's memcached cannot start with an unknown option, so the run fails if and only if B's
        # options reach B's nodes (A's, the deployed ones, start)
        rc, out = self.bench("paired", PAIRED_SERVERS="ratelimitd-mc,ratelimitd-mc", PAIRED_PAIRS="1",
                             PAIRED_SECONDS="1", PAIRED_B_MC_ARGS="-o no_such_option_for_the_test")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("ratelimitd-mc (B) did not start", out)
        rc, out = self.bench("paired", PAIRED_SERVERS="ratelimitd-mc,ratelimitd-mc", PAIRED_PAIRS="1",
                             PAIRED_SECONDS="1", PAIRED_B_MC_ARGS="-o no_lru_maintainer")
        self.assertEqual(rc, 0, out)
        meta = json.loads(self.results("paired-latest.json"))["meta"]
        self.assertEqual(meta["b_mc_args"], ["-o", "no_lru_maintainer"])
        self.assertIn("ratelimitd-mc (B)", self.results("paired-latest.md"))

    def test_paired_refuses_a_server_against_itself_without_a_difference(self):
        rc, out = self.bench("paired", timeout=30, PAIRED_SERVERS="ratelimitd-local,ratelimitd-local")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("needs PAIRED_B_RATELIMITD or PAIRED_B_MC_ARGS", out)

    def write_paired_run(self, name, servers, cpu_ratios, writes_per_decision=None):
        """A paired-latest.json as bench/paired writes it, with the given pair ratios; its directory."""
        d = os.path.join(self.tmpdir, name)
        os.makedirs(d)
        pairs = []
        for i, ratio in enumerate(cpu_ratios):
            a = {"cpu_us_per_req": ratio, "cpu_mc_us_per_req": 0.5, "rps": 1.0 / ratio, "client_core_pct": 90.0}
            if writes_per_decision is not None:
                a["metrics_delta"] = {"decisions_total": 1000.0, "backend_writes": 1000.0 * writes_per_decision[i]}
            pairs.append({"first": servers[i % 2], "a": a, "b": {"cpu_us_per_req": 1.0, "rps": 1.0, "server_core_pct": 99.0},
                          "cpu_ratio": ratio, "rps_ratio": 1.0 / ratio})
        ratios = sorted(cpu_ratios)
        report = {"meta": {"date": name, "commit": "c0ffee", "servers": servers, "scenario": "h1-keys"},
                  "summary": {"cpu_ratio": {"median": ratios[len(ratios) // 2]}, "rps_ratio": {"median": 1.0}},
                  "pairs": pairs}
        with open(os.path.join(d, "paired-latest.json"), "w") as f:
            json.dump(report, f)
        return d

    def paired_pool(self, *args):
        p = subprocess.run([sys.executable, os.path.join(h.source_dir(), "bench", "paired-pool")] + list(args),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    def test_paired_pool_takes_the_pairs_of_several_runs_together(self):
        servers = ["ratelimitd-mc", "nginx"]
        one = self.write_paired_run("run-1", servers, [0.9, 1.1, 0.95], [0.06, 0.20, 0.07])
        two = self.write_paired_run("run-2", servers, [1.2, 0.8, 0.97], [0.25, 0.05, 0.065])
        rc, out = self.paired_pool(one, os.path.join(two, "paired-latest.json"))
        self.assertEqual(rc, 0, out)
        self.assertIn("ratelimitd-mc ÷ nginx, h1-keys, 6 pairs from 2 runs", out)
        # median of the six pairs (not of the runs' medians), 4 at or under 1, P(>= 4 of 6) = 22/64
        row = [line for line in out.splitlines() if line.startswith("| CPU per request |")]
        self.assertEqual(len(row), 1, out)
        cells = [c.strip() for c in row[0].split("|")[1:-1]]
        self.assertEqual(cells[1], "0.960")
        self.assertEqual(cells[4], "4 of 6")
        self.assertEqual(cells[5], "0.344")
        # thirds by writes per decision: (0.05, 0.06) -> 0.85, (0.065, 0.07) -> 0.96, (0.20, 0.25) -> 1.15
        for third, ratio in (("fewest writes", "0.850"), ("middle", "0.960"), ("most writes", "1.150")):
            line = [x for x in out.splitlines() if x.startswith("| %s |" % third)]
            self.assertEqual(len(line), 1, out)
            self.assertEqual(line[0].split("|")[3].strip(), ratio, line[0])

    def test_paired_pool_refuses_runs_of_different_comparisons(self):
        one = self.write_paired_run("run-nginx", ["ratelimitd-mc", "nginx"], [1.0, 1.0])
        two = self.write_paired_run("run-haproxy", ["ratelimitd-mc", "haproxy"], [1.0, 1.0])
        rc, out = self.paired_pool(one, two)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("pool runs of one comparison", out)


if __name__ == "__main__":
    h.main()
