#!/usr/bin/env python3
"""Load benchmark: gatehouse vs nginx vs direct, same run, same load generator.

    python3 benches/load/run.py [--rounds 3] [--duration 5] [--connections 50] [--scenarios LIST]

Builds gatehouse (release; `--no-build` skips it), starts a fast upstream (nginx serving
static bodies), nginx as the reference reverse proxy (1 worker, upstream keepalive 64, the
same Host and forwarded headers gatehouse sends, 64 KiB proxy buffers like Pingora's body reads,
no temp files) and gatehouse (1 thread), pins the proxy under test to
`--proxy-cpus` (CPU 0) and everything else (wrk, the upstream, Redis, this script) to the
other CPUs, and runs wrk against direct / nginx / gatehouse in alternation for several
rounds (each round runs every scenario, each target in turn, with a 1 s warm-up before each
measured run; medians over the rounds are reported). Before measuring it checks that every
scenario does what it claims (401 without credentials, a cache hit, TLS up). Prints a table (requests/s, p50/p99 latency, CPU-seconds per 1M requests, peak RSS,
ratios gatehouse/nginx) plus the idle-connection and reload sections, and writes them to
benches/load/results.md (`--out`). Traffic goes to 127.0.0.1 only; every subprocess has a
timeout; every process started is killed (by process group) and the temp dir removed at the
end, also on failure (`--keep-tmp` keeps the temp dir for debugging).

Scenarios (`--scenarios a,b,...`; default `all`, run in this order whatever the order given;
all of them with the defaults take about 9 minutes, with `--rounds 1 --duration 2` about 2):

  plain            proxy only: a gatehouse route with no plugins; nginx `proxy_pass`.
  pipeline         the same route, HTTP/1.1 pipelining: wrk sends 16 requests at a time on
                   each connection (a Lua script) and reads the 16 answers, in order.
  chain            the standard chain: key-auth + rate-limit (by consumer, local counters) +
                   headers + prometheus + access-log to a file. nginx: the same request through
                   its plain proxy (nginx has no equivalent), shown as `nginx (plain)`.
  chain-redis      the same chain with the rate-limit counters in Redis (a private
                   redis-server on a free port, pinned to the non-proxy CPUs). Skipped, with a
                   note, when redis-server is not installed.
  jwt              jwt-auth verifying an RS256 token (key pair made with the openssl CLI, token
                   signed with `openssl dgst -sha256 -sign`). nginx (Debian) cannot verify JWTs:
                   its row is the plain proxy of the same request, `nginx (plain)`.
  cache            proxy-cache hits (the upstream answers /cache with Cache-Control:
                   max-age=3600). nginx: proxy_cache with a proxy_cache_path in the temp dir
                   and the same key. A hit is checked on both before measuring.
  body1k, body100k proxy only, 1 KiB and 100 KiB responses.
  https            HTTPS downstream, keep-alive: wrk reuses its connections, so this is the
                   steady-state cost of TLS records. Same self-signed certificate for both
                   (RSA 2048 by default, `--tls-key p256` for ECDSA P-256).
  https-handshake  HTTPS with `Connection: close` on every request: one new TCP connection
                   and one FULL TLS handshake per request (wrk never resumes sessions).
  tls-resume       `openssl s_time -new` and `-reuse` (one connection at a time, GET /plain
                   over HTTP/1.0): connections/s with full handshakes (`tls-new` rows) and
                   with session resumption (`tls-resume` rows), in the req/s column.
  idle10k          10,000 (`--idle-connections`) idle keep-alive connections held open to
                   fresh instances of each proxy (each connection sent one GET /plain first):
                   RSS growth per connection (VmRSS), fds, and whether the proxy still serves
                   a new request and the held connections. RLIMIT_NOFILE is raised here (the
                   proxies inherit it); nginx gets worker_connections 2n.
  idle-tls         the same over HTTPS: `--idle-tls-connections` (default 2,000) connections,
                   each with a full TLS handshake and one GET /plain, held idle.
  reload10k        gatehouse only: a second instance with 10,000 routes (10 hosts x 1,000
                   paths, 1 in 100 with a {param}); `gatehouse -t` time, start time, and wrk
                   against one of the routes for `--reload-duration` s while 5 SIGHUP reloads
                   happen, next to the same run without reloads. Reload time from gatehouse's
                   log (`config reloaded (SIGHUP): N routes, in T ms`) and as seen by a client
                   polling the toggled route.

Examples:

    python3 benches/load/run.py --no-build --rounds 1 --duration 2 --scenarios plain --out /tmp/x.md
    python3 benches/load/run.py --rounds 5 --duration 10 --scenarios plain,chain,jwt,cache
"""
import argparse, base64, http.client, json, os, re, resource, shutil, signal, socket, ssl, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK = os.sysconf("SC_CLK_TCK")

ALL_SCENARIOS = ["plain", "pipeline", "chain", "chain-redis", "jwt", "cache", "body1k", "body100k",
                 "https", "https-handshake", "tls-resume", "idle10k", "idle-tls", "reload10k"]
WRK_SCENARIOS = ["plain", "pipeline", "chain", "chain-redis", "jwt", "cache", "body1k", "body100k", "https", "https-handshake"]
# Scenarios whose gatehouse work nginx cannot do: nginx's row is its plain proxy of the same request.
NGINX_PLAIN_ONLY = {"chain", "chain-redis", "jwt"}
WITH_DIRECT = {"plain", "pipeline", "body1k", "body100k"}
# Requests per wrk write in the `pipeline` scenario.
PIPELINE_DEPTH = 16
NAN = float("nan")

# nginx proxying as gatehouse does: the same Host and forwarded headers (docs/config.md,
# "What the upstream receives"); 64 KiB buffers, the size of Pingora's body reads (nginx's
# default 4-8 KiB buffers halve its 100 KiB throughput); no temp files (gatehouse streams).
# Used as the body of a `location` whose upstream block is named `up`.
NGINX_PROXY = """proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_buffer_size 64k; proxy_buffers 4 64k; proxy_busy_buffers_size 128k; proxy_max_temp_file_size 0;"""


