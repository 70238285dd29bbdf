"""The sandbox a submission's code runs in: bubblewrap (`bwrap`), resource limits, and untrusted outputs.

Isolation is delegated to bubblewrap (Debian package `bubblewrap`), not written here. Three levels,
probed once per worker (`probe_isolation`) and written into every job's history:

* ``bubblewrap`` (worker runs as root): an outer, privileged `bwrap` builds the child's world (new PID,
  mount, network, IPC, UTS and cgroup namespaces; its own `/proc`; a read-only view made only of the
  system folders, the Python installation, the project's code and `$ARBENCH_HOME/weights` (no task data: the
  files a task's requests name are copied into the job folder, `stage_inputs`); a size-capped `/tmp`; only the job
  folder's `out/` writable), then `setpriv` drops to a fresh unprivileged uid *outside* every namespace
  (one per job, so `RLIMIT_NPROC` binds: it does not bind root's children), then an inner, unprivileged
  `bwrap` puts the child in a new user namespace as uid 65534 with every capability dropped and no
  further user namespaces. `--die-with-parent` and `--new-session` on both; when the job ends the PID
  namespace goes away with everything in it, and the worker kills whatever still runs under the job's uid.
* ``bubblewrap-userns`` (worker is not root): one unprivileged `bwrap` with the same namespaces and view;
  the child's uid outside is the worker's own, so the process limit counts the worker user's processes.
* ``none`` (no usable bubblewrap or user namespaces): only resource limits. Untrusted adapters are refused
  unless the operator starts the worker with `--allow-unsandboxed` (logged, and written in each history).

Outputs are untrusted data: `harvest` copies back regular files only (no symlink, device, FIFO, socket
or hard link; nothing outside the folder), under caps on their number and bytes; the child's log is
kept from its tail only (`TailBuffer`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from harness.api import Request
from harness.config import arbench_home, results_dir

SANDBOX_UID_INSIDE = 65534  # "nobody" in the child's user namespace
JOB_MOUNT = "/job"  # where the job folder appears inside the sandbox
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass
class Limits:
    """What a submission's child may use (each is enforced by the kernel, not by the child's good will)."""

    memory_mb: int = 8192  # RLIMIT_AS
    wall_seconds: float = 3600.0  # the worker kills the whole sandbox after this
    cpu_seconds: int | None = None  # RLIMIT_CPU; default wall_seconds + 60
    processes: int = 256  # RLIMIT_NPROC of the job's own uid; threads count (torch starts one per core)
    open_files: int = 256  # RLIMIT_NOFILE
    file_size_mb: int = 4096  # RLIMIT_FSIZE: no single file larger
    tmp_mb: int = 512  # size of the child's /tmp (a tmpfs)
    output_files: int = 100_000  # copied back at most
    output_mb: int = 8192  # bytes copied back at most
    input_mb: int = 8192  # bytes of the files the requests name, copied into the job (`stage_inputs`)
    log_kb: int = 64  # the tail of the child's output that is kept


@dataclass(frozen=True)
class Isolation:
    """What isolation this machine gives a job; `summary` goes into the job's history verbatim."""

    level: str  # "bubblewrap", "bubblewrap-userns" or "none"
    detail: str

    @property
    def sandboxed(self) -> bool:
        return self.level != "none"

    def summary(self, limits: Limits) -> str:
        cpu = limits.cpu_seconds or int(limits.wall_seconds) + 60
        rl = (f"memory {limits.memory_mb} MB, CPU {cpu} s, wall {limits.wall_seconds:g} s, {limits.processes} "
              f"processes, files up to {limits.file_size_mb} MB, {limits.open_files} open files")
        if self.level == "bubblewrap":
            return ("isolation: bubblewrap; unprivileged uid outside and inside (uid 65534 in a new user "
                    "namespace), new PID/mount/network/IPC/UTS namespaces, own /proc, no capabilities, read-only "
                    "system and code, only the job's out/ writable, no database credentials; " + rl)
        if self.level == "bubblewrap-userns":
            return ("isolation: bubblewrap (worker not root): uid 65534 in a new user namespace (the worker's uid "
                    "outside), new PID/mount/network/IPC/UTS namespaces, own /proc, no capabilities, read-only "
                    "system and code, only the job's out/ writable; the process limit counts the worker user's "
                    "processes; " + rl)
        return (f"isolation: NONE ({self.detail}); the child runs as the worker's user with its network, files "
                f"and processes visible; resource limits only: " + rl)


class SandboxError(Exception):
    """The sandbox could not be set up, or the child handed back something that is refused."""


