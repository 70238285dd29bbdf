"""One submission per modality through the real queue, worker and sandbox, against `arbench run` of the same method:
the same numbers and the same evaluation signature (offline tasks, small settings). Timing studies (decoding
speedup) run their whole protocol inside the sandbox: their timings differ run to run, so only the counted
metrics must match."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.isolation import probe_isolation
from harness.runner import RunOptions, Runner
from harness.store import Store
from harness.submissions import get_submission, submit
from harness.worker import Limits, Worker

pytestmark = pytest.mark.skipif(not probe_isolation().sandboxed,
                                reason=f"needs bubblewrap ({probe_isolation().detail})")


def _submit_and_run(tmp_path: Path, store: Store, task: str, method: str, task_settings: dict,
                    settings: dict, adapter: str | None = None) -> dict:
    lines = [f'task = "{task}"', f'method = "{method}"', 'license = "MIT"', f'label = "{method} (submitted)"',
             *([f'adapter_path = "{adapter}"'] if adapter else []), "[submitter]", 'name = "Author"', "[settings]",
             *[f"{k} = {json.dumps(v)}" for k, v in settings.items()],
             "[task_settings]", *[f"{k} = {json.dumps(v)}" for k, v in task_settings.items()]]
    (tmp_path / "manifest.toml").write_text("\n".join(lines) + "\n")
    sub_id = submit(store, tmp_path / "manifest.toml")
    assert Worker(store, lease_seconds=60, limits=Limits(memory_mb=8192, wall_seconds=600)).run(once=True) == 1
    job = get_submission(store, sub_id)
    assert job["state"] == "finished", job["history"]
    (record,) = [r for r in store.records() if r["run_id"] == job["run_id"]]
    assert record["source"] == "submitted" and "isolation: bubblewrap" in record["provenance"]["isolation"]
    return record


def _adapter(folder: Path, name: str, source: str) -> str:
    """Write an adapter module into folder/adapter/ (what an author uploads), import the same file here and register
    its class as `name` for the direct run; returns the manifest's `module:Class`."""
    import importlib.util

    from harness.registry import register_method

    module = name.replace("-", "_")
    (folder / "adapter").mkdir(parents=True)
    path = folder / "adapter" / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(f"submitted_{module}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    register_method(name)(loaded.Adapter)
    return f"{module}:Adapter"


def _direct(store: Store, task: str, method: str, overrides: dict) -> dict:
    result = Runner(store, RunOptions(progress=False, device="cpu")).run(task, method, overrides)
    (record,) = [r for r in store.records() if r["run_id"] == result.run_id]
    return record


def _same(submitted: dict, direct: dict, names=None) -> None:
    assert submitted["eval_signature"] == direct["eval_signature"]
    names = names or sorted(direct["metrics"])
    assert sorted(submitted["metrics"]) == sorted(direct["metrics"])
    for name in names:
        a, b = submitted["metrics"][name]["value"], direct["metrics"][name]["value"]
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-6, abs=1e-9), name


@pytest.fixture
def store(results_dir) -> Store:
    return Store(f"sqlite:///{results_dir / 'arbench.db'}")


def test_class_to_image(tmp_path, store):
    task, settings = {"num_samples": 100}, {}
    submitted = _submit_and_run(tmp_path, store, "digits-c2i", "digits-pca-gaussian", task, settings)
    _same(submitted, _direct(store, "digits-c2i", "digits-pca-gaussian", {**task, **settings}))


def test_class_to_video(tmp_path, store):
    submitted = _submit_and_run(tmp_path, store, "moving-digits-fvd", "moving-digits-pca", {}, {})
    _same(submitted, _direct(store, "moving-digits-fvd", "moving-digits-pca", {}))


def test_translation(tmp_path, store):
    task, settings = {"bootstrap": 0, "latency": False}, {"iterations": 2}  # latency: see docs/submissions.md
    submitted = _submit_and_run(tmp_path, store, "nat-mini", "cmlm", task, settings)
    _same(submitted, _direct(store, "nat-mini", "cmlm", {**task, **settings}))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_tts(tmp_path, store):
    task = {"rtf_items": 0}
    submitted = _submit_and_run(tmp_path, store, "espeak-tts-mini", "espeak-ng", task, {})
    _same(submitted, _direct(store, "espeak-tts-mini", "espeak-ng", task))