def chain_plugins_yaml(access_log, store=""):
    """The standard chain's `plugins:` entries (YAML, indented for a route), logging to
    `access_log`; `store` is extra rate-limit options (`, store: redis, ...`)."""
    return f"""
      key-auth: {{}}
      rate-limit: {{ count: 100000000, period: 1m, key: consumer{store} }}
      headers: {{ request: {{ set: {{ x-gateway: gatehouse }} }}, response: {{ set: {{ x-served-by: gatehouse }} }} }}
      prometheus: {{}}
      access-log: {{ path: {access_log} }}"""


# ---------------------------------------------------------------------------------------------
# Small helpers


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20, proc=None, what="a process"):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what}: nothing listens on {port} after {timeout} s")


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = proc_stat(pid)
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK


def status_kib(pids, field):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                m = re.search(rf"{field}:\s+(\d+)", f.read())
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def peak_rss_kib(pids):
    return status_kib(pids, "VmHWM")


def rss_kib(pids):
    return status_kib(pids, "VmRSS")


def fd_count(pids):
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10).stdout.split()
    return [int(p) for p in out]


def nginx_workers(master, n, timeout=10):
    """The worker pids of an nginx master (they are forked after it binds its sockets)."""
    end = time.time() + timeout
    while time.time() < end:
        pids = children(master.pid)
        if len(pids) >= n:
            return pids
        if master.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"nginx (pid {master.pid}) has no {n} worker(s)")


def ensure(cmd, package):
    if shutil.which(cmd):
        return
    print(f"installing {package}", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, timeout=600)
    if not shutil.which(cmd):
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, timeout=600)


def cpu_list(spec):
    cpus = set()
    for part in spec.split(","):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    return cpus


def to_ms(value, unit):
    v = float(value)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000, "h": v * 3600000}[unit]


def parse_wrk(text):
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise RuntimeError(f"wrk printed no result:\n{text}")
    rps = float(m.group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m|h)\b", text, re.M)
        return to_ms(m.group(1), m.group(2)) if m else NAN

    mx = re.search(r"Latency\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m|h)\b", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "total": total, "p50": lat("50"), "p99": lat("99"),
            "max": to_ms(mx.group(1), mx.group(2)) if mx else NAN,
            "errors": int(errors.group(1)) if errors else 0, "socket": sock.group(1) if sock else ""}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fmt(v, spec):
    return "—" if v != v else format(v, spec)  # NaN -> dash


def http_get(port, path, headers=None, tls=False, timeout=5):
    """One request on a new connection; returns (status, headers dict (lower-case), body)."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        conn.close()


def tls_info(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return f"{s.version()} {s.cipher()[0]}"


def redis_cmd(port, *args):
    msg = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(msg.encode())
        return s.recv(65536).decode(errors="replace")


def read_response(sock, deadline):
    """Reads one HTTP/1.1 response with Content-Length from a blocking socket; returns its status."""
    return read_responses(sock, 1, deadline)[0]


def read_responses(sock, n, deadline):
    """Reads n HTTP/1.1 responses with Content-Length, which may arrive together; returns their statuses."""
    buf, statuses = b"", []
    while len(statuses) < n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end]
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            end = head_end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= end:
                statuses.append(int(head.split(b" ", 2)[1]))
                buf = buf[end:]
                continue
        if time.time() > deadline:
            raise TimeoutError(f"after {len(statuses)} responses")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(statuses)} responses")
        buf += chunk
    return statuses


# ---------------------------------------------------------------------------------------------
# The harness


class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="gh-bench-")
        os.chmod(self.tmp, 0o755)  # nginx workers run unprivileged and must read the bodies
        self.binary = args.binary or os.path.join(ROOT, "target", "release", "gatehouse")
        ncpu = os.cpu_count() or 2
        self.proxy_cpus = args.proxy_cpus
        used = cpu_list(args.proxy_cpus)
        self.other_cpus = ",".join(str(c) for c in range(ncpu) if c not in used) or args.proxy_cpus
        self.notes = []
        self.results = {}
        self.idle = {}
        self.reload = None
        self.tls_negotiated = {}
        self.redis_port = None

    def path(self, name):
        return os.path.join(self.tmp, name)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def run(self, cmd, timeout, cpus=None, **kw):
        if cpus:
            cmd = ["taskset", "-c", cpus] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)

    def spawn(self, cmd, cpus, name, env=None, stdout=None):
        """Starts a long-running process in its own process group, pinned to `cpus`."""
        log = open(self.path(f"{name}.log"), "w")
        p = subprocess.Popen(["taskset", "-c", cpus] + cmd, stdout=stdout or log, stderr=log,
                             env=env, start_new_session=True)
        log.close()
        p.name = name
        self.procs.append(p)
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # leftovers of the group (nginx workers)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if p in self.procs:
            self.procs.remove(p)

    def cleanup(self, failed):
        for p in list(reversed(self.procs)):
            self.stop(p)
        if failed:
            for name in sorted(os.listdir(self.tmp)):
                if name.endswith(".log") and name != "access.log":
                    try:
                        with open(self.path(name), errors="replace") as f:
                            tail = f.read()[-2000:]
                    except OSError:
                        continue
                    if tail.strip():
                        print(f"--- {name} (last lines)\n{tail}", file=sys.stderr)
        if self.args.keep_tmp:
            print(f"temp dir kept: {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def check_gatehouse(self, conf):
        t0 = time.perf_counter()
        r = self.run([self.binary, "-t", "-c", conf], timeout=120, cpus=self.proxy_cpus)
        took = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"gatehouse -t refused {conf}:\n{r.stderr}{r.stdout}")
        return took

    def check_nginx(self, conf):
        r = self.run(["nginx", "-t", "-p", self.tmp, "-c", conf], timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"nginx -t refused {conf}:\n{r.stderr}")

    # -- setup ----------------------------------------------------------------------------------

    def make_keys(self):
        ossl = lambda *a: self.run(["openssl", *a], timeout=60, check=True)
        # TLS certificate, shared by nginx and gatehouse.
        if self.args.tls_key == "p256":
            newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        else:
            newkey = ["-newkey", "rsa:2048"]
        ossl("req", "-x509", *newkey, "-nodes", "-keyout", self.path("tls.key"), "-out", self.path("tls.pem"),
             "-days", "30", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        # JWT RS256 key pair and one token.
        ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", self.path("jwt.key"))
        ossl("pkey", "-in", self.path("jwt.key"), "-pubout", "-out", self.path("jwt.pub.pem"))
        now = int(time.time())
        header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench-kid"}, separators=(",", ":")).encode())
        payload = b64url(json.dumps({"sub": "bench", "iat": now, "exp": now + 10 * 365 * 86400}, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.path("jwt.key")], input=signing_input,
                             capture_output=True, timeout=60, check=True).stdout
        self.jwt = f"{header}.{payload}.{b64url(sig)}"

    def setup(self, scenarios):
        a = self.args
        self.up_port, self.nginx_port, self.gh_port = free_port(), free_port(), free_port()
        self.nginx_tls, self.gh_tls = free_port(), free_port()
        sizes = {"plain": 20, "body1k": 1024, "body100k": 100 * 1024}
        for name, size in sizes.items():
            self.write(f"{name}.txt", ("x" * (size - 1)) + "\n")
        self.make_keys()
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

        self.redis_port = None
        if "chain-redis" in scenarios:
            if shutil.which("redis-server"):
                self.redis_port = free_port()
            else:
                msg = "chain-redis skipped: redis-server is not installed (Debian package `redis-server`)."
                print(msg, file=sys.stderr)
                self.notes.append(msg)
                scenarios.remove("chain-redis")

        upstream_conf = f"""
