"""The README and docs/*.md stay true to the code: links resolve, every registered task and method is
described, the commands and options they show exist, and their examples parse against the real API."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest

from harness.cli import build_parser, main
from harness.registry import METHODS, TASKS, load_plugins
from harness.submissions import MANIFEST_SCHEMA

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
TICKED = re.compile(r"`([^`]+)`")


def project_names(registry) -> list[str]:
    """Registered names that come with the project (not the test suite's own plugins)."""
    load_plugins()
    return [name for name, cls in registry.items() if cls.__module__.split(".")[0] in ("tasks", "baselines")]


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[2:]  # after the header and its separator


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{doc.name} links to missing files: {broken}"


def is_described(name: str, lines: list[str]) -> bool:
    """Named in code (`name`), in full or in a list's shorthand: `llamagen-l-384`, `-xl-384` describes
    llamagen-xl-384."""
    prefix, _, rest = name.partition("-")
    for line in lines:
        ticked = TICKED.findall(line)
        if name in ticked:
            return True
        if f"-{rest}" in ticked and any(t.startswith(prefix + "-") for t in ticked):
            return True
    return False


@pytest.mark.parametrize("kind,registry", [("task", TASKS), ("method", METHODS)])
def test_every_registered_name_is_described(kind, registry):
    lines = [line for doc in [README, *DOCS] for line in doc.read_text(encoding="utf-8").splitlines()]
    missing = [name for name in project_names(registry) if not is_described(name, lines)]
    assert not missing, f"registered {kind}s described nowhere in README.md or docs/*.md: {missing}"


def readme_command_lines() -> list[list[str]]:
    """`arbench ...` lines of the README's shell blocks, comments stripped."""
    lines = []
    for lang, body in FENCE.findall(README.read_text(encoding="utf-8")):
        for line in body.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("arbench "):
                lines.append(line.split())
    return lines


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_readme_commands_and_options_exist():
    commands = subcommands()
    lines = readme_command_lines()
    assert len(lines) >= 10
    for words in lines:
        command = words[1]
        assert command in commands, f"README shows `arbench {command}`, which is not a command"
        accepted = {s for a in commands[command]._actions for s in a.option_strings}
        for option in (w.strip("[]").split("=")[0] for w in words[2:]):
            if option.startswith("--"):
                assert option in accepted, f"README shows `arbench {command} {option}`, which it does not accept"
    shown = {words[1] for words in lines}
    assert shown | {"cancel", "retry", "reported"} >= set(commands), "a command the README never shows"


def test_common_options_are_accepted_by_run_score_and_demo():
    text = README.read_text(encoding="utf-8")
    sentence = text[text.index("Common options:"):].split("\n\n")[0]
    options = {t.split()[0] for t in TICKED.findall(sentence) if t.startswith("--")}
    assert {"--batch-size", "--device", "--db"} <= options
    commands = subcommands()
    for command in ("run", "score", "demo"):
        accepted = {s for a in commands[command]._actions for s in a.option_strings}
        assert options <= accepted, f"`arbench {command}` lacks {options - accepted}"


def test_task_tables_name_registered_tasks():
    text = README.read_text(encoding="utf-8")
    project_tasks = set(project_names(TASKS))
    offline = {name for name in project_tasks if TASKS.get(name).offline}
    for row in table_rows(section(text, "## Tasks")):
        protocol = [t for t in TICKED.findall(row[0]) if not t.startswith("-")]
        assert protocol and set(protocol) <= project_tasks, row[0]
        variant = TICKED.findall(row[2])
        assert not variant or variant[0] in offline, f"offline variant {variant[0]} is not an offline task"
    demo_rows = table_rows(section(text, "### What the demo measures"))
    assert {TICKED.findall(r[0])[0] for r in demo_rows} == {n for n in offline if TASKS.get(n).demo_methods}
    methods = set(project_names(METHODS))
    for row in demo_rows:
        assert set(TICKED.findall(row[1])) <= methods, row[1]


def test_offline_and_protocol_task_names_in_the_prose_exist():
    text = section(README.read_text(encoding="utf-8"), "### What an offline number is")
    tasks = set(project_names(TASKS))
    named = [t for t in TICKED.findall(text) if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", t)]
    assert named and set(named) <= tasks, set(named) - tasks


def test_plugin_example_uses_the_real_api():
    (code,) = [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == "python"]
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
    decorated = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.decorator_list)
    from harness.api import Method

    for statement in decorated.body:
        if isinstance(statement, ast.FunctionDef):
            assert hasattr(Method, statement.name), f"Method has no {statement.name}"
        elif isinstance(statement, ast.Assign):
            (target,) = statement.targets
            assert hasattr(Method, target.id), f"Method has no class attribute {target.id}"


def test_manifest_example_fits_the_schema():
    (text,) = [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == "toml"]
    manifest = tomllib.loads(text)
    manifest["checkpoint"]["sha256"] = "0" * 64  # the README shows "..." there
    jsonschema.validate(manifest, MANIFEST_SCHEMA)
    assert manifest["task"] in project_names(TASKS)
    task_fields = set(TASKS.get(manifest["task"]).Config.__dataclass_fields__)
    assert set(manifest.get("task_settings", {})) <= task_fields


def test_export_fields_named_in_the_readme_are_exported(results_dir, capsys):
    text = README.read_text(encoding="utf-8")
    paragraph = text[text.index("`arbench export --format json` prints"):].split("\n\n")[0]
    top, _, metric_part = paragraph.partition("`metrics`")
    assert main(["run", "toy-gauss", "toy-sampler", "--set", "num_samples=6", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    for key in [t for t in TICKED.findall(top) if re.fullmatch(r"[a-z_]+", t)] + ["metrics"]:
        assert key in record, f"README names export field {key!r}, which is not exported"
    required, _, optional = metric_part.partition("[")  # bracketed keys: only where a metric has them
    for metric in record["metrics"].values():
        for key in re.findall(r'"(\w+)"', required):
            assert key in metric, f"README names metric field {key!r}, which is not exported"
        assert set(metric) <= set(re.findall(r'"(\w+)"', metric_part)), "an exported metric field the README omits"


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, words) of every `arbench run|score ...` line in the shell blocks of README.md and docs/*.md,
    continuation lines joined and comments stripped."""
    commands = []
    for doc in [README, *DOCS]:
        for _, body in FENCE.findall(doc.read_text(encoding="utf-8")):
            for line in body.replace("\\\n", " ").splitlines():
                words = line.split("#")[0].split()
                if words[:1] == ["arbench"] and words[1:2] in (["run"], ["score"]):
                    commands.append((doc.name, words))
    return commands


def test_documented_run_and_score_commands_use_real_names_and_settings():
    from harness.runner import split_overrides

    commands = documented_commands()
    assert len(commands) >= 20
    checked = 0
    for doc, words in commands:
        command, task, target = words[1], words[2], words[3] if len(words) > 3 else ""
        if task.isupper() or task.startswith("<"):
            continue  # a placeholder (`arbench run TASK METHOD`)
        assert task in TASKS.names(), f"{doc}: `{' '.join(words)}` names no registered task"
        method_cls = None
        if command == "run" and not (target.isupper() or target.startswith("<")):
            assert target in METHODS.names(), f"{doc}: `{' '.join(words)}` names no registered method"
            method_cls = METHODS.get(target)
        pairs = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
        overrides = dict(pair.split("=", 1) for pair in pairs)
        split_overrides(TASKS.get(task), method_cls, overrides)  # raises on a setting that does not exist
        checked += 1
    assert checked >= 15


PROJECT_DIRS = ("harness", "tasks", "baselines", "leaderboard", "benchmarks", "tests", "scripts", "docs")


def test_project_files_and_modules_named_in_the_docs_exist():
    import importlib.util

    missing = []
    for doc in [README, *DOCS]:
        text = doc.read_text(encoding="utf-8")
        for path in re.findall(r"(?<![\w/.-])((?:%s)/[\w/.*-]*[\w*])" % "|".join(PROJECT_DIRS), text):
            if not any(ROOT.glob(path)):
                missing.append(f"{doc.name}: {path}")
        for module in re.findall(r"python -m ((?:%s)[\w.]*)" % "|".join(PROJECT_DIRS), text):
            if importlib.util.find_spec(module) is None:
                missing.append(f"{doc.name}: python -m {module}")
    assert not missing, missing
