"""What reaches the sandbox and what comes back out of it, without starting one: manifest paths confined to the
manifest's folder, https-only capped downloads, outputs harvested as plain files only, the log kept by its tail,
the files a task's requests name copied into the job (and nothing beside them), the refusal of adapters where no
sandbox exists, and every task's declared submission interface."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import urllib.response
from email.message import Message
from pathlib import Path

import pytest

from harness.api import Request, SubmissionSpec, Task
from harness.errors import ArbenchError
from harness.isolation import Isolation, Limits, SandboxError, TailBuffer, harvest, stage_inputs, stage_settings
from harness.registry import TASKS
from harness.store import Store
from harness.submissions import get_submission, list_submissions, submit
from harness.weights import DownloadError, _HttpsOnlyRedirects, download
from harness.worker import Worker

SHA = "0" * 64


@pytest.fixture
def store(results_dir) -> Store:
    return Store(f"sqlite:///{results_dir / 'arbench.db'}")


def _manifest(folder: Path, extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.toml"
    path.write_text('task = "toy-gauss"\nmethod = "m:Cls"\nlicense = "MIT"\n' + extra + '\n[submitter]\nname = "M"\n')
    return path


# -- every task declares what a submission to it is -------------------------------------------------
def test_every_registered_task_declares_a_submission_interface():
    for name in TASKS.names():
        spec = TASKS.get(name).submission
        assert isinstance(spec, SubmissionSpec), f"{name} declares no submission"
        assert spec.modality == TASKS.get(name).modality and spec.interface, name
    assert Task.submission is None  # declared, never inferred from the class's methods
    timing = {n for n in TASKS.names() if TASKS.get(n).submission.timing_study}
    assert {"decoding-speedup", "decoding-speedup-mini", "c2i-speedup-digits"} <= timing
    assert not timing & {"geneval", "seed-tts-en", "wmt14-en-de", "nat-mini", "digits-c2i"}


@pytest.mark.parametrize("task", ["geneval", "wmt14-en-de", "iwslt14-de-en", "seed-tts-en", "librispeech-pc",
                                  "decoding-speedup-mini", "c2i-speedup-digits"])
def test_tasks_with_their_own_run_take_submissions(tmp_path, store, task):
    (tmp_path / "adapter").mkdir()
    path = tmp_path / "manifest.toml"
    path.write_text(f'task = "{task}"\nmethod = "m:Cls"\nadapter_path = "adapter"\nlicense = "MIT"\n'
                    '[submitter]\nname = "A"\n')
    assert get_submission(store, submit(store, path))["state"] == "pending"


def test_a_registered_method_of_another_modality_is_refused_up_front(tmp_path, store):
    path = tmp_path / "manifest.toml"
    path.write_text('task = "nat-mini"\nmethod = "toy-sampler"\nlicense = "MIT"\n[submitter]\nname = "A"\n')
    with pytest.raises(ArbenchError, match="produces 'vector', but a submission to 'nat-mini' produces 'translation'"):
        submit(store, path)


# -- manifests are confined ---------------------------------------------------------------------------
@pytest.mark.parametrize("extra,message", [
    (f'[checkpoint]\npath = "../../VICTIM"\nsha256 = "{SHA}"', "must be a relative path inside the manifest's"),
    (f'[checkpoint]\npath = "/etc/passwd"\nsha256 = "{SHA}"', "must be a relative path inside the manifest's"),
    ('adapter_path = "../adapter"', "must be a relative path inside the manifest's"),
    ('adapter_path = "sub/../../adapter"', "must be a relative path inside the manifest's"),
    (f'[checkpoint]\nurl = "file:///etc/passwd"\nsha256 = "{SHA}"', "is not an https:// address"),
    (f'[checkpoint]\nurl = "http://169.254.169.254/x"\nsha256 = "{SHA}"', "is not an https:// address"),
])
def test_manifest_paths_and_urls_that_leave_are_refused_before_anything_is_copied(tmp_path, store, results_dir,
                                                                                 extra, message):
    victim = tmp_path / "VICTIM"
    victim.write_text("untouched")
    path = _manifest(tmp_path / "a" / "b", ('adapter_path = "adapter"\n' if "adapter_path" not in extra else "")
                     + extra)
    (tmp_path / "a" / "b" / "adapter").mkdir()
    with pytest.raises(ArbenchError, match=message):
        submit(store, path)
    assert victim.read_text() == "untouched" and list_submissions(store) == []
    assert not (results_dir / "submissions").exists() or not any((results_dir / "submissions").iterdir())


def test_symlinks_that_leave_the_manifest_folder_are_refused(tmp_path, store, results_dir):
    folder = tmp_path / "bundle"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "secret.txt").symlink_to("/etc/passwd")
    with pytest.raises(ArbenchError, match=r"adapter/secret.txt is a symbolic link that leaves"):
        submit(store, _manifest(folder, 'adapter_path = "adapter"'))
    (folder / "adapter" / "secret.txt").unlink()
    (folder / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    (tmp_path / "elsewhere.safetensors").write_bytes(b"x")
    with pytest.raises(ArbenchError, match="'checkpoint.path': model.safetensors is a symbolic link that leaves"):
        submit(store, _manifest(folder, f'adapter_path = "adapter"\n[checkpoint]\npath = "model.safetensors"\n'
                                        f'sha256 = "{SHA}"'))
    (folder / "adapter" / "pipe").unlink(missing_ok=True)
    os.mkfifo(folder / "adapter" / "pipe")
    with pytest.raises(ArbenchError, match="adapter/pipe is not a regular file or folder"):
        submit(store, _manifest(folder, 'adapter_path = "adapter"'))
    assert list_submissions(store) == []


# -- the downloader --------------------------------------------------------------------------------------
class FakeHttps(urllib.request.HTTPSHandler):
    """Serves fixed bytes for any https URL (no network in tests), through urllib's real opener."""

    body = b""

    def https_open(self, req):
        headers = Message()
        headers["Content-Length"] = str(len(self.body))
        response = urllib.response.addinfourl(io.BytesIO(self.body), headers, req.full_url, 200)
        response.msg = "OK"
        return response


