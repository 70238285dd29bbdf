"""A hostile adapter against the real queue, worker (`arbench worker --once`, a separate process holding a secret
in its environment) and bubblewrap sandbox: one test per attempt from issue #14. Each attempt reports what it
saw by raising (so its report lands in the job's public history); each test asserts that the attempt failed
and that the host is unchanged.

Needs bubblewrap and root (the `bubblewrap` isolation level); CI installs bubblewrap with scripts/setup.sh.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from harness.isolation import probe_isolation
from harness.store import Store
from harness.submissions import get_submission, submit

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
CANARY = f"ARBENCH_CANARY_{uuid.uuid4().hex}"
MARKER = f"arbench-hostile-{uuid.uuid4().hex[:10]}"
PROCESS_LIMIT = 64

pytestmark = pytest.mark.skipif(probe_isolation().level != "bubblewrap",
                                reason=f"needs bubblewrap as root ({probe_isolation().detail})")

HOSTILE = textwrap.dedent('''
    import ctypes, glob, json, os, socket, time
    from dataclasses import dataclass
    import numpy as np
    from harness.api import Method

    @dataclass
    class HostileConfig:
        behaviour: str = "ok"
        target: str = ""
        db: str = ""
        worker_pid: int = 0
        port: int = 0
        marker: str = ""

    def others():
        return sorted({int(p) for p in os.listdir("/proc") if p.isdigit()} - {os.getpid()})

    def report(outcome):
        raise RuntimeError(f"ATTEMPT: {outcome}")

    class Hostile(Method):
        description = "test adapter that attacks its sandbox"
        modality = "vector"
        family = "test-adapter"
        Config = HostileConfig

        def settings(self):
            return {"behaviour": self.config.behaviour}

        def generate(self, requests):
            getattr(self, "do_" + self.config.behaviour)()
            return np.stack([np.random.default_rng(r.seed).normal(0.0, 1.0, r.condition["dim"]) for r in requests])

        def do_probes(self):
            outcomes = {}
            for name in ("environ", "mem", "rootwrite", "netns", "readdb", "hardlink"):
                try:
                    outcomes[name] = getattr(self, "probe_" + name)()
                except Exception as exc:
                    outcomes[name] = f"error {exc!r}"
            report(json.dumps(outcomes))

        def do_linger(self):  # a setsid daemon that tries to outlive the job, and one that edits the shard later
            self.do_daemon()
            self.do_edit()

        def probe_environ(self):
            found, read = [], 0
            for pid in [self.config.worker_pid] + others():
                for what in ("environ", "cmdline"):
                    try:
                        data = open(f"/proc/{pid}/{what}", "rb").read()
                    except OSError:
                        continue
                    read += 1
                    if b"ARBENCH_CANARY" in data:
                        found.append(f"{pid}/{what}")
            return f"LEAK {found}" if found else f"blocked (read {read} files, no canary)"

        def probe_mem(self):
            found, opened = [], 0
            for pid in [self.config.worker_pid] + others():
                try:
                    maps = open(f"/proc/{pid}/maps").read().splitlines()
                    with open(f"/proc/{pid}/mem", "rb") as mem:
                        opened += 1
                        for line in maps:
                            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                            if "r" in line.split()[1] and hi - lo < 2**28:
                                try:
                                    mem.seek(lo)
                                    if b"ARBENCH_CANARY" in mem.read(hi - lo):
                                        found.append(pid)
                                except OSError:
                                    pass
                except OSError:
                    continue
            return f"LEAK {found}" if found else f"blocked (opened {opened} mem files, no canary)"

        def probe_rootwrite(self):
            wrote = []
            for pid in [self.config.worker_pid] + others():
                try:
                    with open(f"/proc/{pid}/root{self.config.target}", "w") as f:
                        f.write("pwned")
                    wrote.append(pid)
                except OSError:
                    pass
            try:
                with open(self.config.target, "w") as f:
                    f.write("pwned")
                wrote.append("direct")
            except OSError:
                pass
            return f"LEAK wrote via {wrote}" if wrote else "blocked"

        def probe_netns(self):
            libc = ctypes.CDLL(None, use_errno=True)
            joined = []
            for pid in [self.config.worker_pid] + others():
                try:
                    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
                except OSError:
                    continue
                if libc.setns(fd, 0x40000000) == 0:  # CLONE_NEWNET
                    joined.append(pid)
                os.close(fd)
            s = socket.socket()
            s.settimeout(3)
            try:
                s.connect(("127.0.0.1", self.config.port))
                s.sendall(b"hello from the sandbox")
                return f"LEAK reached the worker's loopback port (joined {joined})"
            except OSError as exc:
                return f"blocked ({exc.__class__.__name__}; joined {joined})"

        def probe_readdb(self):
            try:
                data = open(self.config.db, "rb").read(100)
                return f"LEAK read {len(data)} bytes of the database"
            except OSError as exc:
                return f"blocked ({exc.__class__.__name__})"

        def do_symlink(self):
            os.symlink("/etc/passwd", "/job/out/passwd.txt")
            os.symlink("/proc/1/environ", "/job/out/environ.txt")

        def probe_hardlink(self):
            try:
                os.link("/etc/passwd", "/job/out/passwd.txt")
            except OSError as exc:
                return f"blocked ({exc.__class__.__name__})"
            return "LEAK made a hard link"

        def do_daemon(self):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv("/bin/sleep", [self.config.marker, "600"])
                os._exit(0)
            time.sleep(0.5)

        def do_forkbomb(self):
            kids, error = 0, "none"
            for _ in range(1000):
                try:
                    pid = os.fork()
                except OSError as exc:
                    error = exc.strerror
                    break
                if pid == 0:
                    os.execv("/bin/sleep", [self.config.marker, "600"])
                kids += 1
            report(f"forked {kids} then: {error}")

        def do_bigout(self):
            chunk = b"x" * (1 << 20)
            for _ in range(1024):
                os.write(1, chunk)
            report("printed 1 GiB")

        def do_edit(self):
            parent = os.getpid()
            if os.fork() == 0:
                os.setsid()
                while True:  # wait until the job's main process is gone, then rewrite its shard
                    try:
                        os.kill(parent, 0)
                    except ProcessLookupError:
                        break
                    time.sleep(0.02)
                time.sleep(1.0)
                for path in glob.glob("/job/out/shards-*/shard-*/values.npy"):
                    np.save(path, np.full((6, 4), 1000.0))
                os.execv("/bin/sleep", [self.config.marker, "600"])
''')


def _manifest(folder: Path, behaviour: str, **settings) -> Path:
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "hostile_adapter.py").write_text(HOSTILE)
    values = {"behaviour": behaviour, **settings}
    lines = ['task = "toy-gauss"', 'method = "hostile_adapter:Hostile"', 'adapter_path = "adapter"', 'license = "MIT"',
             f'label = "hostile {behaviour}"', "[submitter]", 'name = "Mallory"', "[settings]",
             *[f"{k} = {json.dumps(v)}" for k, v in values.items()], "[task_settings]", "num_samples = 6"]
    (folder / "manifest.toml").write_text("\n".join(lines) + "\n")
    return folder / "manifest.toml"


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


class Listener(threading.Thread):
    """A loopback port on the host that records whether anything connected."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    """Queue every attack, run one `arbench worker --once` over them (as a separate process with a secret in
    its environment), and hand each test its job."""
    base = tmp_path_factory.mktemp("hostile")
    results = base / "results"
    victim = base / "victim.txt"
    victim.write_text("untouched")
    db_url = f"sqlite:///{results / 'arbench.db'}"
    old = os.environ.get("ARBENCH_RESULTS")
    os.environ["ARBENCH_RESULTS"] = str(results)
    listener = Listener()
    listener.start()
    try:
        store = Store(db_url)
        worker_env = dict(os.environ, PYTHONPATH=f"{TESTS_DIR}{os.pathsep}{ROOT}", ARBENCH_SECRET_TOKEN=CANARY)
        jobs = {}
        # one job runs every read/write/network probe (a sandboxed child costs a Python + torch start-up)
        plans = {"probes": {"target": str(victim), "port": listener.port, "db": str(results / "arbench.db")},
                 "symlink": {}, "linger": {}, "forkbomb": {}, "bigout": {}}
        # the worker's pid must be known before it starts: start it paused on a pipe, queue, then release it
        read_fd, write_fd = os.pipe()
        code = ("import os, sys; os.read(int(sys.argv[1]), 1); "
                "from harness.cli import main; sys.exit(main(sys.argv[2:]))")
        worker = subprocess.Popen([sys.executable, "-c", code, str(read_fd), "--db", db_url, "worker", "--once",
                                   "--memory-mb", "4096", "--time-limit", "120", "--max-processes",
                                   str(PROCESS_LIMIT), "--lease-seconds", "60"],
                                  env=worker_env, pass_fds=(read_fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        os.close(read_fd)
        for behaviour, settings in plans.items():
            folder = base / behaviour
            folder.mkdir()
            jobs[behaviour] = submit(store, _manifest(folder, behaviour, worker_pid=worker.pid, marker=MARKER,
                                                      **settings))
        os.write(write_fd, b"x")
        os.close(write_fd)
        stdout, stderr = worker.communicate(timeout=900)
        assert worker.returncode == 0, stderr[-3000:]
        yield {"store": store, "jobs": {k: get_submission(store, v) for k, v in jobs.items()}, "victim": victim,
               "listener": listener, "stdout": stdout, "stderr": stderr, "results": results}
        store.dispose()
    finally:
        listener.stop.set()
        if old is None:
            os.environ.pop("ARBENCH_RESULTS", None)
        else:
            os.environ["ARBENCH_RESULTS"] = old


def _public_text(attacks) -> str:
    """Everything that could be published: every job's history and error, every stored run, every artifact."""
    parts = [json.dumps(job) for job in attacks["jobs"].values()]
    parts.append(json.dumps(attacks["store"].records()))
    for path in (attacks["results"] / "artifacts").rglob("*"):
        if path.is_file():
            parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def _attempt(attacks, behaviour: str) -> str:
    job = attacks["jobs"][behaviour]
    assert job["state"] == "failed", job["history"]
    assert "ATTEMPT: " in job["error"], job["error"]
    return job["error"].rsplit("ATTEMPT: ", 1)[1]


