"""Setting domains (harness/settings.py): declared on each Config, checked at plan time, --set parsed by type."""

from __future__ import annotations

import dataclasses

import pytest

from harness.api import build_config
from harness.errors import ArbenchError
from harness.registry import METHODS, TASKS


@pytest.mark.parametrize("registry", [TASKS, METHODS], ids=["tasks", "methods"])
def test_every_default_lies_in_its_declared_domain_and_is_kept_as_declared(registry):
    for name, cls in registry.items():
        built = build_config(cls.Config, {}, name)
        assert dataclasses.asdict(built) == dataclasses.asdict(cls.Config()), name  # signatures do not move


def test_text_is_parsed_by_the_declared_type():
    task = TASKS.get("decoding-speedup-mini").Config
    config = build_config(task, {"batch_sizes": "1,4", "max_new_tokens": "1e3", "near_tie": "0.5",
                                 "model": "123"}, "t")
    assert config.batch_sizes == (1, 4) and config.max_new_tokens == 1000 and config.near_tie == 0.5
    assert config.model == "123"  # a text setting keeps the text as written
    # one value for a tuple setting is the one-element tuple (the docs' `--set batch_sizes=1`)
    assert build_config(task, {"batch_sizes": "1"}, "t").batch_sizes == (1,)
    with pytest.raises(ArbenchError, match="batch_sizes=0"):
        build_config(task, {"batch_sizes": "0"}, "t")
    imagenet = build_config(TASKS.get("imagenet256-c2i").Config, {"clean_fid": "false", "num_samples": "12000.0",
                                                                  "reference": "1.5"}, "t")
    assert imagenet.clean_fid is False and imagenet.num_samples == 12000 and imagenet.reference == "1.5"
    # values that are already typed (a manifest, Python callers) pass through the same checks
    assert build_config(METHODS.get("ar").Config, {"temperature": 1}, "m").temperature == 1.0


def test_a_subclass_that_only_changes_a_default_keeps_the_domain():
    with pytest.raises(ArbenchError, match="max_new_tokens=0: Input should be greater than or equal to 1"):
        build_config(TASKS.get("decoding-speedup-mini").Config, {"max_new_tokens": "0"}, "t")
    with pytest.raises(ArbenchError, match="latency_sentences=0"):
        build_config(TASKS.get("nat-mini").Config, {"latency_sentences": "0"}, "t")


def test_every_problem_is_named_at_once():
    with pytest.raises(ArbenchError) as info:
        build_config(METHODS.get("speculative").Config, {"k": "2.5", "temperature": "-inf", "top_p": "2"}, "m")
    message = str(info.value)
    assert message.startswith("invalid settings for m: ")
    for part in ("k=2.5: it is an integer setting", "temperature=-inf: it must be a finite number",
                 "top_p=2: Input should be less than or equal to 1"):
        assert part in message


@pytest.mark.parametrize("method, values, expected", [
    ("llamagen-b", {"temperature": "0", "resize": "nearest"},
     ["temperature=0: Input should be greater than 0", "resize=nearest: Input should be 'bicubic', 'bilinear' or 'area'"]),
    ("var-d16", {"cfg_schedule": "constant"}, ["cfg_schedule=constant: Input should be 'linear' (VAR's guidance ramps"]),
    ("mar-b", {"num_iter": "300", "precision": "fp8"}, ["num_iter=300: Input should be less than or equal to 256",
                                                        "precision=fp8: Input should be 'fp16-autocast' or 'fp32'"]),
    # flowar-s only changes cfg's default: it keeps the parent's guidance domain
    ("flowar-s", {"cfg": "0.5", "guidance": "2"}, ["cfg=0.5: Input should be greater than or equal to 1 (1 = no guidance)",
                                                   "guidance=2: Input should be less than or equal to 1"]),
    ("xar-b", {"num_steps": "2"}, ["num_steps=2: Input should be greater than or equal to 3"]),
    ("rar-b", {"randomize_temperature": "0"}, ["randomize_temperature=0: Input should be greater than 0"]),
    ("npp-b", {"top_k": "-1"}, ["top_k=-1: Input should be greater than or equal to 0"]),
    ("llamagen-t2i-xl-256", {"precision": "fp16"}, ["precision=fp16: Input should be 'bf16' or 'fp32'"]),
])
def test_image_generators_declare_their_domains(method, values, expected):
    """Released image generators declare each sampler setting's domain on the Config (not hand-written checks)."""
    with pytest.raises(ArbenchError) as info:
        build_config(METHODS.get(method).Config, values, method)
    for part in expected:
        assert part in str(info.value)