@pytest.fixture
def fake_https(monkeypatch):
    monkeypatch.setattr(urllib.request, "HTTPSHandler", FakeHttps)
    return FakeHttps


def test_download_checks_scheme_size_and_digest_and_names_only_the_expected_digest(tmp_path, fake_https):
    fake_https.body = b"weights" * 100
    good = hashlib.sha256(fake_https.body).hexdigest()
    assert download("https://example.org/w.bin", tmp_path / "w.bin", good, max_bytes=10_000) == good
    assert (tmp_path / "w.bin").read_bytes() == fake_https.body
    for url in ("file:///etc/passwd", "http://example.org/w.bin", "ftp://example.org/w", "data:,x"):
        with pytest.raises(DownloadError, match="only https:// addresses"):
            download(url, tmp_path / "x", None, max_bytes=10_000)
    with pytest.raises(DownloadError, match="over the cap of 100"):
        download("https://example.org/w.bin", tmp_path / "big", None, max_bytes=100)
    with pytest.raises(DownloadError) as info:
        download("https://example.org/w.bin", tmp_path / "bad", "f" * 64, max_bytes=10_000)
    assert "f" * 64 in str(info.value) and good not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]  # no partial files left


def test_redirects_to_other_schemes_are_refused():
    handler = _HttpsOnlyRedirects()
    request = urllib.request.Request("https://example.org/a")
    for target in ("http://example.org/b", "file:///etc/passwd", "ftp://x/y"):
        with pytest.raises(DownloadError, match="refused a redirect"):
            handler.redirect_request(request, None, 302, "Found", {}, target)
    assert handler.redirect_request(request, None, 302, "Found", {}, "https://cdn.example.org/b") is not None