def _probe(attacks, name: str) -> str:
    return json.loads(_attempt(attacks, "probes"))[name]


def test_history_states_the_isolation_and_a_plain_adapter_still_works(attacks):
    job = attacks["jobs"]["linger"]
    assert job["state"] == "finished", job["history"]
    running = [e["message"] for e in job["history"] if e["state"] == "running"][0]
    assert "isolation: bubblewrap" in running and f"{PROCESS_LIMIT} processes" in running
    assert f"{job['id']}: finished as run {job['run_id']}: mean_value=" in attacks["stdout"]


def test_worker_environment_is_not_readable(attacks):
    assert _probe(attacks, "environ").startswith("blocked")
    assert CANARY not in _public_text(attacks)


def test_worker_memory_is_not_readable(attacks):
    assert _probe(attacks, "mem").startswith("blocked")


def test_no_write_through_proc_root(attacks):
    assert _probe(attacks, "rootwrite") == "blocked"
    assert attacks["victim"].read_text() == "untouched"


def test_no_way_into_the_worker_network_namespace(attacks):
    assert _probe(attacks, "netns").startswith("blocked")
    assert attacks["listener"].connections == 0


def test_database_file_is_hidden(attacks):
    assert _probe(attacks, "readdb").startswith("blocked")
    assert all(r["metrics"] for r in attacks["store"].records() if r["status"] == "finished")


