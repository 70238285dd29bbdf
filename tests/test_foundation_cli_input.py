"""Command-line input found wrong in the README review: each refused with one message, before anything is
stored, and options where the README says they go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_db_option_after_the_command(results_dir, tmp_path, capsys):
    db = tmp_path / "elsewhere.db"
    argv = ["run", "toy-gauss", "toy-sampler", "--set", "num_samples=6", "--no-progress", "--db", f"sqlite:///{db}"]
    assert main(argv) == 0
    assert db.is_file() and not (results_dir / "arbench.db").exists()
    capsys.readouterr()
    assert main(["show", "--db", f"sqlite:///{db}"]) == 0
    assert "toy-gauss" in capsys.readouterr().out
    assert main(["--db", f"sqlite:///{db}", "show"]) == 0  # before the command, as before
    assert "toy-gauss" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["run", "toy-gauss", "toy-sampler", "--device", "foo"], "unknown device 'foo': use --device cpu, cuda"),
    (["run", "toy-gauss", "toy-sampler", "--device", "mps"], "unknown device 'mps'"),
    (["run", "digits-c2i", "digits-pca-gaussian", "--set", "num_samples=0"],
     "num_samples=0: Input should be greater than or equal to 10"),
    (["run", "digits-c2i", "digits-pca-gaussian", "--set", "num_samples=15"], "must be a multiple of num_classes (10)"),
    (["run", "digits-c2i", "digits-pca-gaussian", "--set", "pr_k=0"], "pr_k=0: Input should be greater than or equal to 1"),
    (["run", "digits-c2i", "digits-pca-gaussian", "--set", "is_splits=0"], "is_splits=0: Input should be greater"),
    (["run", "c2i-speedup-digits", "digits-ar-par", "--set", "items=0"], "items=0: Input should be greater"),
    (["run", "c2i-speedup-digits", "digits-ar-par", "--set", "rounds=0"], "rounds=0: Input should be greater"),
    (["run", "c2i-speedup-digits", "digits-ar-par", "--set", "batch_sizes=()"], "batch_sizes=(): Tuple should have at least 1"),
    (["run", "decoding-speedup-mini", "speculative", "--set", "max_new_tokens=0"], "max_new_tokens=0: Input should be"),
    (["run", "decoding-speedup-mini", "speculative", "--set", "batch_sizes=(1,0)"], "batch_sizes=(1,0): Input should be"),
    (["run", "moving-digits-fvd", "moving-digits-pca", "--set", "feature_batch_size=0"],
     "feature_batch_size=0: Input should be greater than or equal to 1"),
    (["run", "espeak-tts-mini", "espeak-ng", "--set", "list_path=/elsewhere/meta.lst"],
     "list_path does not apply"),
    (["run", "digits-c2i", "digits-pca-gaussian", "--set", "seed=-1"], "seed=-1: Input should be greater than or"),
    (["run", "moving-digits-fvd", "moving-digits-pca", "--set", "seed=-1"], "seed=-1: Input should be greater"),
])
def test_bad_run_input_is_refused_before_anything_is_stored(argv, message, results_dir, capsys):
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (results_dir / "arbench.db").exists()


def test_a_corrupt_model_file_is_refused_with_a_message(results_dir, tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a safetensors file")
    argv = ["run", "decoding-speedup-mini", "speculative", "--set", f"model={bad}", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a readable safetensors file" in err and "Traceback" not in err
    assert not (results_dir / "arbench.db").exists()


def test_export_to_a_missing_folder_says_so(results_dir, tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "no-such-folder" / "runs.json")]) == 2
    err = capsys.readouterr().err
    assert "give --out a path in an existing, writable folder" in err and "Traceback" not in err


def test_unknown_database_kind_says_which_urls_work(results_dir, capsys):
    assert main(["--db", "foo://somewhere/x", "show"]) == 2
    err = capsys.readouterr().err
    assert "sqlite:///PATH" in err and "postgresql://" in err and "Traceback" not in err


def test_show_of_a_task_without_runs_says_so(results_dir, capsys):
    assert main(["run", "toy-gauss", "toy-sampler", "--set", "num_samples=6", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["show", "toy-gaus"]) == 0
    assert "no runs of task 'toy-gaus' stored" in capsys.readouterr().out


def test_output_into_a_closed_pipe_stops_without_a_traceback(results_dir):
    reader, writer = os.pipe()
    os.close(reader)  # as `arbench methods | head -1` once head has exited
    proc = subprocess.run([sys.executable, "-m", "harness", "methods"], cwd=ROOT, stdout=writer,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(writer)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


def test_leaderboard_replaces_the_process_with_streamlit(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("os.execve", lambda path, argv, env: calls.append((path, argv, env)))
    assert main(["leaderboard", "--port", "8599", "--db", "sqlite:////tmp/board.db"]) == 0
    ((path, argv, env),) = calls
    assert path == sys.executable and argv[1:4] == ["-m", "streamlit", "run"]
    assert argv[argv.index("--server.port") + 1] == "8599" and env["ARBENCH_DB_URL"] == "sqlite:////tmp/board.db"
    assert argv[argv.index("--client.toolbarMode") + 1] == "viewer"  # no "Deploy" button for visitors
    assert "starting the leaderboard on localhost:8599" in capsys.readouterr().err
