#!/usr/bin/env python3
"""Instructions and allocations per request: gatehouse vs nginx, under callgrind.

    python3 benches/load/instructions.py [--requests 2000] [--scenarios plain,chain] [--binary PATH]

The load harness (run.py) measures time, which moves with the machine's load and CPU; this
counts what each proxy executes in user space per request, which does not: the same build on
the same input gives the same count, run after run, so a change of 1% shows. (System calls
and the kernel's network work are not counted: see docs/benchmarks.md for those.)

Starts a fast upstream (nginx serving a 20-byte body), then the proxy under test under
valgrind's callgrind (`master_process off` for nginx, 1 thread for gatehouse), each with the
same configs as run.py's `plain` and `chain` scenarios. For each scenario it sends 200
requests to warm up, zeroes the counters (`callgrind_control -z`), sends `--requests`
requests one after another on one keep-alive connection, dumps the counters and reads:

  instructions/request   all instructions the proxy process executed, over the requests sent
  allocations/request    calls into the allocator (mimalloc for gatehouse, libc malloc and
                         friends for nginx) from outside it

nginx has no equivalent of the chain: its `chain` row is its plain proxy of the same request.
Needs valgrind (Debian package `valgrind`) and nginx. Writes the table to
benches/load/instructions.md (`--out`). Traffic goes to 127.0.0.1 only; every process is
stopped and the temp dir removed at the end.
"""
import argparse, http.client, os, re, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import NGINX_PROXY, ROOT, chain_plugins_yaml, ensure, free_port, wait_port  # noqa: E402

SCENARIOS = ["plain", "chain"]
WARM_UP = 200
# Entry points of the allocators, as callgrind names them.
ALLOCATORS = {
    "malloc", "calloc", "realloc", "posix_memalign", "memalign", "aligned_alloc",
    "mi_malloc", "mi_zalloc", "mi_calloc", "mi_realloc",
    "mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned",
}


def send(port, path, n, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(n):
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path} on port {port}: {resp.status}")
    conn.close()


def read_dump(path):
    """(instructions, allocator calls from outside the allocator) of one callgrind dump."""
    names, total, allocs = {}, 0, 0
    caller = callee = None
    pending_calls = None

    def name_of(ref):
        m = re.match(r"\((\d+)\)(?: (.*))?", ref)
        if not m:
            return ref
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "")

    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                caller = name_of(line[3:].strip())
            elif line.startswith("cfn="):
                callee = name_of(line[4:].strip())
            elif line.startswith("calls="):
                pending_calls = int(line[6:].split()[0])
            elif pending_calls is not None:
                # The cost line of the call; the count was on the line before.
                if callee in ALLOCATORS and caller not in ALLOCATORS:
                    allocs += pending_calls
                pending_calls = None
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    return total, allocs


