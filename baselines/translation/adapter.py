"""Score any translator that maps sentences to sentences: `--set function=package.module:translate`.

The function takes a list of source sentences and returns one translation per sentence, in order
(for example a wrapper around a fairseq, Marian or Hugging Face model). It is imported from the
user's environment, like any plugin; ARBench adds nothing but batching and checks of the output.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

from harness.api import Method, Request
from harness.errors import InputError
from harness.registry import register_method


@dataclass
class SentencesConfig:
    #: "package.module:function", the function mapping list[str] -> list[str].
    function: str = ""
    #: A label for the signature (e.g. a checkpoint name and its decoding settings); it is not interpreted.
    system: str = ""


def load_function(spec: str) -> Callable[[list[str]], list[str]]:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise InputError(f"function={spec!r} is not of the form package.module:function "
                         f"(e.g. --set function=my_mt.wrapper:translate).")
    try:
        target = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import {module_name!r} for function={spec!r} ({exc}); "
                         f"make it importable (pip install it, or add its folder to PYTHONPATH).") from exc
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise InputError(f"{module_name!r} has no attribute {attribute!r} (from function={spec!r}).")
    if not callable(target):
        raise InputError(f"{spec!r} is not callable; give a function that maps list[str] to list[str].")
    return target


@register_method("sentences-translator")
class SentencesTranslator(Method):
    description = "adapter: any function list[str] -> list[str] (set function=module:callable)"
    modality = "translation"
    family = "adapter"
    Config = SentencesConfig

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        if not self.config.function:
            raise InputError("sentences-translator needs --set function=package.module:translate, "
                             "a function that maps a list of source sentences to their translations.")
        self.function = load_function(self.config.function)

    def translate(self, sentences: Sequence[str]) -> list[str]:
        out = self.function(list(sentences))
        if not isinstance(out, (list, tuple)) or len(out) != len(sentences):
            count = len(out) if isinstance(out, (list, tuple)) else type(out).__name__
            raise InputError(f"{self.config.function} returned {count} for {len(sentences)} sentences; "
                             f"it must return a list with one translation per input sentence, in order.")
        for i, line in enumerate(out):
            if not isinstance(line, str):
                raise InputError(f"{self.config.function} returned a {type(line).__name__} for sentence {i}; "
                                 f"translations must be str.")
        return [" ".join(line.split()) for line in out]

    def generate(self, requests: Sequence[Request]) -> list[str]:
        return self.translate([r.condition["source"] for r in requests])