# -- probing -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def probe_isolation() -> Isolation:
    """The strongest level that works here, checked by starting a real sandbox once (cached)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Isolation("none", "bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    level = "bubblewrap" if os.geteuid() == 0 else "bubblewrap-userns"
    if level == "bubblewrap" and shutil.which("setpriv") is None:
        return Isolation("none", "setpriv (util-linux) is missing, so the child cannot drop root outside bwrap")
    job = Path(_mkdtemp())
    try:
        (job / "out").mkdir()
        uid = pick_uid() if level == "bubblewrap" else None
        if uid is not None:
            os.chown(job / "out", uid, uid)
        probe = "import os, harness; open('/job/out/ok', 'w').write(str(os.getuid()))"
        cmd = sandbox_command(level, job, [sys.executable, "-c", probe], uid, Limits())
        done = subprocess.run(cmd, capture_output=True, timeout=60, env=_base_env(),
                              preexec_fn=lambda: _set_limits(Limits(), None))
        if done.returncode != 0 or (job / "out" / "ok").read_text() != str(SANDBOX_UID_INSIDE):
            return Isolation("none", f"bubblewrap failed to start a sandbox here (exit {done.returncode}: "
                                     f"{done.stderr.decode(errors='replace').strip()[-300:]})")
    except (OSError, subprocess.SubprocessError) as exc:
        return Isolation("none", f"bubblewrap failed to start a sandbox here ({type(exc).__name__}: {exc})")
    finally:
        shutil.rmtree(job, ignore_errors=True)
    return Isolation(level, bwrap)


def jobs_root() -> Path:
    """Where job folders live (hidden from every sandbox, so no job sees another's files)."""
    import tempfile

    root = Path(tempfile.gettempdir()) / "arbench-jobs"
    root.mkdir(mode=0o711, exist_ok=True)
    return root


def _mkdtemp() -> str:
    import tempfile

    path = tempfile.mkdtemp(prefix="job-", dir=jobs_root())
    os.chmod(path, 0o755)  # the job's uid must reach its out/ folder
    return path


def make_job_dir() -> Path:
    """A fresh job folder (root-owned, world-readable; only its `out/` will belong to the job's uid)."""
    return Path(_mkdtemp())


def pick_uid(base: int = 200_000, span: int = 100_000) -> int:
    """A uid no process uses now, for one job (so its process limit and files are its own)."""
    busy = set(_uids_in_use())
    for _ in range(100):
        uid = base + secrets.randbelow(span)
        if uid not in busy:
            return uid
    raise SandboxError("no free uid for the sandbox")


def _uids_in_use() -> Iterable[int]:
    for pid in _pids():
        uid = _real_uid(pid)
        if uid is not None:
            yield uid


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def kill_uid(uid: int) -> int:
    """SIGKILL every process whose real uid is `uid` (a job's own uid); returns how many were left."""
    left = 0
    for _ in range(20):
        victims = [pid for pid in _pids() if _real_uid(pid) == uid]
        if not victims:
            return left
        left = max(left, len(victims))
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        threading.Event().wait(0.05)
    return left


# -- the command -------------------------------------------------------------------------------
def _view_paths() -> list[Path]:
    """Read-only folders the child needs: the Python installation, the packages, the project's code and the
    hash-checked weights of registered methods. No task data: the files a request names are copied into the job
    (`stage_inputs`)."""
    import harness

    candidates = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent,
                  Path(harness.__file__).resolve().parent.parent]
    # sys.path, but not the worker's working folder (`python -m` puts it there): that can be anything
    candidates += [Path(p) for p in sys.path if p and Path(p).exists() and Path(p).resolve() != Path.cwd().resolve()]
    candidates += [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if (arbench_home() / "weights").is_dir():  # hash-checked weights of registered methods (and evaluators)
        candidates.append(arbench_home() / "weights")
    paths = set()
    for c in candidates:
        for p in (c.absolute(), c.resolve()):
            if p.exists():
                paths.add(p if p.is_dir() else p.parent)
    system = [Path(d) for d in SYSTEM_DIRS]
    keep = sorted(p for p in paths if not any(inside(p, s) for s in system) and p != Path("/"))
    return [p for p in keep if not any(q != p and inside(p, q) for q in keep)]


def inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (both already resolved, where that matters)."""
    return path == folder or folder in path.parents


def hidden_paths(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Folders never shown to the child even when they lie inside a visible one (results, databases)."""
    return sorted({Path(p).resolve() for p in [results_dir(), jobs_root(), *extra] if Path(p).is_dir()})


class _Copies:
    """Copies of operator files into a job's `inputs/` (one per distinct file, capped in bytes together)."""

    def __init__(self, job: Path, inside_job: str, limits: Limits, hide: Iterable[str | Path]):
        self.job, self.inside_job, self.limits = job, inside_job, limits
        self.hidden = hidden_paths(hide)
        self.copies: dict[Path, str] = {}
        self.total = 0

    def path(self, value: str, what: str) -> str:
        """The path, as the child sees it, of a copy of the file `value` (`what` names it in a refusal)."""
        path = Path(value).expanduser().absolute()
        real = path.resolve()
        if real not in self.copies:
            if not real.is_file():
                raise SandboxError(f"{what} {path} is not a regular file; fix the task's data")
            if any(inside(real, h) for h in self.hidden):
                raise SandboxError(f"{what} {path} lies in a folder a sandbox never shows (results, databases, "
                                   "submissions); keep task data outside those folders")
            self.total += real.stat().st_size
            if self.total > self.limits.input_mb * 2**20:
                raise SandboxError(f"the task's inputs exceed the cap of {self.limits.input_mb} MB copied into a "
                                   "job (Limits.input_mb)")
            rel = f"inputs/{len(self.copies):06d}/{path.name}"
            (self.job / rel).parent.mkdir(parents=True)
            shutil.copyfile(real, self.job / rel)
            self.copies[real] = rel
        return f"{self.inside_job}/{self.copies[real]}"


def stage_inputs(requests: Sequence[Request], keys: Iterable[str], job: Path, inside_job: str, limits: Limits,
                 hide: Iterable[str | Path] = ()) -> list[Request]:
    """Copy the files a task's requests name (the condition values under `keys`, `Task.input_keys`) into the job
    folder's `inputs/`, and return the requests with those values pointing at the copies as the child sees them
    (`inside_job`/inputs/<n>/<same file name>). The child is shown these copies and no task data folder, so what
    lies beside an input (a reference image, a target recording) stays on the host. Each source must be a regular
    file outside the folders a sandbox never shows (results, databases, jobs, submissions); the copies together
    are capped at `limits.input_mb`. One copy per distinct file. Raises SandboxError naming the first refused path."""
    keys = tuple(keys)
    copies = _Copies(job, inside_job, limits, hide)
    staged = []
    for request in requests:
        condition = dict(request.condition)
        for key in keys:
            if condition.get(key):  # an optional input may be empty (a TTS item without a prompt)
                condition[key] = copies.path(str(condition[key]), f"request {request.id!r}: its {key}")
        staged.append(dataclasses.replace(request, condition=condition) if keys else request)
    return staged


def stage_settings(settings: dict, keys: Iterable[str], job: Path, inside_job: str, limits: Limits,
                   hide: Iterable[str | Path] = ()) -> dict:
    """The task settings a timing study's child gets: each setting under `keys` (`Task.input_settings`) that names
    a file outside the folders the sandbox shows anyway (code, weights) points at a copy in the job instead (as
    `stage_inputs`); a value that names no file (a bundled model's name, an empty setting) is left as it is."""
    copies = _Copies(job, inside_job, limits, hide)
    view = _view_paths()
    staged = dict(settings)
    for key in keys:
        value = staged.get(key)
        if isinstance(value, str) and value and Path(value).expanduser().is_file():
            real = Path(value).expanduser().resolve()
            if not any(inside(real, v.resolve()) for v in view) or any(inside(real, h) for h in copies.hidden):
                staged[key] = copies.path(value, f"the task's setting {key}")
    return staged


def sandbox_command(level: str, job: Path, argv: list[str], uid: int | None, limits: Limits,
                    hide: Iterable[str | Path] = ()) -> list[str]:
    """The full command line that runs `argv` in the job's sandbox (see the module docstring)."""
    if level == "none":
        return list(argv)
    view = _view_paths()
    outer = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--die-with-parent", "--new-session"]
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            outer += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            outer += ["--ro-bind", name, name]
    tmp_bytes = str(limits.tmp_mb * 2**20)
    dev = ["--dev", "/dev", "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/dev/shm"]
    # /proc, /dev and /tmp first: a visible folder may lie under /tmp (it is bound over the tmpfs below)
    outer += ["--proc", "/proc", *dev, "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp"]
    made: set[Path] = set()
    for path in view:
        for parent in reversed(path.parents):
            if parent != Path("/") and parent not in made and not any(inside(parent, s) for s in map(Path, SYSTEM_DIRS)):
                outer += ["--perms", "0755", "--dir", str(parent)]  # bwrap would make them 0700
                made.add(parent)
        outer += ["--ro-bind", str(path), str(path)]
    for path in hidden_paths(hide):
        if any(inside(path, v) for v in view):
            outer += ["--tmpfs", str(path)]
    outer += ["--bind", str(job), JOB_MOUNT, "--chdir", JOB_MOUNT]
    user_ns = ["--unshare-user", "--uid", str(SANDBOX_UID_INSIDE), "--gid", str(SANDBOX_UID_INSIDE),
               "--disable-userns", "--cap-drop", "ALL"]
    if level == "bubblewrap-userns":
        return [*outer, *user_ns, "--", *argv]
    assert uid is not None
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            "--bounding-set=-all", "--inh-caps=-all"]
    # the inner bwrap re-mounts everything nodev in its user namespace: it needs its own /dev
    inner = ["bwrap", "--bind", "/", "/", *dev, "--chdir", JOB_MOUNT, "--die-with-parent", "--new-session", *user_ns]
    caps = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    return [*outer, *caps, "--", *drop, "--", *inner, "--", *argv]