# -- outputs ------------------------------------------------------------------------------------------
def test_harvest_copies_plain_files_and_refuses_links_devices_and_fifos(tmp_path):
    out = tmp_path / "out"
    (out / "shards-64" / "shard-00000").mkdir(parents=True)
    (out / "shards-64" / "shard-00000" / "values.npy").write_bytes(b"123")
    (out / "result.json").write_text("{}")
    assert sorted(harvest(out, tmp_path / "h1", Limits())) == ["result.json", "shards-64/shard-00000/values.npy"]
    assert (tmp_path / "h1" / "shards-64" / "shard-00000" / "values.npy").read_bytes() == b"123"

    (out / "shards-64" / "shard-00000" / "x.txt").symlink_to("/etc/passwd")
    with pytest.raises(SandboxError, match="x.txt is a symbolic link"):
        harvest(out, tmp_path / "h2", Limits())
    (out / "shards-64" / "shard-00000" / "x.txt").unlink()
    os.mkfifo(out / "fifo")
    with pytest.raises(SandboxError, match="fifo is not a regular file"):
        harvest(out, tmp_path / "h3", Limits())
    (out / "fifo").unlink()
    os.link(out / "result.json", out / "hard.json")
    with pytest.raises(SandboxError, match="hard link"):
        harvest(out, tmp_path / "h4", Limits())
    (out / "hard.json").unlink()
    with pytest.raises(SandboxError, match="exceeds the cap of 1 files"):
        harvest(out, tmp_path / "h5", Limits(output_files=1))
    (out / "big").write_bytes(b"x" * (2 * 2**20))
    with pytest.raises(SandboxError, match="exceeds the cap"):
        harvest(out, tmp_path / "h6", Limits(output_mb=1))


# -- inputs -------------------------------------------------------------------------------------------
def test_stage_inputs_copies_exactly_the_named_files_and_rewrites_only_their_paths(tmp_path, results_dir):
    data = tmp_path / "data"
    (data / "control").mkdir(parents=True)
    (data / "image").mkdir()
    (data / "image" / "a.png").write_bytes(b"reference")
    (data / "control" / "a.png").write_bytes(b"control a")
    (data / "control" / "b.png").write_bytes(b"control b")
    requests = [Request(0, "a", 1, {"control": str(data / "control" / "a.png"), "prompt": "x"}),
                Request(1, "b", 2, {"control": str(data / "control" / "b.png"), "prompt": "y"}),
                Request(2, "a2", 3, {"control": str(data / "control" / "a.png"), "prompt": "z"}),
                Request(3, "none", 4, {"control": "", "prompt": "w"})]
    job = tmp_path / "job"
    job.mkdir()
    staged = stage_inputs(requests, ("control",), job, "/job", Limits())
    assert [r.condition["control"] for r in staged] == ["/job/inputs/000000/a.png", "/job/inputs/000001/b.png",
                                                        "/job/inputs/000000/a.png", ""]  # one copy per file
    assert [(r.index, r.id, r.seed, r.condition["prompt"]) for r in staged] == [
        (r.index, r.id, r.seed, r.condition["prompt"]) for r in requests]
    assert sorted(str(p.relative_to(job)) for p in job.rglob("*") if p.is_file()) == [
        "inputs/000000/a.png", "inputs/000001/b.png"]  # nothing beside them (image/ stays on the host)
    assert (job / "inputs" / "000001" / "b.png").read_bytes() == b"control b"
    assert stage_inputs(requests, (), tmp_path / "unused", "/job", Limits()) == requests

    def refused(condition, match, limits=None):
        target = tmp_path / f"job-{len(list(tmp_path.iterdir()))}"
        target.mkdir()
        with pytest.raises(SandboxError, match=match):
            stage_inputs([Request(0, "x", 0, condition)], ("control",), target, "/job", limits or Limits())

    refused({"control": str(data / "control")}, "its control .*control is not a regular file")
    refused({"control": str(data / "missing.png")}, "is not a regular file")
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "run.png").write_bytes(b"stored")
    refused({"control": str(results_dir / "run.png")}, "never shows")
    (data / "control" / "big.png").write_bytes(b"x" * (2 * 2**20))
    refused({"control": str(data / "control" / "big.png")}, "exceed the cap of 1 MB", Limits(input_mb=1))


