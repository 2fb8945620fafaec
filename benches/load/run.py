#!/usr/bin/env python3
"""Load benchmark: gatehouse vs nginx vs direct, same run, same load generator.

    python3 benches/load/run.py [--rounds 3] [--duration 5] [--connections 50] [--scenarios plain,chain,body1k,body100k]

Builds gatehouse (release), starts a fast upstream (nginx `return 200`), nginx as the
reference reverse proxy (1 worker, upstream keepalive) and gatehouse (1 thread), pins the
proxy under test to CPU 0 and everything else to the other CPUs, and runs wrk against
direct / nginx / gatehouse in alternation for several rounds. Prints a table (requests/s,
p50/p99 latency, CPU-seconds per 1M requests, peak RSS, ratios gatehouse/nginx) and writes
it to benches/load/results.md. Traffic goes to 127.0.0.1 only; every run is bounded.
"""
import argparse, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK


def peak_rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+)", f.read())
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def ensure(cmd, package):
    if shutil.which(cmd):
        return
    print(f"installing {package}", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False)
    if not shutil.which(cmd):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "total": total, "p50": lat("50"), "p99": lat("99"),
            "errors": int(errors.group(1)) if errors else 0, "socket": sock.group(1) if sock else ""}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--scenarios", default="plain,chain,body1k,body100k")
    ap.add_argument("--proxy-cpus", default="0", help="CPUs for the proxy under test (taskset list)")
    ap.add_argument("--threads", type=int, default=1, help="gatehouse threads and nginx workers")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "load", "results.md"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()

    ensure("wrk", "wrk")
    ensure("nginx", "nginx-light")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "gatehouse"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "gatehouse")
    ncpu = os.cpu_count() or 2
    proxy_cpus = args.proxy_cpus
    used = set()
    for part in proxy_cpus.split(","):
        a, _, b = part.partition("-")
        used.update(range(int(a), int(b or a) + 1))
    other_cpus = ",".join(str(c) for c in range(ncpu) if c not in used) or proxy_cpus

    tmp = tempfile.mkdtemp(prefix="gh-bench-")
    os.chmod(tmp, 0o755)  # nginx workers run unprivileged and must read the bodies
    procs = []

    def start(cmd, cpus, **kw):
        p = subprocess.Popen(["taskset", "-c", cpus] + cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"{len(procs)}.log"), "w"), **kw)
        procs.append(p)
        return p

    up_port, nginx_port, gh_port = free_port(), free_port(), free_port()
    bodies = {"plain": 20, "chain": 20, "body1k": 1024, "body100k": 100 * 1024}
    for name, size in bodies.items():
        with open(os.path.join(tmp, f"{name}.txt"), "w") as f:
            f.write(("x" * (size - 1)) + "\n")
    upstream_conf = f"""
worker_processes 1; pid {tmp}/up.pid; error_log {tmp}/up-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{up_port} reuseport; root {tmp};
    location = /plain {{ try_files /plain.txt =404; }}
    location = /chain {{ try_files /chain.txt =404; }}
    location = /body1k {{ try_files /body1k.txt =404; }}
    location = /body100k {{ try_files /body100k.txt =404; }}
  }} }}
"""
    nginx_conf = f"""
worker_processes {args.threads}; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000;
  upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
"""
    gh_conf = f"""
server: {{ threads: {args.threads}, work_stealing: false, pid_file: {tmp}/gh.pid, upgrade_sock: {tmp}/gh.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}
listeners:
  - {{ name: main, address: 127.0.0.1:{gh_port} }}
upstreams:
  - {{ id: up, nodes: [{{ address: "127.0.0.1:{up_port}" }}] }}
consumers:
  - {{ id: bench, credentials: {{ key-auth: {{ key: bench-key }} }} }}
global_plugins:
  prometheus: {{}}
routes:
  - {{ id: plain, paths: [/plain, /body1k, /body100k], upstream: up }}
  - id: chain
    paths: [/chain]
    upstream: up
    plugins:
      key-auth: {{}}
      rate-limit: {{ count: 100000000, period: 1m, key: consumer }}
      headers: {{ request: {{ set: {{ x-gateway: gatehouse }} }}, response: {{ set: {{ x-served-by: gatehouse }} }} }}
      access-log: {{ path: {tmp}/access.log }}
"""
    for name, text in [("up.conf", upstream_conf), ("nginx.conf", nginx_conf), ("gh.yaml", gh_conf)]:
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    try:
        start(["nginx", "-p", tmp, "-c", os.path.join(tmp, "up.conf"), "-g", "daemon off;"], other_cpus)
        wait_port(up_port)
        nginx = start(["nginx", "-p", tmp, "-c", os.path.join(tmp, "nginx.conf"), "-g", "daemon off;"], proxy_cpus)
        wait_port(nginx_port)
        gh = start([binary, "-c", os.path.join(tmp, "gh.yaml"), "--no-watch"], proxy_cpus, env={**os.environ, "RUST_LOG": "warn"})
        wait_port(gh_port)
        nginx_pids = children(nginx.pid) or [nginx.pid]
        targets = {"direct": (up_port, []), "nginx": (nginx_port, nginx_pids), "gatehouse": (gh_port, [gh.pid])}
        results = {}
        for scenario in args.scenarios.split(","):
            headers = ["-H", "apikey: bench-key"] if scenario == "chain" else []
            for rnd in range(args.rounds):
                for target, (port, pids) in targets.items():
                    if target == "direct" and scenario == "chain":
                        continue
                    url = f"http://127.0.0.1:{port}/{scenario}"
                    # Warm-up, then the measured run.
                    subprocess.run(["taskset", "-c", other_cpus, "wrk", "-t1", f"-c{args.connections}", "-d1s", url] + headers, capture_output=True)
                    cpu0 = cpu_seconds(pids)
                    out = subprocess.run(["taskset", "-c", other_cpus, "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url] + headers,
                                         capture_output=True, text=True, timeout=args.duration + 30).stdout
                    cpu = cpu_seconds(pids) - cpu0
                    r = parse_wrk(out)
                    if r["errors"]:
                        raise SystemExit(f"{target} answered {r['errors']} non-2xx responses to {url}; see {tmp}")
                    r["cpu_per_m"] = cpu / r["total"] * 1e6 if r["total"] and pids else float("nan")
                    r["rss_mib"] = peak_rss_kib(pids) / 1024 if pids else float("nan")
                    results.setdefault((scenario, target), []).append(r)
                    print(f"{scenario:9} round {rnd + 1} {target:9} {r['rps']:>10.0f} req/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  non-2xx {r['errors']} {r['socket']}", flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def med(rs, k):
        return statistics.median(r[k] for r in rs)

    lines = [
        f"Machine: {os.cpu_count()} CPUs ({open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}); proxy on CPUs {proxy_cpus}, wrk and upstream on {other_cpus}.",
        f"Command: `python3 benches/load/run.py --rounds {args.rounds} --duration {args.duration} --connections {args.connections} --threads {args.threads} --proxy-cpus {proxy_cpus}`; wrk -t1 -c{args.connections}; medians of {args.rounds} rounds.",
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | CPU s / 1M req | peak RSS MiB | req/s vs nginx | p99 vs nginx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in args.scenarios.split(","):
        base = results.get((scenario, "nginx")) or results.get(("plain", "nginx"))
        for target in ["direct", "nginx", "gatehouse"]:
            rs = results.get((scenario, target))
            if not rs:
                continue
            ratio = med(rs, "rps") / med(base, "rps") if base else float("nan")
            p99r = med(rs, "p99") / med(base, "p99") if base else float("nan")
            lines.append(f"| {scenario} | {target} | {med(rs, 'rps'):.0f} | {med(rs, 'p50'):.3f} | {med(rs, 'p99'):.3f} | {med(rs, 'cpu_per_m'):.1f} | {med(rs, 'rss_mib'):.1f} | {ratio:.2f} | {p99r:.2f} |")
    table = "\n".join(lines)
    print("\n" + table)
    with open(args.out, "w") as f:
        f.write(table + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