def test_text_to_image(tmp_path, store):
    """The offline GenEval-protocol toy, scored by GenEval's rules with the bundled shapes detector."""
    task = {"images_per_prompt": 1}
    submitted = _submit_and_run(tmp_path, store, "shapes-t2i", "shapes-ar-t2i", task, {})
    _same(submitted, _direct(store, "shapes-t2i", "shapes-ar-t2i", task))
    assert 0 < submitted["metrics"]["compositional_shapes"]["value"] < 1


T2V_ADAPTER = """
    import numpy as np

    from harness.protocols.text_to_video import TextToVideo

    STEP = {"left": (0, -2), "right": (0, 2), "up": (-2, 0), "down": (2, 0)}


    class Adapter(TextToVideo):
        description = "test adapter: a grey square that moves the prompt's way from a seeded start"
        family = "test"

        def generate(self, requests):
            videos = []
            for r in requests:
                c, rng = r.condition, np.random.default_rng(r.seed)
                video = np.zeros((c["num_frames"], c["height"], c["width"], 3), np.uint8)
                dy, dx = next((v for k, v in STEP.items() if k in c["prompt"].split()), (0, 0))
                travel = c["num_frames"] - 1  # start where the whole path stays in the frame
                y = rng.integers(max(0, -dy * travel), c["height"] - 16 - max(0, dy * travel) + 1)
                x = rng.integers(max(0, -dx * travel), c["width"] - 16 - max(0, dx * travel) + 1)
                for t in range(c["num_frames"]):
                    video[t, y + dy * t:y + dy * t + 16, x + dx * t:x + dx * t + 16] = 160 + 10 * (r.seed % 3)
                videos.append(video)
            return np.stack(videos)
"""


def test_text_to_video(tmp_path, store, monkeypatch):
    """An author's adapter (its own module, uploaded as a folder) on the offline text-to-video toy, on its first
    five prompts (25 videos) to stay fast: the worker builds the requests and hands them to the child as data."""
    from tasks.digits_t2v import MovingDigitsT2V

    full = MovingDigitsT2V.suite
    monkeypatch.setattr(MovingDigitsT2V, "suite", lambda self: (lambda records: (records, {
        r["prompt_en"] for r in records}))(full(self)[0][:5]))
    method = _adapter(tmp_path, "moving-squares-t2v", T2V_ADAPTER)
    submitted = _submit_and_run(tmp_path, store, "moving-digits-t2v-mini", method, {}, {}, adapter="adapter")
    _same(submitted, _direct(store, "moving-digits-t2v-mini", "moving-squares-t2v", {}))
    assert submitted["metrics"]["motion_direction"]["value"] > 0.5  # the squares move as asked


CONTROL_ADAPTER = """
    import os

    import numpy as np
    from PIL import Image

    from harness.api import Method


    class Adapter(Method):
        description = "test adapter: the control map it was given, in a seeded colour"
        family = "test"
        modality = "controllable-text-to-image"

        def generate(self, requests):
            if os.getuid() == 65534:  # in the sandbox: the data folder (its image/ is the FID reference) is not there
                home = os.environ["ARBENCH_HOME"]
                for hidden in ("@DATA@/image/000000.png", "@DATA@", home + "/data", home + "/secret"):
                    if os.path.exists(hidden):
                        raise RuntimeError(f"the sandbox shows {hidden}")
                if not all(r.condition["control"].startswith("/job/inputs/") for r in requests):
                    raise RuntimeError("a control map is not a copy in the job")
            images = []
            for r in requests:
                with Image.open(r.condition["control"]) as control:  # a copy of the control map (same file name)
                    edges = np.asarray(control.convert("L")) > 127
                colour = np.random.default_rng(r.seed).integers(64, 256, 3).astype(np.uint8)
                images.append(np.where(edges[..., None], colour, np.uint8(0)))
            return np.stack(images).astype(np.uint8)
"""