worker_processes 1; pid {self.tmp}/up.pid; error_log {self.tmp}/up-error.log;
worker_rlimit_nofile {nofile};
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{self.up_port} reuseport; root {self.tmp};
    location = /plain {{ try_files /plain.txt =404; }}
    location = /chain {{ try_files /plain.txt =404; }}
    location = /chain-redis {{ try_files /plain.txt =404; }}
    location = /jwt {{ try_files /plain.txt =404; }}
    location = /cache {{ try_files /plain.txt =404; add_header Cache-Control "max-age=3600"; }}
    location = /body1k {{ try_files /body1k.txt =404; }}
    location = /body100k {{ try_files /body100k.txt =404; }}
    location /r/ {{ try_files /plain.txt =404; }}
  }} }}
"""
        self.nginx_proxy = proxy = NGINX_PROXY
        nginx_conf = f"""
worker_processes {a.threads}; pid {self.tmp}/nginx.pid; error_log {self.tmp}/nginx-error.log;
worker_rlimit_nofile {nofile};
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000;
  upstream up {{ server 127.0.0.1:{self.up_port}; keepalive 64; }}
  proxy_cache_path {self.tmp}/nginx-cache levels=1:2 keys_zone=bench:10m max_size=64m inactive=1h use_temp_path=off;
  server {{
    listen 127.0.0.1:{self.nginx_port};
    listen 127.0.0.1:{self.nginx_tls} ssl;
    ssl_certificate {self.tmp}/tls.pem; ssl_certificate_key {self.tmp}/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;  # nginx 1.22's default lacks TLSv1.3; gatehouse (Pingora) offers both
    ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / {{ {proxy} }}
    location = /cache {{ {proxy}
      proxy_cache bench; proxy_cache_key $host$uri$is_args$args; proxy_cache_lock on;
      add_header X-Cache-Status $upstream_cache_status always; }}
  }} }}
"""
        chain_plugins = lambda store: chain_plugins_yaml(f"{self.tmp}/access.log", store)
        redis_route = ""
        if self.redis_port:
            redis_route = f"""
  - id: chain-redis
    paths: [/chain-redis]
    upstream: up
    plugins:{chain_plugins(f', store: redis, redis: {{ url: "redis://127.0.0.1:{self.redis_port}" }}')}
"""
        gh_conf = f"""