def child_env(inside_job: str) -> dict[str, str]:
    """The child's whole environment: nothing of the worker's (no database URL, no tokens)."""
    env = _base_env()
    env.update({"HOME": "/tmp", "TMPDIR": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache", "MPLCONFIGDIR": "/tmp/.mpl",
                "ARBENCH_RESULTS": "/tmp/results", "ARBENCH_HOME": str(arbench_home())})
    return env


def _base_env() -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONNOUSERSITE": "1", "LANG": "C.UTF-8"}
    for key in ("PYTHONPATH", "ARBENCH_PLUGINS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _set_limits(limits: Limits, nproc: int | None) -> None:
    """In the forked child before exec (inherited by bwrap, setpriv and everything the adapter starts)."""
    _die_with_parent()
    memory = limits.memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    size = limits.file_size_mb * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    cpu = limits.cpu_seconds or int(limits.wall_seconds) + 60
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def limiter(level: str, limits: Limits):
    """The preexec function for the sandbox's Popen."""
    if level == "bubblewrap":
        nproc = limits.processes  # counted for the job's own fresh uid
    elif os.geteuid() != 0:  # counted for the worker's uid: allow what already runs under it
        nproc = limits.processes + sum(1 for pid in _pids() if _real_uid(pid) == os.getuid())
    else:
        nproc = None  # root ignores RLIMIT_NPROC; without a sandbox there is no process limit
    return lambda: _set_limits(limits, nproc)


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL if the worker dies, so a killed worker leaves no orphan running."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# -- outputs -----------------------------------------------------------------------------------
class TailBuffer(threading.Thread):
    """Drains a pipe and keeps only its last `cap` bytes (a child can print a gigabyte; we keep the end)."""

    def __init__(self, stream, cap: int):
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.chunks: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.total = 0

    def run(self) -> None:
        while True:
            chunk = self.stream.read1(65536) if hasattr(self.stream, "read1") else self.stream.read(65536)
            if not chunk:
                return
            self.total += len(chunk)
            self.chunks.append(chunk)
            self.size += len(chunk)
            while self.size - len(self.chunks[0]) >= self.cap:
                self.size -= len(self.chunks.popleft())

    def text(self, size: int = 2000) -> str:
        data = b"".join(self.chunks)[-min(size, self.cap):]
        text = data.decode("utf-8", errors="replace")
        clean = "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in text).strip()
        return (f"[{self.total} bytes of output; the last {len(data)}]\n" if self.total > len(data) else "") + clean


def harvest(source: Path, target: Path, limits: Limits) -> list[str]:
    """Copy the child's output folder into a trusted one: regular files and folders only, nothing that
    points elsewhere, at most `output_files` files and `output_mb` MB. Raises SandboxError naming the first
    refused entry. Call it only once every process of the job is gone (nothing can change a file after
    it was checked). Returns the relative paths copied."""
    max_bytes, copied, total = limits.output_mb * 2**20, [], 0
    target.mkdir(parents=True)
    stack = [Path(".")]
    while stack:
        rel = stack.pop()
        with os.scandir(source / rel) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = rel / entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    (target / name).mkdir()
                    stack.append(name)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                    raise SandboxError(f"the method's output {name} is {kind}; only regular files are accepted")
                if st.st_nlink != 1:
                    raise SandboxError(f"the method's output {name} is a hard link; only plain files are accepted")
                total += st.st_size
                if len(copied) >= limits.output_files or total > max_bytes:
                    raise SandboxError(f"the method's output exceeds the cap of {limits.output_files} files / "
                                       f"{limits.output_mb} MB")
                _copy_regular(source / name, target / name, st)
                copied.append(str(name))
    return copied


def _copy_regular(src: Path, dst: Path, st: os.stat_result) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        now = os.fstat(fd)
        if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev) or not stat.S_ISREG(now.st_mode):
            raise SandboxError(f"the method's output {src.name} changed while it was copied")
        with os.fdopen(os.dup(fd), "rb") as f, open(dst, "xb") as out:
            left = now.st_size
            while left > 0:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
    finally:
        os.close(fd)
