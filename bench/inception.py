#!/usr/bin/env python3
"""rbuild against Docker BuildKit, Docker's classic builder and buildah on the Inception stack.

    python3 bench/inception.py [--quick] [--scenarios cold,noop,...] [--tools rbuild,buildkit,...]

Every tool runs on this machine in the same run, from the same `debian:bookworm` base, with
apt going through one apt-cacher-ng, and each scenario is timed for every tool in turn, so
the ratios compare like with like. Writes bench/results/<date>.{md,json,png}; a full run (not
--quick) also refreshes the benchmark section at the end of the repository's README.

Nothing outside the bench dir (default /var/tmp/rbuild-bench) is touched: rbuild, dockerd,
buildah, apt-cacher-ng and docker-registry each keep their state under it, and the daemons the
harness starts are stopped by PID when it ends. See bench/README.md.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Debian's python3 has python3-matplotlib and python3-yaml (a pyenv python may not).
if Path("/usr/bin/python3").exists() and os.path.realpath(sys.executable) != os.path.realpath(
    "/usr/bin/python3"
):
    os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])

import yaml  # noqa: E402  (python3-yaml, a dependency of docker-compose)

# ---------------------------------------------------------------------------------------------
# What the scenarios edit. Paths are relative to the nginx build context
# (srcs/requirements/nginx). If the Dockerfiles are restructured, change them here.
#   config: a file COPYed after the apt step (one byte is appended)
#   early:  a file COPYed before the apt step (one byte is appended; the apt layer is rebuilt);
#           None = the first file the Dockerfile COPYs before its apt step, if there is one
#   touch:  a context file whose mtime changes, not its content
EDITS = {"config": "conf/nginx.conf", "early": None, "touch": "conf/nginx.conf"}

TOOLS = ["rbuild", "buildkit", "buildkit-seq", "classic", "buildah"]
# BuildKit driven one image after another: how the anchors were measured, and what
# docker-compose 1.29's `build` does. It shares BuildKit's dockerd and cache, so it only runs
# where that cannot help it: the stack's cold build (cache emptied first) and no-op rebuild
# (an edit rebuilt by "buildkit" would be a cache hit for it).
SEQUENTIAL = {"buildkit-seq": "buildkit"}  # tool -> the tool whose engine and commands it uses
SEQ_SCENARIOS = {("cold", "stack"), ("noop", "stack")}


def engine(tool):
    return SEQUENTIAL.get(tool, tool)
SCENARIOS = ["cold", "noop", "config", "early", "touch", "push", "export"]
SCOPES = ["stack", "nginx"]
REPS = {"cold": 3, "push-cold": 3}  # every other scenario: 5 runs
WARM_REPS = 5
BASE = "debian:bookworm"
BASE_TAR = Path("/var/cache/rbuild-tests/bookworm-minbase.tar")
PROXY = "http://127.0.0.1:3142"
DOCKER = "/usr/bin/docker"  # Debian's docker.io client: it has BuildKit built in, no buildx
BUILDAH_ISOLATION = "chroot"  # what works as root here without configuring user namespaces
APT_PACKAGES = ["docker.io", "buildah", "apt-cacher-ng", "docker-registry", "python3-matplotlib", "pigz", "mmdebstrap"]
TIMEOUT = 1200  # seconds, per build or push

REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("RBUILD_BENCH_DIR", "/var/tmp/rbuild-bench"))
TOOL_STATE = ["rbuild", "docker", "docker-exec", "docker-config", "buildah", "registry", "srcs", "logs"]
LABELS = {
    "rbuild": "rbuild",
    "buildkit": "BuildKit",
    "buildkit-seq": "BuildKit, one image after another",
    "classic": "classic builder",
    "buildah": "buildah",
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, check=True, **kw):
    """Runs a command (untimed set-up), returning its stdout."""
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def umount_under(top):
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        point = line.split()[1]
        if point.startswith(str(top) + "/"):
            subprocess.run(["umount", "-l", point])


def cpu_busy():
    """Seconds of CPU the whole machine spent busy (all cores, any process) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- daemons: started here, stopped by PID ---------------------------------------------------