server: {{ threads: {a.threads}, work_stealing: false, pid_file: {self.tmp}/gh.pid, upgrade_sock: {self.tmp}/gh.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}
listeners:
  - {{ name: main, address: "127.0.0.1:{self.gh_port}" }}
  - name: tls
    address: "127.0.0.1:{self.gh_tls}"
    protocol: https
    tls: {{ certificates: [{{ cert: {self.tmp}/tls.pem, key: {self.tmp}/tls.key }}] }}
upstreams:
  - {{ id: up, nodes: [{{ address: "127.0.0.1:{self.up_port}" }}] }}
consumers:
  - id: bench
    credentials:
      key-auth: {{ key: bench-key }}
      jwt-auth: {{ key: bench-kid, algorithm: RS256, public_key: {self.tmp}/jwt.pub.pem }}
routes:
  - {{ id: plain, paths: [/plain, /body1k, /body100k], upstream: up }}
  - id: chain
    paths: [/chain]
    upstream: up
    plugins:{chain_plugins('')}
{redis_route}
  - id: jwt
    paths: [/jwt]
    upstream: up
    plugins:
      jwt-auth: {{}}
  - id: cache
    paths: [/cache]
    upstream: up
    plugins:
      proxy-cache: {{ memory: {{ max_size: 64MiB }} }}
"""
        up = self.write("up.conf", upstream_conf)
        ng = self.write("nginx.conf", nginx_conf)
        gh = self.write("gh.yaml", gh_conf)
        self.check_nginx(up)
        self.check_nginx(ng)
        self.check_gatehouse(gh)

        if self.redis_port:
            self.redis = self.spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "",
                                     "--appendonly", "no", "--dir", self.tmp], self.other_cpus, "redis")
            wait_port(self.redis_port, proc=self.redis, what="redis-server")
        self.upstream = self.spawn(["nginx", "-p", self.tmp, "-c", up, "-g", "daemon off;"], self.other_cpus, "upstream")
        wait_port(self.up_port, proc=self.upstream, what="upstream nginx")
        self.nginx = self.spawn(["nginx", "-p", self.tmp, "-c", ng, "-g", "daemon off;"], self.proxy_cpus, "nginx")
        wait_port(self.nginx_port, proc=self.nginx, what="nginx")
        wait_port(self.nginx_tls, proc=self.nginx, what="nginx (ssl)")
        self.gh = self.spawn([self.binary, "-c", gh, "--no-watch"], self.proxy_cpus, "gatehouse",
                             env={**os.environ, "RUST_LOG": "warn"})
        wait_port(self.gh_port, proc=self.gh, what="gatehouse")
        wait_port(self.gh_tls, proc=self.gh, what="gatehouse (https)")
        self.nginx_pids = nginx_workers(self.nginx, a.threads)  # the worker(s) do the work; the master idles
        self.gh_pids = [self.gh.pid]

    # -- checks before measuring ----------------------------------------------------------------

    def verify(self, scenarios):
        """Proves that each scenario exercises what it claims, before any number is taken."""
        def expect(port, path, status, headers=None, tls=False, what=""):
            got, hdrs, _ = http_get(port, path, headers, tls)
            if got != status:
                raise RuntimeError(f"{what}: GET {path} on port {port} answered {got}, expected {status}")
            return hdrs

        for s in scenarios:
            if s in ("chain", "chain-redis"):
                expect(self.gh_port, f"/{s}", 401, what=f"{s} without an API key")
                h = expect(self.gh_port, f"/{s}", 200, {"apikey": "bench-key"}, what=s)
                if h.get("x-served-by") != "gatehouse" or "ratelimit-remaining" not in h:
                    raise RuntimeError(f"{s}: the chain's headers / rate-limit headers are missing: {h}")
                if s == "chain-redis":
                    n = redis_cmd(self.redis_port, "DBSIZE")
                    if not re.match(r":[1-9]", n):
                        raise RuntimeError(f"chain-redis: Redis holds no key after a request ({n.strip()})")
            elif s == "jwt":
                expect(self.gh_port, "/jwt", 401, what="jwt without a token")
                expect(self.gh_port, "/jwt", 401, {"Authorization": "Bearer " + self.jwt[:-4] + "AAAA"}, what="jwt, bad signature")
                expect(self.gh_port, "/jwt", 200, {"Authorization": "Bearer " + self.jwt}, what="jwt")
            elif s == "cache":
                for name, port in (("nginx", self.nginx_port), ("gatehouse", self.gh_port)):
                    expect(port, "/cache", 200, what=f"cache ({name})")
                    h = expect(port, "/cache", 200, what=f"cache ({name})")
                    if h.get("x-cache-status", "").upper() != "HIT":
                        raise RuntimeError(f"cache: the second request to {name} was not a hit: X-Cache-Status {h.get('x-cache-status')}")
            elif s in ("https", "https-handshake", "tls-resume"):
                for name, port in (("nginx", self.nginx_tls), ("gatehouse", self.gh_tls)):
                    expect(port, "/plain", 200, tls=True, what=f"{s} ({name})")
                    self.tls_negotiated[name] = tls_info(port)
            elif s in ("plain", "body1k", "body100k"):
                for name, port in (("direct", self.up_port), ("nginx", self.nginx_port), ("gatehouse", self.gh_port)):
                    expect(port, f"/{s}", 200, what=f"{s} ({name})")
            elif s == "pipeline":
                for name, port in (("direct", self.up_port), ("nginx", self.nginx_port), ("gatehouse", self.gh_port)):
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: bench\r\n\r\n" * 3)
                        try:
                            got = read_responses(sock, 3, time.time() + 5)
                        except (OSError, TimeoutError) as e:
                            raise RuntimeError(f"pipeline ({name}): 3 pipelined requests: {e}")
                        if got != [200] * 3:
                            raise RuntimeError(f"pipeline ({name}): 3 pipelined requests answered {got}")

    # -- measurements ---------------------------------------------------------------------------

    def wrk(self, url, headers, duration, latency=True, script=None):
        cmd = ["wrk", "-t1", f"-c{self.args.connections}", f"-d{duration}s"] + (["--latency"] if latency else [])
        cmd += (["-s", script] if script else []) + [url]
        for h in headers:
            cmd += ["-H", h]
        return self.run(cmd, timeout=duration + 30, cpus=self.other_cpus)

    def measure_wrk(self, scenario, rnd):
        a = self.args
        path = "/plain" if scenario in ("https", "https-handshake", "pipeline") else f"/{scenario}"
        script = None
        if scenario == "pipeline":
            script = self.path("pipeline.lua")
            self.write("pipeline.lua",
                       "init = function(args)\n"
                       "  local r = {}\n"
                       f"  for i = 1, {PIPELINE_DEPTH} do r[i] = wrk.format(nil) end\n"
                       "  batch = table.concat(r)\n"
                       "end\n"
                       "request = function() return batch end\n")
        headers = []
        if scenario in ("chain", "chain-redis"):
            headers = ["apikey: bench-key"]
        elif scenario == "jwt":
            headers = ["Authorization: Bearer " + self.jwt]
        elif scenario == "https-handshake":
            headers = ["Connection: close"]
        tls = scenario.startswith("https")
        targets = []
        if scenario in WITH_DIRECT:
            targets.append(("direct", self.up_port, []))
        targets.append(("nginx", self.nginx_tls if tls else self.nginx_port, self.nginx_pids))
        targets.append(("gatehouse", self.gh_tls if tls else self.gh_port, self.gh_pids))
        for target, port, pids in targets:
            url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"
            self.wrk(url, headers, 1, latency=False, script=script)  # warm-up
            cpu0 = cpu_seconds(pids)
            out = self.wrk(url, headers, a.duration, script=script).stdout
            cpu = cpu_seconds(pids) - cpu0
            r = parse_wrk(out)
            if script:
                # wrk times a pipelined batch, not its requests, and its percentiles come out empty.
                r["p50"] = r["p99"] = NAN
            if r["errors"]:
                raise RuntimeError(f"{target} answered {r['errors']} non-2xx responses to {url}")
            r["cpu_per_m"] = cpu / r["total"] * 1e6 if r["total"] and pids else NAN
            r["rss_mib"] = peak_rss_kib(pids) / 1024 if pids else NAN
            self.results.setdefault((scenario, target), []).append(r)
            print(f"{scenario:15} round {rnd + 1} {target:9} {r['rps']:>10.0f} req/s  p50 {r['p50']:.3f} ms  "
                  f"p99 {r['p99']:.3f} ms  non-2xx {r['errors']} {r['socket']}", flush=True)

    def measure_s_time(self, rnd):
        for mode, key in (("-new", "tls-new"), ("-reuse", "tls-resume")):
            for target, port, pids in (("nginx", self.nginx_tls, self.nginx_pids), ("gatehouse", self.gh_tls, self.gh_pids)):
                cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode, "-time", str(self.args.duration), "-www", "/plain"]
                cpu0 = cpu_seconds(pids)
                t0 = time.perf_counter()
                r = self.run(cmd, timeout=self.args.duration + 30, cpus=self.other_cpus)
                wall = time.perf_counter() - t0
                cpu = cpu_seconds(pids) - cpu0
                m = re.search(r"(\d+) connections in [\d.]+s;", r.stdout)
                if r.returncode != 0 or not m:
                    raise RuntimeError(f"openssl s_time {mode} against {target} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
                conns = int(m.group(1))
                # s_time prints one character per connection: `r` when the session was reused.
                section = r.stdout.split("starting", 1)[-1] if mode == "-reuse" else r.stdout
                reused = sum(line.count("r") for line in re.findall(r"^[r*]+$", section, re.M))
                res = {"rps": conns / wall, "total": conns, "p50": NAN, "p99": NAN, "errors": 0, "socket": "",
                       "cpu_per_m": cpu / conns * 1e6 if conns else NAN, "rss_mib": peak_rss_kib(pids) / 1024,
                       "reused": reused if mode == "-reuse" else 0}
                self.results.setdefault((key, target), []).append(res)
                extra = f"  resumed {reused}/{conns}" if mode == "-reuse" else ""
                print(f"{key:15} round {rnd + 1} {target:9} {res['rps']:>10.0f} conn/s{extra}", flush=True)
                if mode == "-reuse" and reused < conns * 0.9:
                    self.notes.append(f"tls-resume: {target} resumed only {reused} of {conns} connections in round {rnd + 1}.")

    def start_idle_proxies(self, tls):
        """Fresh nginx and gatehouse instances for idle10k: a clean RSS baseline, and nginx with
        enough worker_connections (preallocated, so the main nginx keeps its 4096). nginx closes
        idle keep-alive connections when fewer than 1/16 of worker_connections are free, hence 2n.
        With `tls`, both listen for HTTPS with the shared certificate."""
        n = self.idle_count(tls)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile < n + 200:
            self.notes.append(f"idle10k: RLIMIT_NOFILE is {nofile}, fewer than {n} connections can be held.")
        ng_port, gh_port = free_port(), free_port()
        ng_tls = f"ssl_certificate {self.path('tls.pem')}; ssl_certificate_key {self.path('tls.key')};" if tls else ""
        gh_tls = (f", protocol: https, tls: {{ certificates: [{{ cert: {self.path('tls.pem')}, key: {self.path('tls.key')} }}] }}"
                  if tls else "")
        ng = self.write("idle-nginx.conf", f"""
worker_processes {self.args.threads}; pid {self.tmp}/idle-nginx.pid; error_log {self.tmp}/idle-nginx-error.log;
worker_rlimit_nofile {nofile};
events {{ worker_connections {max(2 * n, n + 200)}; }}
http {{ access_log off; keepalive_requests 100000; keepalive_timeout 300s;
  upstream up {{ server 127.0.0.1:{self.up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ng_port} backlog=4096{' ssl' if tls else ''};
    {ng_tls}
    location / {{ {self.nginx_proxy} }} }} }}
""")
        gh = self.write("gh-idle.yaml", f"""
server: {{ threads: {self.args.threads}, work_stealing: false, pid_file: {self.tmp}/gh-idle.pid, upgrade_sock: {self.tmp}/gh-idle.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}
listeners:
  - {{ name: main, address: "127.0.0.1:{gh_port}"{gh_tls} }}
upstreams:
  - {{ id: up, nodes: [{{ address: "127.0.0.1:{self.up_port}" }}] }}
routes:
  - {{ id: plain, paths: [/plain], upstream: up }}
""")
        self.check_nginx(ng)
        self.check_gatehouse(gh)
        ngp = self.spawn(["nginx", "-p", self.tmp, "-c", ng, "-g", "daemon off;"], self.proxy_cpus, "idle-nginx")
        wait_port(ng_port, proc=ngp, what="nginx (idle10k)")
        ghp = self.spawn([self.binary, "-c", gh, "--no-watch"], self.proxy_cpus, "gh-idle", env={**os.environ, "RUST_LOG": "warn"})
        wait_port(gh_port, proc=ghp, what="gatehouse (idle10k)")
        return [("nginx", ng_port, ngp, nginx_workers(ngp, self.args.threads)), ("gatehouse", gh_port, ghp, [ghp.pid])]

    def idle_count(self, tls):
        return self.args.idle_tls_connections if tls else self.args.idle_connections

    def measure_idle(self, tls):
        n = self.idle_count(tls)
        kind = "idle-tls" if tls else "idle10k"
        req = b"GET /plain HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def connect(port):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            return ctx.wrap_socket(s, server_hostname="localhost") if tls else s

        for target, port, proc, pids in self.start_idle_proxies(tls):
            for _ in range(20):
                http_get(port, "/plain", tls=tls)
            time.sleep(0.5)
            before, fds0 = rss_kib(pids), fd_count(pids)
            socks, err, status, new_ms, alive, sample = [], "", 0, NAN, 0, []
            deadline = time.time() + self.args.idle_timeout
            t0 = time.perf_counter()
            try:
                while len(socks) < n and time.time() < deadline:
                    batch = []
                    try:
                        for _ in range(min(100, n - len(socks))):
                            batch.append(connect(port))
                        for s in batch:
                            s.sendall(req)
                        for s in batch:
                            if read_response(s, deadline) != 200:
                                raise RuntimeError("non-200 answer")
                    except (OSError, RuntimeError) as e:
                        err = f"{type(e).__name__}: {e}"
                        for s in batch:
                            s.close()
                        break
                    socks.extend(batch)
                opened = time.perf_counter() - t0
                time.sleep(1.0)
                held, fds = rss_kib(pids), fd_count(pids)
                # A new request while they are held, and a sample of the held connections.
                t1 = time.perf_counter()
                try:
                    status = http_get(port, "/plain", tls=tls)[0]
                except OSError as e:
                    err = err or f"new request: {e}"
                new_ms = (time.perf_counter() - t1) * 1000
                sample = socks[:: max(1, len(socks) // 100)][:100]
                for s in sample:
                    try:
                        s.sendall(req)
                        alive += read_response(s, time.time() + 5) == 200
                    except (OSError, ValueError):
                        pass
            finally:
                for s in socks:
                    s.close()
            time.sleep(1.0)
            after = rss_kib(pids)
            self.stop(proc)
            res = {"n": len(socks), "before": before, "held": held, "after": after, "fds0": fds0, "fds": fds,
                   "open_s": opened, "new_status": status, "new_ms": new_ms, "alive": alive, "sample": len(sample),
                   "per_conn": (held - before) / len(socks) if socks else NAN, "err": err}
            self.idle.setdefault(kind, {})[target] = res
            print(f"{kind:15} {target:9} held {len(socks)} conns in {opened:.1f} s; RSS {before / 1024:.1f} -> "
                  f"{held / 1024:.1f} MiB ({res['per_conn']:.2f} KiB/conn); new request {status} in {new_ms:.1f} ms; "
                  f"{alive}/{len(sample)} held answered{'; ' + err if err else ''}", flush=True)
            if len(socks) < n:
                self.notes.append(f"{kind}: only {len(socks)} of {n} connections to {target} could be opened ({err or 'time limit'}).")

    def big_config(self, port, toggle):
        lines = [f"""server: {{ threads: {self.args.threads}, work_stealing: false, pid_file: {self.tmp}/gh10k.pid, upgrade_sock: {self.tmp}/gh10k.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}
listeners:
  - {{ name: main, address: "127.0.0.1:{port}" }}
upstreams:
  - {{ id: up, nodes: [{{ address: "127.0.0.1:{self.up_port}" }}] }}
routes:
  - {{ id: bench, paths: [/plain], upstream: up }}"""]
        for h in range(10):
            for i in range(1000):
                path = f"/r/{i:05d}/{{id}}" if i % 100 == 99 else f"/r/{i:05d}"
                if h == 0 and i == 0 and toggle:
                    path = "/r/00000-alt"
                lines.append(f'  - {{ id: r{h}-{i:05d}, hosts: [h{h}.bench.test], paths: ["{path}"], upstream: up }}')
        return "\n".join(lines) + "\n"

    def measure_reload(self):
        a = self.args
        port = free_port()
        conf = self.path("gh10k.yaml")
        self.write("gh10k.yaml", self.big_config(port, False))
        checks = [self.check_gatehouse(conf) for _ in range(3)]
        t0 = time.perf_counter()
        gh = self.spawn([self.binary, "-c", conf, "--no-watch"], self.proxy_cpus, "gh10k", env={**os.environ, "RUST_LOG": "info"})
        wait_port(port, timeout=120, proc=gh, what="gatehouse (10,000 routes)")
        start_s = time.perf_counter() - t0
        pids = [gh.pid]
        url = f"http://127.0.0.1:{port}/r/00500"
        headers = ["Host: h5.bench.test"]
        status, _, _ = http_get(port, "/r/00500", {"Host": "h5.bench.test"})
        if status != 200:
            raise RuntimeError(f"reload10k: GET /r/00500 (Host h5.bench.test) answered {status}")
        self.wrk(url, headers, 1, latency=False)  # warm-up
        dur = a.reload_duration
        base = parse_wrk(self.wrk(url, headers, dur).stdout)
        log = self.path("gh10k.log")
        # Newer binaries log `config reloaded (SIGHUP): N routes, in T ms`; older ones only
        # `config reloaded (SIGHUP)`: then only the client-observed time is reported.
        pattern = re.compile(r"config reloaded \(SIGHUP\)(?:: (\d+) routes, in ([\d.]+) ms)?")

        def reloads():
            with open(log, errors="replace") as f:
                return pattern.findall(f.read())

        def toggled_route_status(conn):
            conn.request("GET", "/r/00000-alt", headers={"Host": "h0.bench.test"})
            r = conn.getresponse()
            r.read()
            return r.status

        n = a.reloads
        spacing = min(1.5, dur / (n + 1))
        cmd = ["taskset", "-c", self.other_cpus, "wrk", "-t1", f"-c{a.connections}", f"-d{dur}s", "--latency", url, "-H", headers[0]]
        w = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        w.name = "wrk"
        self.procs.append(w)
        times, seen_ms, routes_seen = [], [], set()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            t_start = time.time()
            for i in range(n):
                time.sleep(max(0.0, t_start + spacing * (i + 1) - time.time()))
                logged = len(reloads())
                toggle = i % 2 == 0
                tmpf = conf + ".new"
                with open(tmpf, "w") as f:
                    f.write(self.big_config(port, toggle))
                os.replace(tmpf, conf)
                t0 = time.perf_counter()
                os.kill(gh.pid, signal.SIGHUP)
                # Client-observed: SIGHUP until the toggled route answers as the new config says
                # (polled every 5 ms on one keep-alive connection).
                end = time.time() + 20
                while True:
                    try:
                        st = toggled_route_status(conn)
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                        st = None
                    if st == (200 if toggle else 404):
                        break
                    if time.time() > end or gh.poll() is not None:
                        raise RuntimeError(f"reload10k: reload {i + 1} not applied within 20 s (last answer {st})")
                    time.sleep(0.005)
                seen_ms.append((time.perf_counter() - t0) * 1000)
                while len(reloads()) <= logged:
                    if time.time() > end:
                        raise RuntimeError("reload10k: no `config reloaded (SIGHUP)` log line within 20 s")
                    time.sleep(0.02)
                r, ms = reloads()[-1]
                if ms:
                    times.append(float(ms))
                    routes_seen.add(int(r))
            out, _ = w.communicate(timeout=dur + 30)
        finally:
            conn.close()
            self.stop(w)
        during = parse_wrk(out)
        for r in (base, during):
            if r["errors"]:
                raise RuntimeError(f"reload10k: {r['errors']} non-2xx responses")
        self.reload = {"check_s": statistics.median(checks), "start_s": start_s, "times": times, "seen_ms": seen_ms,
                       "routes": sorted(routes_seen), "base": base, "during": during, "rss_mib": rss_kib(pids) / 1024,
                       "hwm_mib": peak_rss_kib(pids) / 1024, "duration": dur, "spacing": spacing}
        self.stop(gh)
        logged = f"logged {', '.join(f'{t:.0f}' for t in times)} ms, " if times else "(no reload time in the log), "
        print(f"reload10k       check {self.reload['check_s'] * 1000:.0f} ms, start {start_s * 1000:.0f} ms, reloads "
              f"{logged}seen after {', '.join(f'{t:.0f}' for t in seen_ms)} ms; req/s {base['rps']:.0f} -> {during['rps']:.0f}, "
              f"p99 {base['p99']:.2f} -> {during['p99']:.2f} ms, max {base['max']:.2f} -> {during['max']:.2f} ms", flush=True)

    # -- report ---------------------------------------------------------------------------------

    def report(self, scenarios, command):
        a = self.args
        try:
            model = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].splitlines()[0].strip()
        except (OSError, IndexError):
            model = "unknown CPU"
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        lines = [
            f"Machine: {os.cpu_count()} CPUs ({model}); proxy on CPUs {self.proxy_cpus}, wrk, the upstream"
            f"{', Redis' if self.redis_port else ''} and this script on {self.other_cpus}.",
            f"Command: `{command}`; wrk -t1 -c{a.connections}; medians of {a.rounds} rounds.",
            "",
        ]
        keys = [s for s in scenarios if s in WRK_SCENARIOS]
        if "tls-resume" in scenarios:
            keys += ["tls-new", "tls-resume"]
        if keys:
            lines += ["| scenario | target | req/s | p50 ms | p99 ms | CPU s / 1M req | peak RSS MiB | req/s vs nginx | p99 vs nginx |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        fallback = False
        for scenario in keys:
            base = self.results.get((scenario, "nginx"))
            mark = ""
            if not base:
                base, mark = self.results.get(("plain", "nginx")), " †"
                fallback = fallback or bool(base)
            for target in ["direct", "nginx", "gatehouse"]:
                rs = self.results.get((scenario, target))
                if not rs:
                    continue
                label = "nginx (plain)" if target == "nginx" and scenario in NGINX_PLAIN_ONLY else target
                ratio = med(rs, "rps") / med(base, "rps") if base else NAN
                p99r = med(rs, "p99") / med(base, "p99") if base and med(base, "p99") > 0 else NAN
                lines.append(f"| {scenario} | {label} | {med(rs, 'rps'):.0f} | {fmt(med(rs, 'p50'), '.3f')} | {fmt(med(rs, 'p99'), '.3f')} | "
                             f"{fmt(med(rs, 'cpu_per_m'), '.1f')} | {fmt(med(rs, 'rss_mib'), '.1f')} | {fmt(ratio, '.2f')}{mark} | {fmt(p99r, '.2f')}{mark} |")
        notes = []
        if keys:
            notes.append("nginx: 1 worker per gatehouse thread, upstream keepalive 64, the same Host and X-Forwarded-* / "
                         "X-Real-IP headers as gatehouse sends, `proxy_buffers 4 64k` (Pingora reads bodies in 64 KiB), "
                         "no proxy temp files. Peak RSS: nginx's worker process(es), gatehouse's process; both have the "
                         "TLS certificate and a cache zone configured.")
        if "pipeline" in keys:
            notes.append(f"`pipeline`: wrk sends {PIPELINE_DEPTH} requests per write on each connection; it does not "
                         "time pipelined requests one by one, so the latency columns are empty.")
        if any(s in NGINX_PLAIN_ONLY for s in keys):
            notes.append("`nginx (plain)`: nginx (Debian package) has no equivalent of this gatehouse feature (key-auth, "
                         "rate-limit, JWT verification); its row is nginx's plain proxy of the same request, and the "
                         "ratios compare gatehouse doing the work with nginx not doing it.")
        if fallback:
            notes.append("†: the scenario has no nginx row; its ratios are against the `plain` scenario's nginx row.")
        if "cache" in keys:
            notes.append("`cache`: every measured request is a hit (checked before measuring); nginx serves hits from "
                         "its proxy_cache files in the temp dir (page cache), gatehouse from its memory store.")
        if "https" in keys or "https-handshake" in keys or "tls-resume" in scenarios:
            tls = "; ".join(f"{k}: {v}" for k, v in self.tls_negotiated.items())
            notes.append(f"HTTPS: the same self-signed {'ECDSA P-256' if a.tls_key == 'p256' else 'RSA 2048'} certificate "
                         f"on both; negotiated with a default OpenSSL client: {tls}. `https`: wrk keeps its connections, "
                         "so this is the cost of TLS records. `https-handshake`: `Connection: close` on every request, "
                         "so every request is a new TCP connection and a full TLS handshake (wrk does not resume sessions).")
        if "tls-resume" in scenarios:
            reused = sum(r.get("reused", 0) for r in self.results.get(("tls-resume", "nginx"), []) + self.results.get(("tls-resume", "gatehouse"), []))
            notes.append("`tls-new` / `tls-resume`: `openssl s_time -new` / `-reuse`, one connection at a time, each a "
                         "GET /plain over HTTP/1.0; the req/s column is **connections/s** (wall clock) and the CPU column "
                         f"CPU s per 1M connections; no latency percentiles. Resumed connections counted from s_time's "
                         f"output: {reused} over all `tls-resume` runs.")
        if "chain-redis" in keys:
            notes.append("`chain-redis`: the `chain` route with `rate-limit` `store: redis` (every request counted in a "
                         "private redis-server, pinned with wrk and the upstream).")
        notes += self.notes
        if notes:
            lines += [""] + [f"- {n}" for n in notes]

        for kind, idle in self.idle.items():
            tls = kind == "idle-tls"
            lines += ["", f"### Idle keep-alive {'HTTPS ' if tls else ''}connections ({self.idle_count(tls):,} held)", "",
                      "Fresh instances of both proxies (gatehouse: one `/plain` route, no plugins; nginx: `worker_connections` "
                      "sized for the test" + ("; both with an HTTPS listener and the shared certificate" if tls else "") +
                      "). Each connection " + ("made a full TLS handshake, " if tls else "") +
                      "sent one `GET /plain` (keep-alive) and was then held idle. RSS is "
                      "VmRSS of the proxy (nginx: its worker), before opening (after 20 requests), 1 s after the last "
                      "connection was opened, and 1 s after all were closed. `held ones answering`: a second request on a "
                      "sample of the held connections, after the new request.", "",
                      "| target | held | open time s | RSS before MiB | RSS held MiB | KiB / conn | proxy fds | new request | held ones answering | RSS after close MiB |",
                      "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
            for target in ("nginx", "gatehouse"):
                r = idle.get(target)
                if r:
                    lines.append(f"| {target} | {r['n']} | {r['open_s']:.1f} | {r['before'] / 1024:.1f} | {r['held'] / 1024:.1f} | "
                                 f"{fmt(r['per_conn'], '.2f')} | {r['fds']} | {r['new_status']} in {r['new_ms']:.1f} ms | "
                                 f"{r['alive']}/{r['sample']} | {r['after'] / 1024:.1f} |")
            if "nginx" in idle and "gatehouse" in idle and idle["nginx"]["per_conn"] > 0:
                lines.append("")
                lines.append(f"gatehouse / nginx, KiB per idle {'HTTPS ' if tls else ''}connection: "
                             f"{idle['gatehouse']['per_conn'] / idle['nginx']['per_conn']:.2f}")

        if self.reload:
            r = self.reload
            b, d, t, seen = r["base"], r["during"], r["times"], r["seen_ms"]
            routes = ", ".join(map(str, r["routes"])) or "10,001"
            lines += ["", "### Reload with 10,000 routes", "",
                      f"A second gatehouse with {routes} routes (10 hosts x 1,000 literal paths, 1 in 100 with a "
                      f"`{{param}}`, plus one `/plain` route), 1 thread on CPU {self.proxy_cpus}. wrk against `/r/00500` "
                      f"with `Host: h5.bench.test` for {r['duration']} s, once without reloads and once with {len(seen)} "
                      f"SIGHUP reloads spaced {r['spacing']:.1f} s apart (the file rewritten each time, one route's path "
                      "toggled). Reload time: gatehouse's log line (`config reloaded (SIGHUP): N routes, in T ms`: read, "
                      "parse, compile, swap); seen after: from the SIGHUP until a client polling the toggled route every "
                      "5 ms gets the new config's answer.", "",
                      f"- `gatehouse -t` (check time, wall time of the process, median of 3): {r['check_s'] * 1000:.0f} ms",
                      f"- start until listening: {r['start_s'] * 1000:.0f} ms"]
            if t:
                lines.append(f"- reload time (log): median {statistics.median(t):.1f} ms, max {max(t):.1f} ms ({', '.join(f'{x:.1f}' for x in t)})")
            else:
                lines.append("- reload time (log): not reported: this binary's log line has no duration")
            lines += [f"- SIGHUP until the new config serves (client): median {statistics.median(seen):.1f} ms, max {max(seen):.1f} ms "
                      f"({', '.join(f'{x:.1f}' for x in seen)})",
                      f"- RSS with 10,000 routes: {r['rss_mib']:.1f} MiB (peak {r['hwm_mib']:.1f} MiB)", "",
                      "| run | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors |",
                      "|---|---:|---:|---:|---:|---:|---|"]
            for name, x in (("no reloads", b), (f"{len(seen)} reloads", d)):
                lines.append(f"| {name} | {x['rps']:.0f} | {x['p50']:.3f} | {x['p99']:.3f} | {x['max']:.3f} | {x['errors']} | {x['socket'] or '—'} |")
        return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured run (wrk, s_time)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--scenarios", default="all", help="comma-separated: " + ",".join(ALL_SCENARIOS) + " (or all)")
    ap.add_argument("--proxy-cpus", default="0", help="CPUs for the proxy under test (taskset list)")
    ap.add_argument("--threads", type=int, default=1, help="gatehouse threads and nginx workers")
    ap.add_argument("--tls-key", choices=["rsa2048", "p256"], default="rsa2048", help="key type of the HTTPS certificate")
    ap.add_argument("--idle-connections", type=int, default=10000)
    ap.add_argument("--idle-tls-connections", type=int, default=2000)
    ap.add_argument("--idle-timeout", type=int, default=60, help="seconds allowed to open the idle connections, per proxy")
    ap.add_argument("--reload-duration", type=int, default=10, help="seconds of each wrk run in reload10k")
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "load", "results.md"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--binary", help="the gatehouse binary to measure (e.g. a copy of an earlier build); implies --no-build")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs) for debugging")
    args = ap.parse_args()

    asked = ALL_SCENARIOS if args.scenarios == "all" else [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in asked if s not in ALL_SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ALL_SCENARIOS)}")
    scenarios = [s for s in ALL_SCENARIOS if s in asked]

    ensure("wrk", "wrk")
    ensure("nginx", "nginx-light")
    ensure("openssl", "openssl")
    if not args.no_build and not args.binary:
        subprocess.run(["cargo", "build", "--release", "--bin", "gatehouse"], cwd=ROOT, check=True)

    # Enough descriptors for the idle connections (the client here, and gatehouse and nginx,
    # which inherit the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.idle_connections * 2 + 1000, 4096)
    for limit in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            break
        except (ValueError, OSError):
            continue

    bench = Bench(args)
    try:
        os.sched_setaffinity(0, cpu_list(bench.other_cpus))  # this script stays off the proxy's CPUs
    except OSError:
        pass
    # SIGTERM/SIGHUP to the harness: still clean up.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, f: sys.exit(128 + n))
    command = ("python3 benches/load/run.py" + (" --no-build" if args.no_build else "") +
               f" --rounds {args.rounds} --duration {args.duration} --connections {args.connections}"
               f" --threads {args.threads} --proxy-cpus {args.proxy_cpus} --scenarios {','.join(scenarios)}")
    for opt in ("tls_key", "idle_connections", "idle_tls_connections", "idle_timeout", "reload_duration", "reloads"):
        if getattr(args, opt) != ap.get_default(opt):
            command += f" --{opt.replace('_', '-')} {getattr(args, opt)}"
    if args.binary:
        command += f" --binary {args.binary}"
    failed = True
    try:
        bench.setup(scenarios)
        bench.verify(scenarios)
        for rnd in range(args.rounds):
            for scenario in scenarios:
                if scenario in WRK_SCENARIOS:
                    bench.measure_wrk(scenario, rnd)
                elif scenario == "tls-resume":
                    bench.measure_s_time(rnd)
        if "idle10k" in scenarios:
            bench.measure_idle(tls=False)
        if "idle-tls" in scenarios:
            bench.measure_idle(tls=True)
        if "reload10k" in scenarios:
            bench.measure_reload()
        failed = False
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
    finally:
        bench.cleanup(failed)
    if failed:
        sys.exit(1)

    table = bench.report(scenarios, command)
    print("\n" + table)
    with open(args.out, "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