def test_hard_links_to_host_files_cannot_be_made(attacks):
    assert _probe(attacks, "hardlink").startswith("blocked")


def test_symlinked_outputs_are_refused_and_nothing_is_published(attacks):
    job = attacks["jobs"]["symlink"]
    assert job["state"] == "failed" and "is a symbolic link; only regular files are accepted" in job["error"]
    assert job["run_id"] is None
    assert "root:x:0:0" not in _public_text(attacks)


def test_a_daemon_does_not_outlive_its_job(attacks):
    job = attacks["jobs"]["linger"]
    assert job["state"] == "finished", job["history"]
    assert _host_processes_with(MARKER) == []


def test_fork_bomb_is_bounded_by_the_process_limit(attacks):
    outcome = _attempt(attacks, "forkbomb")
    kids = int(outcome.split()[1])
    assert kids < PROCESS_LIMIT and "Resource temporarily unavailable" in outcome
    assert _host_processes_with(MARKER) == []


def test_a_gigabyte_of_output_is_kept_only_by_its_tail(attacks):
    job = attacks["jobs"]["bigout"]
    assert job["state"] == "failed" and "ATTEMPT: printed 1 GiB" in job["error"]
    assert f"[{2**30 + len(job['error'])}" not in job["error"]  # the count is of what was printed, not kept
    assert "bytes of output; the last" in job["error"] and len(job["error"]) < 4000


def test_a_shard_edited_after_the_job_ended_is_not_what_is_scored(attacks):
    job = attacks["jobs"]["linger"]
    assert job["state"] == "finished", job["history"]
    (run,) = [r for r in attacks["store"].records() if r["run_id"] == job["run_id"]]
    expected = np.mean([np.random.default_rng(i).normal(0.0, 1.0, 4) for i in range(6)])
    assert run["metrics"]["mean_value"]["value"] == pytest.approx(expected, rel=1e-9)
    assert _host_processes_with(MARKER) == []