class Daemon:
    def __init__(self, name, cmd, ready, env=None):
        self.name = name
        self.logfile = WORK / "logs" / f"{name}.log"
        self.proc = subprocess.Popen(
            cmd,
            stdout=open(self.logfile, "ab"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.time() + 60
        while not ready():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start; see {self.logfile}")
            time.sleep(0.2)
        log(f"{name} started (pid {self.proc.pid})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        log(f"{self.name} stopped (pid {self.proc.pid})")


class Env:
    """The tools' shared set-up: daemons, base image, the copy of srcs/, the registry."""

    def __init__(self, args):
        self.args = args
        self.rbuild = args.rbuild
        self.daemons = []
        self.reg_port = free_port()
        self.registry = None

    # environment of each tool's commands
    def tool_env(self, tool):
        env = dict(os.environ)
        env["RBUILD_ROOT"] = str(WORK / "rbuild")
        env["DOCKER_HOST"] = f"unix://{WORK / 'docker.sock'}"
        env["DOCKER_CONFIG"] = str(WORK / "docker-config")
        env["DOCKER_BUILDKIT"] = "0" if tool == "classic" else "1"
        return env

    def buildah(self, *args):
        return [
            "buildah",
            "--root", str(WORK / "buildah/root"),
            "--runroot", str(WORK / "buildah/runroot"),
            "--storage-driver", "overlay",
            *args,
        ]

    def start(self):
        pidfile = WORK / "docker.pid"
        if pidfile.exists() and Path(f"/proc/{pidfile.read_text().strip()}").exists():
            raise RuntimeError(f"a dockerd of an earlier run still runs (pid in {pidfile}); stop it first")
        self.remove_state(TOOL_STATE)
        for d in TOOL_STATE:
            (WORK / d).mkdir(parents=True, exist_ok=True)
        (WORK / "docker-config/config.json").write_text("{}\n")  # docker's, and buildah's authfile
        if PROXY:
            self.start_apt_cache()
        self.start_dockerd()
        self.restart_registry(wipe=True)
        self.import_base()
        self.copy_srcs()

    def remove_state(self, dirs):
        log(f"removing {', '.join(dirs)} under {WORK}")
        umount_under(WORK)
        run(["rm", "-rf", "--one-file-system", *[str(WORK / d) for d in dirs]])

    def stop(self):
        for d in reversed(self.daemons):
            d.stop()
        self.daemons.clear()
        umount_under(WORK / "buildah")  # overlay mounts buildah may have left

    def start_apt_cache(self):
        if port_open(3142):
            raise RuntimeError("127.0.0.1:3142 is taken; the harness runs its own apt-cacher-ng")
        for d in ["acng/cache", "acng/log", "acng/run"]:
            (WORK / d).mkdir(parents=True, exist_ok=True)
        # Debian's config, except that deb.debian.org stays the backend (the package's default
        # backend, ftp.debian.org, may not resolve where only deb.debian.org is reachable).
        conf = WORK / "acng/conf"
        shutil.rmtree(conf, ignore_errors=True)
        shutil.copytree("/etc/apt-cacher-ng", conf)
        (conf / "backends_debian").write_text("http://deb.debian.org/debian/\n")
        cmd = [
            "/usr/sbin/apt-cacher-ng", "-c", str(conf), "ForeGround=1",
            "Port=3142", "BindAddress=127.0.0.1", f"CacheDir={WORK}/acng/cache",
            f"LogDir={WORK}/acng/log", f"PidFile={WORK}/acng/run/pid",
            f"SocketPath={WORK}/acng/run/socket",
            # Index files are fetched once and then served from the cache for the whole run:
            # apt-cacher-ng 3.7 fails concurrent refreshes of one index file ("Failure to move
            # file out of the way"), which left concurrent stack builds waiting for ever.
            "FreshIndexMaxAge=86400",
        ]
        self.daemons.append(Daemon("apt-cacher-ng", cmd, lambda: port_open(3142)))

    def start_dockerd(self):
        sock = WORK / "docker.sock"
        cmd = [
            "dockerd", "--data-root", str(WORK / "docker"), "--exec-root", str(WORK / "docker-exec"),
            "--host", f"unix://{sock}", "--pidfile", str(WORK / "docker.pid"),
            "--bridge=none", "--iptables=false", "--ip-masq=false", "--log-level=warn",
            # its own namespaces, should it find a system containerd to share
            "--containerd-namespace", "rbuild-bench", "--containerd-plugins-namespace", "rbuild-bench-plugins",
        ]
        env = self.tool_env("buildkit")
        ready = lambda: sock.exists() and subprocess.run(  # noqa: E731
            [DOCKER, "version"], capture_output=True, env=env
        ).returncode == 0
        self.daemons.append(Daemon("dockerd", cmd, ready))

    def restart_registry(self, wipe):
        if self.registry:
            self.registry.stop()
            self.daemons.remove(self.registry)
        store = WORK / "registry/storage"
        if wipe:
            shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True, exist_ok=True)
        config = WORK / "registry/config.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "log": {"level": "info"},
                    "storage": {"filesystem": {"rootdirectory": str(store)}},
                    "http": {"addr": f"127.0.0.1:{self.reg_port}"},
                }
            )
        )
        cmd = ["/usr/bin/docker-registry", "serve", str(config)]
        self.registry = Daemon("docker-registry", cmd, lambda: port_open(self.reg_port))
        self.daemons.append(self.registry)

    def import_base(self):
        """One debian:bookworm (mmdebstrap minbase) for every tool."""
        env = self.tool_env("rbuild")
        if BASE_TAR.exists():
            with open(BASE_TAR, "rb") as f:
                run([self.rbuild, "import", "-", BASE], stdin=f, env=env)
        else:
            run(["bash", "-o", "pipefail", "-c",
                 f"mmdebstrap --variant=minbase --quiet bookworm - | {self.rbuild} import - {BASE}"],
                env=env)
        archive = WORK / "base.tar"
        run([self.rbuild, "save", BASE, "-o", str(archive)], env=env)
        run([DOCKER, "load", "-i", str(archive)], env=env)
        self.buildah_base()
        log(f"{BASE} imported into rbuild, docker and buildah")

    def buildah_base(self):
        run(self.buildah("pull", "--quiet", f"docker-archive:{WORK / 'base.tar'}"))

    def copy_srcs(self):
        """A copy of srcs/ that the scenarios edit; compose names images for our registry."""
        dst = WORK / "srcs"
        shutil.rmtree(dst)
        shutil.copytree(REPO / "srcs", dst, symlinks=True)
        compose = yaml.safe_load((dst / "docker-compose.yml").read_text())
        self.services = {}
        for name, svc in compose["services"].items():
            build = svc.get("build")
            if not build:
                continue
            ctx = dst / build["context"] if isinstance(build, dict) else dst / build
            dockerfile = ctx / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            self.services[name] = (ctx, dockerfile)
            svc["image"] = self.tag("rbuild", name)
            if isinstance(build, dict) and PROXY:
                build.setdefault("args", {})
                if isinstance(build["args"], dict):
                    build["args"]["http_proxy"] = PROXY
                else:
                    build["args"].append(f"http_proxy={PROXY}")
        (dst / "docker-compose.yml").write_text(yaml.safe_dump(compose, sort_keys=False))
        self.compose = dst / "docker-compose.yml"

    def tag(self, tool, service):
        return f"127.0.0.1:{self.reg_port}/{tool}/{service}:1.0"

    def blobs(self):
        d = WORK / "rbuild/blobs/sha256"
        return len(os.listdir(d)) if d.exists() else 0