def _control_data(folder: Path, n: int = 3, size: int = 32) -> None:
    """A tiny MultiGen-style canny folder (tests/test_controlar_multigen.py's layout): block pictures (`image/`, the
    validation images a method must not see), their edges (`control/`)."""
    from PIL import Image

    from harness.features.control_maps import canny

    rng = np.random.default_rng(3)
    (folder / "control").mkdir(parents=True)
    (folder / "image").mkdir()
    rows = []
    for i in range(n):
        picture = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        Image.fromarray(canny(picture)).save(folder / "control" / f"{i:06d}.png")
        Image.fromarray(picture).save(folder / "image" / f"{i:06d}.png")
        rows.append({"id": f"{i:06d}", "prompt": f"blocks {i}", "control": f"control/{i:06d}.png"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("where", ["data/controlar-multigen/canny", "controlar-canny"])
def test_controllable_text_to_image(tmp_path, store, monkeypatch, where):
    """Requests name control images by path (`Task.input_keys`). The worker copies each into the job and the child
    gets the requests with the copies' paths; it sees no data folder, whether the default under $ARBENCH_HOME/data or
    another under $ARBENCH_HOME: the adapter reads each control, finds the validation images (the FID reference)
    absent, and its images score as `arbench run`'s."""
    home_dir = tmp_path / "home"
    data = home_dir / where
    _control_data(data)
    monkeypatch.setenv("ARBENCH_HOME", str(home_dir))
    (home_dir / "secret").mkdir()
    (home_dir / "secret" / "key.txt").write_text("operator only")
    method = _adapter(tmp_path / "bundle", "control-echo", CONTROL_ADAPTER.replace("@DATA@", str(data)))
    task = {"image_size": 32, "fid": False, "clip_score": False}
    if not where.startswith("data/"):  # the default folder needs no setting
        task["data"] = str(data)
    submitted = _submit_and_run(tmp_path / "bundle", store, "controlar-multigen-canny", method, task, {},
                                adapter="adapter")
    direct = _direct(store, "controlar-multigen-canny", "control-echo", task)
    _same(submitted, direct)
    # the adapter drew the controls it read (Canny finds the two sides of each drawn line); a blank image scores 0
    assert submitted["metrics"]["canny_f1"]["value"] > 0.02


SNOOP_TTS_ADAPTER = """
    import os

    from harness.api import Method


    class Adapter(Method):
        description = "test adapter: looks for the references it is scored against, and reports what it finds"
        family = "test"
        modality = "tts"

        def generate(self, requests):
            seen = []
            for r in requests:  # the voice prompts it needs: readable copies
                with open(r.condition["prompt_wav"], "rb") as f:
                    seen.append(f"{r.id}:{os.path.basename(r.condition['prompt_wav'])}:{len(f.read())}")
            found = [p for p in @SECRETS@ if os.path.exists(p)]
            raise RuntimeError(f"SNOOP prompts {' '.join(seen)} found {found}")
"""


def test_references_are_not_in_the_sandbox(tmp_path, store, monkeypatch):
    """Seed-TTS-eval under $ARBENCH_HOME/data (voice prompts, target recordings) and a translation reference beside
    it: a submitted TTS adapter reads each voice prompt it is given (a copy, same file name and bytes) and finds
    neither a target recording, nor the test set's folder, nor the reference file, nor $ARBENCH_HOME/data."""
    import soundfile as sf

    home_dir = tmp_path / "home"
    en = home_dir / "data" / "seed-tts-eval" / "en"
    (en / "prompt-wavs").mkdir(parents=True)
    (en / "wavs").mkdir()
    lines = []
    for i in range(2):
        sf.write(en / "prompt-wavs" / f"p{i}.wav", np.full(800 + i, 0.1, np.float32), 16000)
        sf.write(en / "wavs" / f"u{i}.wav", np.full(1600, 0.2, np.float32), 16000)  # the target recording
        lines.append(f"u{i}|prompt text {i}|prompt-wavs/p{i}.wav|target text {i}|wavs/u{i}.wav")
    (en / "meta.lst").write_text("\n".join(lines) + "\n")
    reference = home_dir / "data" / "wmt14" / "newstest2014-deen-ref.en"
    reference.parent.mkdir(parents=True)
    reference.write_text("the answer\n")
    monkeypatch.setenv("ARBENCH_HOME", str(home_dir))
    secrets = [str(en / "wavs" / "u0.wav"), str(en / "meta.lst"), str(en), str(reference), str(home_dir / "data")]
    method = _adapter(tmp_path / "bundle", "snoop-tts", SNOOP_TTS_ADAPTER.replace("@SECRETS@", repr(secrets)))
    (tmp_path / "bundle" / "manifest.toml").write_text(
        f'task = "seed-tts-en"\nmethod = "{method}"\nlicense = "MIT"\nlabel = "snoop"\nadapter_path = "adapter"\n'
        '[submitter]\nname = "Author"\n[task_settings]\nrtf_items = 0\n')
    sub_id = submit(store, tmp_path / "bundle" / "manifest.toml")
    assert Worker(store, lease_seconds=60, limits=Limits(memory_mb=8192, wall_seconds=600)).run(once=True) == 1
    job = get_submission(store, sub_id)
    assert job["state"] == "failed"  # the adapter raises with its report (the log's tail goes into the error)
    expected = [f"u{i}:p{i}.wav:{(en / 'prompt-wavs' / f'p{i}.wav').stat().st_size}" for i in range(2)]
    assert f"SNOOP prompts {' '.join(expected)} found []" in job["error"], job["error"]


def test_decoding_speedup_timing_study(tmp_path, store):
    task = {"max_prompts": 4, "max_new_tokens": 16, "batch_sizes": [1], "rounds": 1, "warmup": 0}
    settings = {"k": 3}
    submitted = _submit_and_run(tmp_path, store, "decoding-speedup-mini", "speculative", task, settings)
    direct = _direct(store, "decoding-speedup-mini", "speculative", {**task, **settings})
    counted = ["generated_tokens", "exact_match_rate", "forward_passes_per_token", "draft_passes_per_token",
               "mean_accepted_tokens"]
    _same(submitted, direct, counted)
    assert "timing study" in submitted["provenance"]["measured_in_sandbox"]
    assert submitted["metrics"]["speedup"]["value"] > 0


def test_ucf101_task_reaches_the_sandbox(tmp_path, monkeypatch):
    """A UCF-101 FVD protocol, its copy at the default $ARBENCH_HOME/datasets/ucf101: the child builds the task and
    its requests (`harness.sandbox.build`) in a real sandbox, without seeing the UCF-101 videos (a generator must
    not be able to copy the real clips its FVD is measured against). The full 2,048-video run is too large here;
    scoring is the worker's, as in the tests above."""
    import subprocess
    import sys

    from harness.isolation import child_env, make_job_dir, pick_uid, sandbox_command
    from test_video_task import make_fake_ucf

    home_dir = tmp_path / "home"
    (home_dir / "datasets").mkdir(parents=True)
    (make_fake_ucf(home_dir / "datasets", official_class_list=True)).rename(home_dir / "datasets" / "ucf101")
    monkeypatch.setenv("ARBENCH_HOME", str(home_dir))
    job = make_job_dir()
    try:
        spec = {"task": "ucf101-fvd2048-16f-128", "method": "moving-digits-pca", "settings": {}, "task_settings": {}}
        (job / "spec.json").write_text(json.dumps(spec))
        (job / "spec.json").chmod(0o644)
        level = probe_isolation().level
        uid = pick_uid() if level == "bubblewrap" else None
        code = ("import json, os; from pathlib import Path; from harness.sandbox import build; "
                "task, _ = build(json.load(open('/job/spec.json')), Path('/job')); "
                "home = Path(os.environ['ARBENCH_HOME']) / 'datasets' / 'ucf101'; "
                "print(len(task.requests()), (home / 'UCF-101').exists())")
        command = sandbox_command(level, job, [sys.executable, "-c", code], uid, Limits())
        done = subprocess.run(command, env=child_env("/job"), capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2048", "False"]
