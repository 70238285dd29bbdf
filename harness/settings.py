"""Settings and their domains: declared once on a task's or method's `Config` dataclass, checked by pydantic.

A `Config` stays a plain dataclass (its fields are the settings, `dataclasses.asdict` is what the signature
records). Its field *types* declare the domain, with the aliases below or any `Annotated[..., Field(...)]`:

    @dataclass
    class MyConfig:
        num_samples: Annotated[int, Field(ge=1, le=100_000)] = 1000   # a protocol cap
        temperature: Temperature = 1.0                                 # finite and >= 0
        dtype: Literal["float16", "float32"] = "float16"               # choices

Every setting is checked when a run is planned (`build_settings`), given or default, with rules that hold
for every field without being declared: an `int` is an integer (`12.5` and `True` are refused, `12.0` is
12), a `float` is finite (`nan`, `inf` are refused), a `str` is text. Cross-field rules (`pr_k` below the
sample count, ...) stay in the dataclass's `__post_init__`, which raises `ValueError` or `InputError`.

Values from `--set` arrive as text and are parsed by the field's declared type: a text field takes the text
as written, any other field takes the Python literal (`1,4` is a tuple, and `1` for a tuple field the tuple `(1,)`;
`None` is None) and then pydantic's
conversion (`"yes"` is True for a bool).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import types
import typing
from typing import Annotated, Any, Literal, Mapping

from pydantic import ConfigDict, Field, ValidationError, create_model

from harness.errors import ArbenchError, InputError

__all__ = ["Field", "Literal", "Annotated", "PositiveInt", "NonNegativeInt", "Seed", "Temperature", "TopP", "TopK", "Probability",
           "NonNegativeFloat", "PositiveFloat", "GuidanceScale", "BatchSizes", "Precision", "build_settings"]

#: Domains that recur across tasks and methods.
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
#: NumPy and torch generators take seeds in [0, 2**63); requests derive `seed * 1_000_003 + i` from it.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
#: 0 = greedy / deterministic where the method says so; softmax temperatures are never negative.
Temperature = Annotated[float, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
#: A softmax temperature that divides logits (0 would divide by zero), a step size, ...
PositiveFloat = Annotated[float, Field(gt=0)]
#: Classifier-free guidance written as uncond + s (cond - uncond): 1 = no guidance, below 1 is extrapolation away
#: from the condition, which no released evaluation uses.
GuidanceScale = Annotated[float, Field(ge=1, description="1 = no guidance")]
#: How a released generator's evaluation arithmetic runs: upstream's float16 autocast (CUDA only) or float32.
Precision = Literal["fp16-autocast", "fp32"]
#: Nucleus sampling keeps the smallest set of tokens with this much mass (1: no truncation).
TopP = Annotated[float, Field(gt=0, le=1)]
#: Top-k sampling (0: no truncation).
TopK = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
#: Batch sizes of a timing sweep, e.g. `--set batch_sizes=1,4`.
BatchSizes = Annotated[tuple[Annotated[int, Field(ge=1, le=4096)], ...], Field(min_length=1)]

#: Rules every field gets without declaring them (see the module docstring).
_MODEL_CONFIG = ConfigDict(allow_inf_nan=False, extra="forbid", validate_default=True,
                           arbitrary_types_allowed=True)


def _base_type(hint: Any) -> Any:
    """`int` for `Annotated[int, ...]`, `int | None`, ...; else the hint itself."""
    if typing.get_origin(hint) is Annotated:
        return _base_type(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else hint
    return hint


@functools.lru_cache(maxsize=None)
def _schema(config_cls: type) -> tuple[type, dict[str, Any]]:
    """A pydantic model with the dataclass's fields, types and defaults, and each field's type hint."""
    hints = typing.get_type_hints(config_cls, include_extras=True)
    # A subclass that only changes a default (`max_new_tokens: int = 32`) keeps its parent's domain.
    for parent in config_cls.__mro__[1:]:
        if dataclasses.is_dataclass(parent):
            for name, hint in typing.get_type_hints(parent, include_extras=True).items():
                if name in hints and typing.get_origin(hints[name]) is not Annotated \
                        and typing.get_origin(hint) is Annotated and hints[name] in (_base_type(hint), typing.get_origin(_base_type(hint))):
                    hints[name] = hint
    definitions: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = Field(default_factory=f.default_factory)  # type: ignore[misc]
        else:
            default = ...
        definitions[f.name] = (hints.get(f.name, Any), default)
    model = create_model(f"{config_cls.__name__}Domain", __config__=_MODEL_CONFIG, **definitions)
    return model, {name: hint for name, (hint, _) in definitions.items()}


def parse_value(raw: Any, hint: Any) -> Any:
    """A `--set` text parsed for a field of type `hint` (other values pass through unchanged)."""
    if not isinstance(raw, str):
        return raw
    base = _base_type(hint)
    if base is str or typing.get_origin(base) is Literal and all(isinstance(a, str) for a in typing.get_args(base)):
        return raw
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw  # pydantic explains what it expected ("nan" and "true" are handled there)
    if typing.get_origin(base) is tuple and not isinstance(value, (tuple, list)):
        return (value,)  # `--set batch_sizes=1` is the one-element tuple, as `1,` would be
    return value


def _describe(error: dict[str, Any], given: Mapping[str, Any], raw: Mapping[str, Any], model: type) -> str:
    name = str(error["loc"][0]) if error["loc"] else "?"
    value = raw.get(name, given.get(name, "its default"))
    shown = value if isinstance(value, str) else repr(value)
    message = error["msg"]
    if error["type"] == "int_from_float":
        message = "it is an integer setting, and this number has a fractional part"
    elif error["type"] == "finite_number":
        message = "it must be a finite number (nan and inf are refused)"
    hint = model.model_fields[name].description if name in model.model_fields else None
    return f"{name}={shown}: {message}" + (f" ({hint})" if hint else "")


def build_settings(config_cls: type, values: Mapping[str, Any], owner: str) -> Any:
    """The `config_cls` instance for `values` (from `--set`, a manifest or Python), every field checked
    against its declared domain; raises ArbenchError naming each bad setting and the rule it breaks."""
    model, hints = _schema(config_cls)
    unknown = [key for key in values if key not in hints]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(hints), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ArbenchError(f"{owner} has no setting {key!r}.{hint} Its settings are: {', '.join(sorted(hints)) or '(none)'}.")
    given = {key: parse_value(raw, hints[key]) for key, raw in values.items()}
    problems = [f"{key}={values[key]}: it is an integer setting; give a number, not {given[key]!r}"
                for key, value in given.items() if isinstance(value, bool) and _base_type(hints[key]) is int]
    try:
        checked = model(**given)
    except ValidationError as exc:
        problems += [_describe(e, given, values, model) for e in exc.errors()]
    if problems:
        raise InputError(f"invalid setting{'s' if len(problems) > 1 else ''} for {owner}: " + "; ".join(problems))
    # Only the given settings are passed on: defaults stay exactly as declared (and so do signatures).
    try:
        return config_cls(**{key: getattr(checked, key) for key in given})
    except (TypeError, ValueError, ArbenchError) as exc:  # cross-field rules in __post_init__
        raise InputError(f"invalid settings for {owner}: {exc}") from exc