# --- rbuild features (bake, push land in parallel branches) ----------------------------------


def has_command(rbuild, name):
    """`rbuild NAME --help` is the command's help if it exists; else, NAME is taken for the
    build context of the default command and the top-level help comes back (exit 0 too)."""
    out = subprocess.run([rbuild, name, "--help"], capture_output=True, text=True)
    text = out.stdout + out.stderr
    return out.returncode == 0 and re.search(rf"^Usage: rbuild {name}\b", text, re.M) is not None, text


# --- Dockerfile inspection ------------------------------------------------------------------


def instructions(dockerfile):
    """(KEYWORD, text) for each instruction, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in Path(dockerfile).read_text().splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        cur += " " + s.rstrip("\\").strip()
        if not s.endswith("\\"):
            kw, _, rest = cur.strip().partition(" ")
            out.append((kw.upper(), rest.strip()))
            cur = ""
    return out


def copy_sources(text):
    words = [w for w in text.split() if not w.startswith("--")]
    if text.lstrip().startswith("["):
        words = json.loads(text[text.index("[") :])
    return words[:-1]


def apt_index(instrs):
    return next((i for i, (kw, t) in enumerate(instrs) if kw == "RUN" and "apt-get" in t), None)


def copied_at(instrs, path):
    """Index of the first COPY/ADD that copies `path` (a file or a directory holding it)."""
    for i, (kw, text) in enumerate(instrs):
        if kw in ("COPY", "ADD") and "--from" not in text:
            for src in copy_sources(text):
                src = src.rstrip("/")
                if src in (".", path) or path.startswith(src + "/"):
                    return i
    return None


def edit_target(env, scenario):
    """(file, RUN steps expected to rerun) or (None, why the scenario does not apply)."""
    ctx, dockerfile = env.services["nginx"]
    instrs = instructions(dockerfile)
    apt = apt_index(instrs)
    path = EDITS[scenario]
    if scenario == "early" and path is None:
        before = [s for kw, t in instrs[: apt or 0] if kw in ("COPY", "ADD") for s in copy_sources(t)]
        files = [s for s in before if (ctx / s).is_file()]
        if not files:
            return None, f"{dockerfile.relative_to(WORK)} COPYs no file before its apt step"
        path = files[0]
    if not (ctx / path).is_file():
        return None, f"{path} is not a file of the nginx context"
    at = copied_at(instrs, path)
    if at is None:
        return None, f"{path} is not COPYed by the nginx Dockerfile"
    if scenario == "early" and (apt is None or at > apt):
        return None, f"{path} is COPYed after the apt step"
    if scenario == "touch":
        return ctx / path, 0
    return ctx / path, sum(1 for kw, _ in instrs[at:] if kw == "RUN")


def run_count(dockerfiles):
    return sum(1 for f in dockerfiles for kw, _ in instructions(f) if kw == "RUN")


# --- the tools ------------------------------------------------------------------------------


class Tools:
    """The one place where build, push and cache-clearing command lines are written."""

    def __init__(self, env, bake, push):
        self.env = env
        self.bake = bake
        self.push_cmd = push

    def build_cmds(self, tool, services):
        env = self.env
        if tool == "rbuild" and self.bake and len(services) > 1:
            return [[env.rbuild, "bake", "-f", str(env.compose), *self.bake]]
        cmds = []
        for s in services:
            ctx, dockerfile = env.services[s]
            tag, proxy = env.tag(tool, s), f"http_proxy={PROXY}"
            if tool == "rbuild":
                cmd = [env.rbuild, "build", "--progress", "plain"]
            elif engine(tool) == "buildkit":
                cmd = [DOCKER, "build", "--progress", "plain", "--network", "host"]
            elif tool == "classic":
                cmd = [DOCKER, "build", "--network", "host"]
            else:
                cmd = env.buildah("build", "--layers", "--isolation", BUILDAH_ISOLATION, "--network", "host")
            cmds.append([*cmd, "-t", tag, *(["--build-arg", proxy] if PROXY else []), "-f", str(dockerfile), str(ctx)])
        return cmds

    def push_cmds(self, tool, services):
        env = self.env
        cmds = []
        for s in services:
            tag = env.tag(tool, s)
            if tool == "rbuild":
                cmds.append([env.rbuild, "push", tag])
            elif tool in ("buildkit", "classic"):
                cmds.append([DOCKER, "push", tag])
            else:
                cmds.append(env.buildah("push", "--tls-verify=false", tag))
        return cmds

    def clear(self, tool, services):
        """Empties the tool's build cache and removes its images; the base image stays."""
        env, e = self.env, self.env.tool_env(tool)
        tags = [env.tag(tool, s) for s in services]
        if tool == "rbuild":
            for t in tags:
                run([env.rbuild, "rmi", t], check=False, env=e)
            run([env.rbuild, "prune", "--all"], env=e)
        elif engine(tool) in ("buildkit", "classic"):
            run([DOCKER, "rmi", "-f", *tags], check=False, env=e)
            # the classic builder's cache is its intermediate images: drop every dangling one
            run([DOCKER, "image", "prune", "-f"], env=e)
            if engine(tool) == "buildkit":
                run([DOCKER, "builder", "prune", "-af"], env=e)
        else:
            # --layers keeps intermediate images; remove them all, then put the base back
            run(env.buildah("rmi", "--all", "--force"), check=False)
            env.buildah_base()