def test_stage_settings_copies_the_files_a_timing_study_reads_unless_the_sandbox_shows_them(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "weights").mkdir()
    monkeypatch.setenv("ARBENCH_HOME", str(home))
    (home / "data" / "prompts.jsonl").write_text("{}\n")
    (home / "weights" / "target.safetensors").write_bytes(b"w")
    job = tmp_path / "job"
    job.mkdir()
    settings = {"prompts": str(home / "data" / "prompts.jsonl"), "model": str(home / "weights" / "target.safetensors"),
                "draft_model": "bundled-draft", "rounds": 3}
    staged = stage_settings(settings, ("prompts", "model", "draft_model"), job, "/job", Limits())
    assert staged == {**settings, "prompts": "/job/inputs/000000/prompts.jsonl"}
    assert (job / "inputs" / "000000" / "prompts.jsonl").read_text() == "{}\n"


def test_tail_buffer_keeps_only_the_end(tmp_path):
    r, w = os.pipe()
    reader = os.fdopen(r, "rb")
    tail = TailBuffer(reader, cap=1000)
    tail.start()
    with os.fdopen(w, "wb") as writer:
        for i in range(2000):
            writer.write(f"line {i}\n".encode())
    tail.join(timeout=10)
    text = tail.text(200)
    assert text.endswith("line 1999") and "line 10\n" not in text
    assert tail.size <= 1000 + 65536 and tail.total == sum(len(f"line {i}\n") for i in range(2000))
    assert text.startswith(f"[{tail.total} bytes of output; the last 200]")


# -- no sandbox ------------------------------------------------------------------------------------------
def test_without_a_sandbox_adapters_are_refused_unless_the_operator_opts_in(tmp_path, store, capsys):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "m.py").write_text("")
    sub_id = submit(store, _manifest(tmp_path, 'adapter_path = "adapter"'))
    none = Isolation("none", "bubblewrap (bwrap) is not installed")
    assert Worker(store, isolation=none).run(once=True) == 1
    job = get_submission(store, sub_id)
    assert job["state"] == "failed" and "refused: this worker has no sandbox" in job["error"]
    assert "--allow-unsandboxed" in job["error"]
    assert "submitted adapters will be refused" in capsys.readouterr().err
    Worker(store, isolation=none, allow_unsandboxed=True)
    assert "ALLOWED by --allow-unsandboxed" in capsys.readouterr().err
    assert none.summary(Limits()).startswith("isolation: NONE (bubblewrap (bwrap) is not installed)")


def test_worker_stops_after_max_jobs_and_reports_each_outcome(tmp_path, store):
    ids = []
    for i in range(3):  # a checkpoint whose sha256 is wrong fails before any sandbox starts: fast
        folder = tmp_path / f"s{i}"
        (folder / "adapter").mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"not the declared file")
        ids.append(submit(store, _manifest(folder, f'adapter_path = "adapter"\n[checkpoint]\npath = '
                                                   f'"model.safetensors"\nsha256 = "{SHA}"')))
    outcomes = []
    assert Worker(store).run(once=True, max_jobs=2, report=outcomes.append) == 2
    assert [get_submission(store, i)["state"] for i in ids] == ["failed", "failed", "pending"]
    assert [o.submission_id for o in outcomes] == ids[:2]
    assert outcomes[0].line() == (f"{ids[0]}: failed: the checkpoint does not have the manifest's sha256 {SHA}; "
                                  "fix the manifest or upload the intended file")
    assert Worker(store).run(once=True) == 1 and get_submission(store, ids[2])["state"] == "failed"
