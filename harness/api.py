"""The contracts every task and method implements (docs/architecture.md).

A **Task** is a protocol: its settings, a deterministic list of `Request`s (identical for every
method, batch size and world size), how generated outputs are stored, how user samples are read
and validated, and how samples are scored into `MetricValue`s.

A **Method** implements one modality protocol (`generate(requests) -> outputs`); the runner shards
the requests, batches them, and hands each batch to the method. Methods seed every request from
`Request.seed`, so their outputs do not depend on how requests were batched.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from harness.errors import ArbenchError, InputError
from harness.inputs import InputCaps
from harness.signature import Signature

if TYPE_CHECKING:
    from harness.metrics.base import MetricValue


@dataclass(frozen=True)
class Request:
    """One thing to generate: a stable id, its seed, and its condition (class label, text, prompt...)."""

    index: int
    id: str
    seed: int
    condition: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.seed < 0:  # NumPy generators refuse negative seeds; refuse them here, before anything runs
            raise InputError(f"request {self.id!r} has seed {self.seed}; seeds must be >= 0 (check --set seed=...).")


@dataclass
class NoSettings:
    """For tasks and methods with nothing to set."""


def build_config(config_cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """Instantiate a settings dataclass from `--set` values, every setting checked against its declared
    domain (`harness.settings`)."""
    from harness.settings import build_settings

    return build_settings(config_cls, values, owner)


@runtime_checkable
class RunContext(Protocol):
    """What a task sees while it runs (`Task.score`, `Task.run`): where to write, which rank it is, logging,
    progress and sharded generation. `harness.runner.RunContext` is the runner's implementation; a test may
    pass any object with these members."""

    device: str
    rank: int
    world_size: int
    is_main: bool
    run_dir: Path
    #: Lines of the run's log (kept in its provenance).
    notes: list[str]
    #: Extra provenance the task records with the run (merged into the stored provenance at the end).
    extra_provenance: dict[str, Any]
    #: Named durations in seconds (e.g. `generate_seconds`), stored with the run.
    timings: dict[str, float]

    def log(self, message: str) -> None:
        """A line for the run's log and the terminal."""

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        """`iterable`, with a progress bar where the run shows one."""

    def artifact(self, name: str) -> Path:
        """A path inside the run's artifact folder (parents created)."""

    def generate_sharded(self, method: "Method", requests: Sequence[Request],
                         write_shard: Callable[[Any, Sequence[Request], Path], None]) -> list[Path]:
        """Generate every request with `method`, shard by shard (resumable); the shard folders in order."""


class Method(ABC):
    """A generator (or translator, TTS system, decoding strategy) that the runner drives.

    Subclasses set `description`, `modality` (the protocol they implement, e.g. "class-to-image"),
    `family` (e.g. "raster-ar", "next-scale", "nat"), and optionally a `Config` dataclass of settings
    that go into the signature.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    family: ClassVar[str] = ""
    #: Bump whenever the method's outputs for the same settings could change (it is in the signature,
    #: so a rerun after such a change never resumes from shards the old code generated).
    version: ClassVar[str] = "1"
    #: Licence of the released weights the method loads where it restricts their use (e.g. non-commercial);
    #: recorded in each run's provenance (`weights_license`) and shown on the board's run page.
    weights_license: ClassVar[str] = ""
    Config: ClassVar[type] = NoSettings
    #: Declared (never inferred) by a method whose `stream(request)` yields its output in chunks as they become
    #: ready (streaming TTS); the TTS tasks then measure first-packet latency and per-chunk RTF
    #: (`harness.timing.measure_stream`).
    streaming: ClassVar[bool] = False

    def __init__(self, config: Any = None, device: str = "cpu"):
        self.config = config if config is not None else self.Config()
        self.device = device

    def stream(self, request: Request) -> Iterator[Any]:
        """Output chunks of one request as they are ready (only for methods that declare `streaming = True`);
        for TTS, (audio chunk, sample rate) pairs whose concatenation is `generate`'s waveform."""
        raise NotImplementedError(f"{self.name or type(self).__name__} does not stream (streaming = False)")

    def settings(self) -> dict[str, Any]:
        """Every setting that can change the outputs (recorded in the signature)."""
        return dataclasses.asdict(self.config)

    def checkpoint_sha256(self) -> str | None:
        """SHA-256 of the weights the method loaded, where it has any."""
        return None

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> Any:
        """Outputs for a batch of requests, in request order, in the task's output format."""