def count_runs(tool, text):
    """RUN steps that executed (not served from cache), read from a build's output."""
    if engine(tool) in ("rbuild", "buildkit"):
        runs = set(re.findall(r"^(.*?#\d+) \[[^\]]*\] RUN ", text, re.M))
        cached = set(re.findall(r"^(.*?#\d+) CACHED", text, re.M))
        return len(runs - cached)
    steps = []  # classic: "Step 2/9 : RUN", buildah: "STEP 2/9: RUN"; both: "Using cache"
    for line in text.splitlines():
        m = re.match(r"(?i)^step \d+/\d+ ?: (\w+)", line)
        if m:
            steps.append([m.group(1).upper(), False])
        elif "Using cache" in line and steps:
            steps[-1][1] = True
    return sum(1 for kw, cached in steps if kw == "RUN" and not cached)


# --- timing ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, env, tools, args):
        self.env = env
        self.t = tools
        self.args = args
        self.results = []  # one dict per scenario x scope x tool
        self.notes = []
        self.seq = 0
        self.last_cpu = 0.0  # machine CPU seconds of the last timed() call

    def timed(self, tool, cmds, label):
        """Runs cmds concurrently (one after another for a SEQUENTIAL tool); returns (wall
        seconds, ok, the output of each)."""
        e = self.env.tool_env(tool)
        self.seq += 1
        logs = [WORK / "logs" / f"{self.seq:04d}-{label}-{tool}-{i}.log" for i in range(len(cmds))]
        start, cpu0 = time.monotonic(), cpu_busy()
        procs, codes = [], []

        def wait(p):
            try:
                codes.append(p.wait(TIMEOUT))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())

        try:
            for c, f in zip(cmds, logs):
                procs.append(subprocess.Popen(c, stdout=open(f, "wb"), stderr=subprocess.STDOUT, env=e))
                if tool in SEQUENTIAL:
                    wait(procs[-1])
            for p in procs[len(codes):]:
                wait(p)
        finally:  # interrupted: end our builds too (rbuild's steps die with it)
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        secs, self.last_cpu = time.monotonic() - start, cpu_busy() - cpu0
        texts = [f.read_text(errors="replace") for f in logs]
        ok = all(c == 0 for c in codes)
        if not ok:
            failed = [str(f) for f, c in zip(logs, codes) if c != 0]
            log(f"  {tool} {label}: FAILED, see {', '.join(failed)}")
        return secs, ok, texts

    def build(self, tool, services, label):
        secs, ok, texts = self.timed(tool, self.t.build_cmds(tool, services), label)
        return secs, ok, sum(count_runs(tool, t) for t in texts)

    def record(self, scenario, scope, tool, runs, expect=None, extra=None):
        ok = [r for r in runs if r["ok"]]
        times = sorted(r["s"] for r in ok)
        row = {
            "scenario": scenario,
            "scope": scope,
            "tool": tool,
            "runs": runs,
            "failed": len(runs) - len(ok),
            "expected_runs": expect,
        }
        if times:
            row.update(min=times[0], median=statistics.median(times), max=times[-1])
        row.update(extra or {})
        self.results.append(row)
        med = f"{row['median']:.3f}s" if times else "failed"
        log(f"  {scenario:7} {scope:5} {tool:8} median {med} over {len(times)} run(s)")

    def tools_for(self, scope, scenario=None):
        """The tools that run `scenario` of `scope` (any scenario of it when None)."""
        return [t for t in self.args.tools if t not in SEQUENTIAL
                or any(sp == scope and scenario in (None, sc) for sc, sp in SEQ_SCENARIOS)]

    def reps(self, scenario):
        return self.args.reps or REPS.get(scenario, WARM_REPS)

    def warm(self, services, scope, scenario=None, drop=False):
        """An untimed build per tool that runs `scenario` (None: any), so that every tool starts
        from its cache of this tree. With `drop`, a tool whose build fails is left out of the
        rest of the run."""
        for tool in self.tools_for(scope, scenario):
            _, ok, _ = self.build(tool, services, f"warm-{scope}")
            if ok:
                continue
            if drop:
                self.args.tools.remove(tool)
                self.notes.append(f"{LABELS[tool]} left out: its first build ({scope}) failed; see {WORK}/logs")
            else:
                self.notes.append(f"{LABELS[tool]}: untimed warm-up build ({scope}) failed")

    # Each scenario: for each repetition, each tool in turn (so noise spreads over all).
    def repeat(self, scenario, scope, services, prepare, expect=None, check_blobs=False):
        tools = self.tools_for(scope, scenario)
        runs = {t: [] for t in tools}
        for rep in range(self.reps(scenario)):
            if prepare:
                prepare(rep)
            for tool in tools:
                blobs = self.env.blobs()
                s, ok, ran = self.build(tool, services, f"{scenario}-{scope}")
                r = {"s": s, "ok": ok, "ran": ran}
                if tool == "rbuild" and check_blobs:
                    r["new_blobs"] = self.env.blobs() - blobs
                runs[tool].append(r)
        for tool in tools:
            self.record(scenario, scope, tool, runs[tool], expect)

    def cold(self, scope, services):
        expect = run_count(self.env.services[s][1] for s in services)
        tools = self.tools_for(scope, "cold")
        runs = {t: [] for t in tools}
        for rep in range(self.reps("cold")):
            for tool in tools:
                self.t.clear(tool, services)
                s, ok, ran = self.build(tool, services, f"cold-{scope}")
                runs[tool].append({"s": s, "ok": ok, "ran": ran, "cpu_s": round(self.last_cpu, 1)})
                log(f"  cold {scope} {tool}: {s:.1f} s, machine CPU busy {self.last_cpu:.1f} s")
        for tool in tools:
            self.record("cold", scope, tool, runs[tool], expect)

    def noop(self, scope, services):
        self.warm(services, scope, "noop")
        self.repeat("noop", scope, services, None, expect=0, check_blobs=True)

    def edit(self, scenario, scope, services):
        path, expect = edit_target(self.env, scenario)
        if path is None:
            self.na(scenario, scope, expect)
            return
        self.warm(services, scope, scenario)
        def prepare(rep):
            if scenario == "touch":
                os.utime(path)  # as `touch FILE` does: mtime = now, content unchanged
            else:
                with path.open("a") as f:
                    f.write("\n")  # one byte more

        self.repeat(scenario, scope, services, prepare, expect, check_blobs=scenario == "touch")
        for row in self.results[-len(self.tools_for(scope, scenario)) :]:
            row["file"] = str(path.relative_to(WORK / "srcs"))

    def config(self, scope, services):
        self.edit("config", scope, services)

    def early(self, scope, services):
        self.edit("early", scope, services)

    def touch(self, scope, services):
        self.edit("touch", scope, services)

    def na(self, scenario, scope, why):
        log(f"  {scenario} {scope}: n/a ({why})")
        for tool in self.tools_for(scope, scenario):
            self.results.append({"scenario": scenario, "scope": scope, "tool": tool, "na": why, "runs": []})

    def push(self, scope, services):
        tools = [t for t in self.tools_for(scope, "push") if t != "rbuild" or self.t.push_cmd]
        if "rbuild" not in tools:
            for kind in ("cold", "noop"):
                self.results.append({"scenario": f"push-{kind}", "scope": scope, "tool": "rbuild", "runs": [],
                                     "na": "this rbuild has no `push` command"})
        self.warm(services, scope, "push")
        runs = {(t, k): [] for t in tools for k in ("cold", "noop")}
        for rep in range(max(self.reps("push-cold"), self.reps("push-noop"))):
            for tool in tools:
                # cold: an empty registry (no blob of another tool's push to mount from)
                kinds = ["cold", "noop"] if rep < self.reps("push-cold") else ["noop"]
                if "cold" in kinds:
                    self.env.restart_registry(wipe=True)
                else:  # the registry may have been emptied for another tool since
                    self.timed(tool, self.t.push_cmds(tool, services), f"push-again-{scope}")
                for kind in kinds:
                    mark = self.env.registry.logfile.stat().st_size
                    s, ok, texts = self.timed(tool, self.t.push_cmds(tool, services), f"push-{kind}-{scope}")
                    uploads = registry_uploads(self.env.registry.logfile, mark)
                    r = {"s": s, "ok": ok, "blob_uploads": uploads}
                    if tool == "rbuild":
                        r["said"] = [t.strip().splitlines()[-1] for t in texts if t.strip()]
                    runs[(tool, kind)].append(r)
        for kind in ("cold", "noop"):
            for tool in tools:
                rs = runs[(tool, kind)]
                self.record(f"push-{kind}", scope, tool, rs, extra={"blob_uploads": max(r["blob_uploads"] for r in rs)})

    def export(self):
        """rbuild's layer writer against tar | pigz -p2 | sha256sum (bench/src/bin/layer-export.rs)."""
        binary = Path(self.args.rbuild).parent / "layer-export"
        if not binary.exists():
            run(["cargo", "build", "--release", "--locked", "-p", "rbuild-bench", "--bin", "layer-export"], cwd=REPO)
        tree = WORK / "usr-tree"  # ~1 GB: a copy of /usr/bin and /usr/share, kept between runs
        if not tree.exists():
            run(["mkdir", "-p", f"{tree}.partial"])
            run(["cp", "-a", "/usr/bin", "/usr/share", f"{tree}.partial/"])
            os.rename(f"{tree}.partial", tree)
        out = run([str(binary), str(tree), str(self.reps("export"))])
        (WORK / "logs" / "layer-export.log").write_text(out)
        rows = re.findall(r"^\| (.+?) \| ([\d.]+) \(([\d.]+)-([\d.]+)\) \| (\d+) \| (\d+) \| ([\d.]+)× \|$", out, re.M)
        self.export_rows = [
            {"tool": t, "median": float(m), "min": float(lo), "max": float(hi), "mb_s": int(mbs),
             "output_mb": int(o), "vs_pigz": float(x)}
            for t, m, lo, hi, mbs, o, x in rows
        ]
        self.export_header = out.splitlines()[0] if out else ""
        log("  export: " + ", ".join(f"{r['tool']} {r['vs_pigz']}×" for r in self.export_rows))