class Run:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="gatehouse-instr-")
        os.chmod(self.tmp, 0o755)  # nginx workers run unprivileged and must read the body
        self.procs = []

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def spawn(self, cmd, name):
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 15)
                    p.wait(timeout=20)
                except (OSError, subprocess.TimeoutExpired):
                    os.killpg(p.pid, 9)
        if self.args.keep_tmp:
            print(f"temp dir kept: {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def under_callgrind(self, name, cmd):
        out = os.path.join(self.tmp, f"{name}.callgrind")
        return self.spawn(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"] + cmd, name), out

    def measure(self, proc, out, port, path, headers):
        send(port, path, WARM_UP, headers)
        before = set(os.listdir(self.tmp))
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True, timeout=60)
        send(port, path, self.args.requests, headers)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True, timeout=60)
        prefix = os.path.basename(out)
        deadline = time.time() + 30
        while time.time() < deadline:
            dumps = [f for f in set(os.listdir(self.tmp)) - before if f.startswith(prefix)]
            if dumps:
                time.sleep(0.5)  # let callgrind finish writing it
                instructions, allocs = read_dump(os.path.join(self.tmp, sorted(dumps)[-1]))
                return instructions / self.args.requests, allocs / self.args.requests
            time.sleep(0.2)
        raise RuntimeError(f"no callgrind dump for {prefix}")

    def main(self):
        a = self.args
        up_port, ng_port, gh_port = free_port(), free_port(), free_port()
        self.write("plain.txt", "x" * 19 + "\n")
        up = self.write("up.conf", f"""
worker_processes 1; pid {self.tmp}/up.pid; error_log {self.tmp}/up-error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{up_port}; root {self.tmp};
    location / {{ try_files /plain.txt =404; }} }} }}
""")
        # The load harness's proxy settings (the Host and forwarded headers gatehouse sends).
        ng = self.write("nginx.conf", f"""
worker_processes 1; master_process off; pid {self.tmp}/nginx.pid; error_log {self.tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ng_port};
    location / {{ {NGINX_PROXY} }} }} }}
""")
        gh = self.write("gh.yaml", f"""
server: {{ threads: 1, work_stealing: false, pid_file: {self.tmp}/gh.pid, upgrade_sock: {self.tmp}/gh.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}
listeners:
  - {{ name: main, address: "127.0.0.1:{gh_port}" }}
upstreams:
  - {{ id: up, nodes: [{{ address: "127.0.0.1:{up_port}" }}] }}
consumers:
  - id: bench
    credentials:
      key-auth: {{ key: bench-key }}
routes:
  - {{ id: plain, paths: [/plain], upstream: up }}
  - id: chain
    paths: [/chain]
    upstream: up
    plugins:{chain_plugins_yaml(f"{self.tmp}/access.log")}
""")
        self.spawn(["nginx", "-p", self.tmp, "-c", up, "-g", "daemon off;"], "upstream")
        wait_port(up_port, what="upstream nginx")
        nginx, nginx_out = self.under_callgrind("nginx", ["nginx", "-p", self.tmp, "-c", ng, "-g", "daemon off;"])
        gatehouse, gh_out = self.under_callgrind("gatehouse", [a.binary, "-c", gh, "--no-watch"])
        wait_port(ng_port, timeout=120, proc=nginx, what="nginx under valgrind")
        wait_port(gh_port, timeout=120, proc=gatehouse, what="gatehouse under valgrind")
        headers = {"apikey": "bench-key"}
        rows = []
        for scenario in a.scenarios:
            path = "/" + scenario
            n_instr, n_alloc = self.measure(nginx, nginx_out, ng_port, path, headers)
            g_instr, g_alloc = self.measure(gatehouse, gh_out, gh_port, path, headers)
            nginx_label = "nginx" if scenario == "plain" else "nginx (plain)"
            rows.append((scenario, nginx_label, n_instr, n_alloc, "", ""))
            rows.append((scenario, "gatehouse", g_instr, g_alloc, f"{g_instr / n_instr:.2f}x", f"{g_alloc / n_alloc:.1f}x"))
        return rows


def report(rows, command, binary):
    lines = [
        "# Instructions and allocations per request (callgrind)",
        "",
        f"Command: `{command}`  ",
        f"Binary: `{binary}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"valgrind: {subprocess.run(['valgrind', '--version'], capture_output=True, text=True).stdout.strip()}; "
        f"nginx: {subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip().split('/')[-1]}",
        "",
        "| scenario | proxy | instructions/request | allocations/request | instructions vs nginx | allocations vs nginx |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for scenario, proxy, instr, alloc, ri, ra in rows:
        lines.append(f"| {scenario} | {proxy} | {instr:,.0f} | {alloc:.1f} | {ri} | {ra} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="measured requests per scenario and proxy")
    ap.add_argument("--scenarios", default="plain,chain", help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--binary", help="the gatehouse binary to measure (default: build release and use it)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "load", "instructions.md"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, dumps, logs)")
    args = ap.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    ensure("valgrind", "valgrind")
    ensure("nginx", "nginx-light")
    if not args.binary:
        subprocess.run(["cargo", "build", "--release", "--bin", "gatehouse"], cwd=ROOT, check=True)
        args.binary = os.path.join(ROOT, "target", "release", "gatehouse")
    command = f"python3 benches/load/instructions.py --requests {args.requests} --scenarios {','.join(args.scenarios)}"
    run = Run(args)
    try:
        rows = run.main()
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        run.cleanup()
    table = report(rows, command, args.binary)
    print("\n" + table)
    with open(args.out, "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