@dataclass(frozen=True)
class SubmissionSpec:
    """What a submission to a task is: declared on the task class (`Task.submission`), never inferred.

    `modality` is what the submitted adapter produces (its `Method.modality` must match), `interface`
    says in one line what its `generate(requests)` takes and returns (docs/submissions.md has an example
    per modality), and `timing_study` tells the worker that the task's own `run()` (timer, baseline and
    method interleaved in one process) runs inside the sandbox and its metrics come back as data,
    instead of samples the worker scores.

    >>> SubmissionSpec("translation", "generate(requests) -> list[str]").timing_study
    False
    """

    modality: str
    interface: str
    timing_study: bool = False


class Task(ABC):
    """A benchmark protocol. Subclasses set the class attributes and implement the abstract methods.

    The default `run()` is the sharded generate-then-score flow (docs/architecture.md, "Data flow");
    tasks whose protocol is different (timing studies) override it.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    modality: ClassVar[str] = ""
    description: ClassVar[str] = ""
    primary_metric: ClassVar[str] = ""
    Config: ClassVar[type] = NoSettings
    #: Limits on the files this protocol reads from users (text size, pixels, audio seconds; harness/inputs.py).
    caps: ClassVar[InputCaps] = InputCaps()
    #: Bundled, offline-capable tasks run in `arbench demo` with these methods.
    offline: ClassVar[bool] = False
    demo_methods: ClassVar[tuple[str, ...]] = ()
    #: What a submission to this task is (None: the task takes none). Every protocol task declares one.
    submission: ClassVar[SubmissionSpec | None] = None
    #: Keys of a request's condition whose values are paths of files the method must open (a control map, a voice
    #: prompt). Declared, never inferred: a submission's worker copies exactly these files into the job and hands
    #: the child the requests with the copies' paths (same file names); the child sees no task data folder, so
    #: what lies beside them (reference images, target recordings) stays on the host. `check_method` must not read
    #: task data (it runs in the sandbox); `requests()` and `signature()` run in the worker.
    input_keys: ClassVar[tuple[str, ...]] = ()
    #: A timing study's settings that name files its `run()` reads inside the sandbox (prompts, models); the worker
    #: copies each that names a file the sandbox does not show anyway (as for `input_keys`).
    input_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def signature(self) -> Signature:
        """The evaluation signature: everything about the protocol and scoring that can change a number.

        Tasks add reference-set ids, feature-network weights hashes, metric versions and
        preprocessing on top of this default.
        """
        sig = Signature().add("task", self.name).add("task_version", self.version)
        sig.update("task", self.settings())
        return sig

    def check_data(self) -> None:
        """Refuse, up front, operator data the task cannot use (`arbench run` calls it before `check_method`; a
        submission's worker reads the data through `requests()`). Nothing by default."""

    def check_method(self, method: Method) -> None:
        """Refuse, up front, a method that does not implement this task's protocol. Reads no task data: it also runs
        in a submission's sandbox, which shows none (`check_data` is the place for that)."""
        if method.modality != self.modality:
            raise ArbenchError(
                f"method {method.name!r} produces {method.modality or 'an undeclared modality'!r}, "
                f"but task {self.name!r} needs {self.modality!r}. Run `arbench methods` to find a matching one."
            )

    @abstractmethod
    def requests(self) -> list[Request]:
        """The protocol's deterministic list of what to generate."""

    # -- storage of generated outputs -----------------------------------------------------------
    @abstractmethod
    def write_shard(self, outputs: Any, requests: Sequence[Request], directory: Path) -> None:
        """Write one shard's outputs into an (empty, temporary) directory."""

    @abstractmethod
    def read_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request]) -> Any:
        """Read all shards back as the samples `score` takes."""

    # -- scoring -------------------------------------------------------------------------------
    def load_samples(self, path: Path) -> Any:
        """Read and validate samples a user already has (for `arbench score`)."""
        raise InputError(f"task {self.name!r} cannot score samples from a path; use `arbench run` with a method.")

    @abstractmethod
    def score(self, samples: Any, ctx: "RunContext") -> list["MetricValue"]:
        """Metric values for validated samples."""

    def run(self, method: Method, ctx: "RunContext") -> list["MetricValue"]:
        """Generate with `method` (sharded, resumable) and score the result."""
        requests = self.requests()
        shard_dirs = ctx.generate_sharded(method, requests, self.write_shard)
        if not ctx.is_main:
            return []
        return self.score_generated(shard_dirs, requests, ctx)

    def score_generated(self, shard_dirs: Sequence[Path], requests: Sequence[Request],
                        ctx: "RunContext") -> list["MetricValue"]:
        """Read generated shards back (the task's loader validates them) and score them; the submission
        worker calls this on the shards a sandboxed child handed back."""
        return self.score(self.read_generated(shard_dirs, requests), ctx)