def registry_uploads(logfile, offset):
    """Blob uploads the registry completed since `offset` of its log (PUT …/blobs/uploads/… 201)."""
    with open(logfile, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return len(re.findall(r'"(?:PUT|POST) /v2/\S+/blobs/uploads/\S*digest=\S* HTTP/[\d.]+" 201', text))


# --- results --------------------------------------------------------------------------------


def ratio(rows, r):
    base = next((x for x in rows if x["scenario"] == r["scenario"] and x["scope"] == r["scope"]
                 and x["tool"] == "rbuild" and "median" in x), None)
    if base and "median" in r and base["median"] > 0:
        return r["median"] / base["median"]
    return None


def targets(bench):
    """The issue's targets, each (scenario, scope, text, met) with met None if not measured."""
    rows = bench.results
    get = lambda sc, scope, tool: next((r for r in rows if r["scenario"] == sc and r["scope"] == scope  # noqa: E731
                                        and r["tool"] == tool and "median" in r), None)
    out = []

    def speedup(sc, scope, tool):
        bk, rb = get(sc, scope, tool), get(sc, scope, "rbuild")
        return bk["median"] / rb["median"] if bk and rb and rb["median"] > 0 else None

    def vs_buildkit(sc, scope, need, text):
        x = speedup(sc, scope, "buildkit")
        out.append((sc, scope, f"{text}: {x:.1f}×" if x else text, None if x is None else x >= need))

    vs_buildkit("noop", "stack", 20, "≥20× faster than BuildKit")
    for scope in SCOPES:
        vs_buildkit("config", scope, 5, "≥5× faster than BuildKit")
    # The anchors built the stack one image after another; the ratio to BuildKit with
    # all 8 builds at once is shown beside it, not hidden.
    seq, par = speedup("cold", "stack", "buildkit-seq"), speedup("cold", "stack", "buildkit")
    if seq or par:
        text = "≤0.7× BuildKit's time, images one after another as the issue's anchors"
        text += f": {1 / seq:.2f}×" if seq else " (not measured)"
        text += f"; against BuildKit's 8 builds at once: {1 / par:.2f}×" if par else ""
        out.append(("cold", "stack", text, None if seq is None else seq >= 1 / 0.7))
    for scope in SCOPES:
        t, n = get("touch", scope, "rbuild"), get("noop", scope, "rbuild")
        if t and n:
            ran = max(r["ran"] for r in t["runs"])
            blobs = max(r.get("new_blobs", 0) for r in t["runs"])
            same = t["median"] <= n["median"] * 1.25 + 0.005
            out.append(("touch", scope, f"= no-op ({n['median']:.3f} s), {ran} RUN run, {blobs} new blob(s)",
                        same and ran == 0 and blobs == 0))
    p = get("push-noop", "stack", "rbuild")
    if p:
        out.append(("push-noop", "stack", f"< 0.5 s, 0 blob uploads: {p['median']:.2f} s, {p['blob_uploads']}",
                    p["median"] < 0.5 and p["blob_uploads"] == 0))
    return out


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def machine(rbuild):
    ver = lambda cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[:1]  # noqa: E731
    commit = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False).strip()
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "kernel": platform.release(),
        "rbuild_commit": commit,
        "rbuild": f"{rbuild} ({' '.join(ver([rbuild, '--version']))})",
        "docker": " ".join(ver([DOCKER, "--version"])),
        "buildah": " ".join(ver(["buildah", "--version"])),
    }


def cpu_rows(bench, scope):
    """(tool, median busy CPU seconds) of the cold builds of a scope."""
    return [(r["tool"], statistics.median(x["cpu_s"] for x in r["runs"] if x["ok"]))
            for r in bench.results if r["scenario"] == "cold" and r["scope"] == scope
            and any(x["ok"] and "cpu_s" in x for x in r["runs"])]


def write_results(bench, args, started):
    out_dir = REPO / "bench/results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = datetime.date.today().isoformat() + ("-quick" if args.quick else "" if args.full else "-partial")
    m = machine(args.rbuild)
    goals = targets(bench)
    stack_mode = ("one `rbuild bake` process" if bench.t.bake else
                  "one `rbuild build` process per image, all at once")
    lines = [
        f"# rbuild against BuildKit, the classic builder and buildah — {stem}",
        "",
    ]
    if args.quick:
        lines += ["**Quick run** (`--quick`: one repetition, nginx only): a check that the harness",
                  "works, not a measurement.", ""]
    elif not args.full:
        lines += [f"**Partial run**: `{' '.join(sys.argv[1:])}`.", ""]
    lines += [
        f"{m['cpus']} CPUs, {m['memory_gb']} GB, Linux {m['kernel']}; harness at {m['rbuild_commit']}, rbuild `{m['rbuild']}`, "
        f"{m['docker']} (BuildKit and classic builder, one dockerd of the harness), {m['buildah']} "
        f"(`--layers`, `--isolation {BUILDAH_ISOLATION}`, overlay). Run took "
        f"{(time.time() - started) / 60:.0f} min.",
        "",
        "- Same base `debian:bookworm` (mmdebstrap minbase, imported by rbuild, `rbuild save` into "
        "docker and buildah); "
        + ("apt through one apt-cacher-ng (warmed by untimed builds), `--build-arg http_proxy`, "
           if PROXY else "apt straight from Debian's mirror (`--no-apt-cache`: cold numbers include "
           "network time), ")
        + "host network for RUN in every tool.",
        f"- Stack: the {len(bench.env.services)} images of `srcs/docker-compose.yml`. rbuild: {stack_mode}; "
        "BuildKit, classic and buildah: one build process per image, all started at once "
        "(concurrent for every tool); \"BuildKit, one image after another\" (cold and no-op only): "
        "the same builds in turn, as the issue's anchors were measured and as docker-compose 1.29's "
        "`build` does. Times are wall-clock seconds for the whole scope; cold rows also give the "
        "machine's busy CPU seconds (all processes, both cores) in the JSON."
        if "stack" in args.scopes else "- Scope: the nginx image alone (no stack runs).",
        "- cold: each tool's build cache and built images removed, base kept; warm scenarios start "
        "from an untimed build. Each repetition times every tool in turn.",
        "- × rbuild: tool median / rbuild median (higher = rbuild faster). RUN steps: RUN "
        "instructions that executed, read from each tool's output (median), against what the "
        "scenario should rerun.",
        "",
        "| scenario | scope | tool | runs | min s | median s | max s | × rbuild | RUN steps run | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in bench.results:
        tool = LABELS[r["tool"]]
        if "na" in r:
            lines.append(f"| {r['scenario']} | {r['scope']} | {tool} | – | – | – | – | – | – | n/a: {r['na']} |")
            continue
        ok_runs = [x for x in r["runs"] if x["ok"]]
        ran = "–"
        if ok_runs and "ran" in ok_runs[0]:
            med = statistics.median(x["ran"] for x in ok_runs)
            exp = r.get("expected_runs")
            ran = f"{med:g}" + ("" if exp is None or med == exp else f" ⚠ (expected {exp})")
        if r["scenario"].startswith("push"):
            ran = f"{r.get('blob_uploads', 0)} blob uploads"
        goal = ""
        if r["tool"] == "rbuild":
            goal = "; ".join(f"{'✅' if met else '❌' if met is False else '?'} {text}"
                             for sc, scope, text, met in goals if sc == r["scenario"] and scope == r["scope"])
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        x = ratio(bench.results, r)
        lines.append(
            f"| {r['scenario']} | {r['scope']} | {tool} | {len(ok_runs)}{failed} | {fmt(r.get('min'))} | "
            f"{fmt(r.get('median'))} | {fmt(r.get('max'))} | {fmt(x, 1) + '×' if x else '–'} | {ran} | {goal} |"
        )
    for scope in SCOPES:
        row = [f"{LABELS[t]} {c:.0f} s" for t, c in cpu_rows(bench, scope)]
        if row:
            lines += ["", f"Cold {scope}, CPU seconds the machine was busy (all processes, median): " + ", ".join(row) + "."]
    if getattr(bench, "export_rows", None):
        lines += ["", f"Layer export (`bench/src/bin/layer-export.rs`): {bench.export_header}", "",
                  "| tool | min s | median s | max s | MB/s | output MB | throughput vs `tar \\| pigz -p2 \\| sha256sum` | target |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in bench.export_rows:
            goal = ""
            if "store" in r["tool"]:
                goal = f"{'✅' if r['vs_pigz'] >= 0.9 else '❌'} ≥0.9×"
            name = r["tool"].replace("|", "\\|")
            lines.append(f"| {name} | {r['min']:.2f} | {r['median']:.2f} | {r['max']:.2f} | {r['mb_s']} | "
                         f"{r['output_mb']} | {r['vs_pigz']:.2f}× | {goal} |")
    pushes = [(r["scope"], x["said"]) for r in bench.results if r["tool"] == "rbuild"
              and r["scenario"].startswith("push") for x in r["runs"] if x.get("said")]
    if pushes:
        lines += ["", "rbuild push said (last run): " + " / ".join(pushes[-1][1])]
    if bench.notes:
        lines += ["", "Notes:", *[f"- {n}" for n in bench.notes]]
    lines += ["", f"![chart]({stem}.png)", "",
              f"Rerun: `{' '.join(['python3 bench/inception.py', *sys.argv[1:]])}` as root (see bench/README.md)."]
    md = "\n".join(lines) + "\n"
    (out_dir / f"{stem}.md").write_text(md)
    data = {"date": stem, "machine": m, "args": vars(args), "stack": stack_mode, "results": bench.results,
            "export": getattr(bench, "export_rows", []), "targets": goals, "notes": bench.notes}
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    chart(bench, out_dir / f"{stem}.png", stem)
    if args.full:
        update_readme(md, stem)
    log(f"results: {out_dir / stem}.md, .json, .png")
    return md


def chart(bench, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = [s for s in SCOPES if any(r["scope"] == s and "median" in r for r in bench.results)]
    export = getattr(bench, "export_rows", [])
    n = len(scopes) + (1 if export else 0)
    widths = [7] * len(scopes) + ([4] if export else [])
    fig, axes = plt.subplots(1, max(n, 1), figsize=(sum(widths) or 7, 5), squeeze=False,
                             gridspec_kw={"width_ratios": widths} if widths else None)
    for ax, scope in zip(axes[0], scopes):
        tools = [t for t in bench.args.tools if any(r["scope"] == scope and r["tool"] == t for r in bench.results)]
        scen = list(dict.fromkeys(r["scenario"] for r in bench.results if r["scope"] == scope and "median" in r))
        width = 0.8 / len(tools)
        for i, tool in enumerate(tools):
            rows = [next((r for r in bench.results if r["scope"] == scope and r["scenario"] == s
                          and r["tool"] == tool and "median" in r), None) for s in scen]
            xs = [j + (i - (len(tools) - 1) / 2) * width for j in range(len(scen))]
            med = [r["median"] if r else 0 for r in rows]
            err = [[r["median"] - r["min"] if r else 0 for r in rows], [r["max"] - r["median"] if r else 0 for r in rows]]
            ax.bar(xs, med, width, yerr=err, capsize=2, label=LABELS[tool], color=f"C{TOOLS.index(tool)}")
        ax.set_yscale("log")
        ax.set_xticks(range(len(scen)), scen, rotation=20)
        ax.set_ylabel("seconds (median, min–max), log scale")
        ax.set_title(f"{scope}" + (" (8 images)" if scope == "stack" else " image"))
        ax.legend(fontsize=8)
    if export:
        ax = axes[0][len(scopes)]
        ax.barh([r["tool"] for r in export], [r["mb_s"] for r in export], color="tab:gray")
        ax.set_xlabel("MB/s of file data")
        ax.set_title("layer export (~1 GB tree)")
    fig.suptitle(f"rbuild benchmark {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def update_readme(md, stem):
    """Replaces the block between the bench markers in README.md with the latest table."""
    readme = REPO / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text:
        return
    body = md.split("\n", 2)[2].replace(f"![chart]({stem}.png)", f"![chart](bench/results/{stem}.png)")
    block = f"{start}\nLatest: [`bench/results/{stem}.md`](bench/results/{stem}.md)\n\n{body}{end}"
    readme.write_text(text[: text.index(start)] + block + text[text.index(end) + len(end) :])


# --- main -----------------------------------------------------------------------------------


def ensure_packages():
    missing = [p for p in APT_PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        log(f"installing {' '.join(missing)}")
        run(["apt-get", "update", "-q"])
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def find_rbuild(arg):
    if arg:
        return str(Path(arg).resolve())
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "release/rbuild"
    log("building rbuild (release)")
    run(["cargo", "build", "--release", "--locked", "-p", "builder", "-p", "rbuild-bench"], cwd=REPO)
    return str(binary)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one repetition, nginx only")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {SCENARIOS}")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of {TOOLS}")
    p.add_argument("--scopes", default=None, help="stack,nginx (default both; --quick: nginx)")
    p.add_argument("--reps", type=int, default=None, help="repetitions of every scenario")
    p.add_argument("--rbuild", default=None, help="rbuild binary (default: cargo build --release)")
    p.add_argument("--no-apt-cache", action="store_true",
                   help="apt straight from Debian's mirror, no apt-cacher-ng (cold numbers then include "
                        "network time; apt-cacher-ng 3.7 can hang concurrent builds)")
    args = p.parse_args()
    args.scenarios = args.scenarios.split(",")
    args.tools = args.tools.split(",")
    args.scopes = (args.scopes or ("nginx" if args.quick else ",".join(SCOPES))).split(",")
    args.full = (not args.quick and args.reps is None and args.scenarios == SCENARIOS
                 and args.tools == TOOLS and args.scopes == SCOPES)
    if args.quick:
        args.reps = args.reps or 1
    for name, given, known in [("scenario", args.scenarios, SCENARIOS), ("tool", args.tools, TOOLS),
                               ("scope", args.scopes, SCOPES)]:
        bad = set(given) - set(known)
        if bad:
            p.error(f"unknown {name}: {', '.join(bad)}")
    return args


def main():
    global PROXY
    args = parse_args()
    if args.no_apt_cache:
        PROXY = None
    if os.geteuid() != 0:
        sys.exit("run as root (rbuild, dockerd and buildah need it)")
    started = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "logs").mkdir(exist_ok=True)
    ensure_packages()
    args.rbuild = find_rbuild(args.rbuild)
    bake_ok, bake_help = has_command(args.rbuild, "bake")
    push_ok, _ = has_command(args.rbuild, "push")
    bake = (["--progress", "plain"] if "--progress" in bake_help else []) if bake_ok else None
    env = Env(args)
    # SIGTERM ends the run like ^C does: through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    bench = Bench(env, Tools(env, bake, push_ok), args)
    if not bake_ok and "stack" in args.scopes:
        bench.notes.append("this rbuild has no `bake`: the stack is one `rbuild build` per image, run at once")
    try:
        env.start()
        # One image at a time first: apt-cacher-ng mishandles concurrent first fetches of a file.
        needed = list(env.services) if "stack" in args.scopes else ["nginx"]
        if PROXY:
            log(f"filling the apt cache: {args.tools[0]} builds {', '.join(needed)} one at a time (untimed)")
            for s in needed:
                bench.build(args.tools[0], [s], "apt-fill")
        for scope in args.scopes:
            services = list(env.services) if scope == "stack" else ["nginx"]
            log(f"== {scope}: {', '.join(services)}")
            bench.warm(services, scope, drop=True)
            for scenario in args.scenarios:
                if scenario != "export":
                    getattr(bench, scenario)(scope, services)
        if "export" in args.scenarios:
            bench.export()
    except KeyboardInterrupt:
        bench.notes.append("interrupted: partial results")
        log("interrupted")
    finally:
        env.stop()
    print(write_results(bench, args, started))
    env.remove_state([d for d in TOOL_STATE if d != "logs"])  # GBs of images; logs stay


if __name__ == "__main__":
    main()
