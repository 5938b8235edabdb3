"""Config parsing: one path for the recipes and the pipeline runner, so that a config one accepts
the other accepts too.

Both build a stage's dataclasses with TRL's `TrlParser` (`--config file.yaml` plus command-line
overrides, exactly as `trl/scripts/*.py` do; the runner's wiring enters as overrides). Before that,
the YAML is checked against the dataclasses so that an unknown key or a wrong type is one line
naming the file and the field, rather than an argparse dump or a `TypeError` from inside
`TrainingArguments.__post_init__`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from hfllm.errors import ConfigError
from hfllm.precision import CHOSEN_BY_ATTRIBUTE, cpu_only, precision_flags


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, a syntax error or a non-mapping is a `ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config ({err.strerror})", where=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"invalid YAML ({getattr(err, 'problem', err)})", where=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping of field: value", where=str(path))
    return data


def dataclass_fields(dataclass_types: Iterable[type]) -> dict[str, Any]:
    """{field name: resolved type} over the dataclasses (string annotations resolved)."""
    fields: dict[str, Any] = {}
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            if f.init:
                fields.setdefault(f.name, hints.get(f.name, f.type))
    return fields


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any) -> Any:
    """Return `value` converted to `tp`, or raise `TypeError` with what was expected."""
    if tp is Any or tp is typing.Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except TypeError:
                continue
        raise TypeError(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in args:
            return value
        raise TypeError("one of " + ", ".join(repr(a) for a in args))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            tp(value)
        except ValueError:
            raise TypeError("one of " + ", ".join(repr(m.value) for m in tp)) from None
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError("a string")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError("a list")
        inner = args[0] if args else Any
        return [_coerce(v, inner) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise TypeError("a mapping")
        return value
    return value


def check_config(
    mapping: dict[str, Any], dataclass_types: Sequence[type], where: str
) -> dict[str, Any]:
    """Check keys and value types of `mapping` against the dataclasses; return coerced values."""
    fields = dataclass_fields(dataclass_types)
    checked: dict[str, Any] = {}
    for key, value in mapping.items():
        if key == "env":  # TrlParser's own key: environment variables to set
            checked[key] = value
            continue
        if key == "hub_token":  # the Trainer would pickle it into training_args.bin, which it uploads
            raise ConfigError("a token never goes in a config or on a command line: set HF_TOKEN or run "
                              "`hf auth login`", where=where, field=key)
        if key not in fields:
            close = [k for k in fields if k.startswith(str(key)[:4])][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown key{hint}", where=where, field=str(key))
        try:
            checked[key] = _coerce(value, fields[key])
        except TypeError as err:
            raise ConfigError(
                f"expected {err}, got {type(value).__name__} {value!r}", where=where, field=key
            ) from None
    return checked


def _said(key: str, values: dict[str, Any], argv: Sequence[str]) -> bool:
    """Whether the YAML, the wiring or the command line set `key` (not left at its default)."""
    return key in values or any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv)


def _precision_defaults(dataclass_types: Sequence[type], values: dict[str, Any],
                        argv: Sequence[str]) -> dict[str, Any]:
    """The precision rule for TRL's configs (hfllm.precision): nothing said → auto; an explicit bf16
    on a machine without a GPU also needs `use_cpu`. Configs with hfllm's own `precision` field
    (pretraining) apply the same rule in their `__post_init__`."""
    from transformers import TrainingArguments

    if not any(issubclass(t, TrainingArguments) and "precision" not in {f.name for f in dataclasses.fields(t)}
               for t in dataclass_types):
        return {}
    if not (_said("bf16", values, argv) or _said("fp16", values, argv)):
        return precision_flags("auto")
    if cpu_only() and not _said("use_cpu", values, argv):
        return {"use_cpu": True}
    return {}


def _preemption_defaults(dataclass_types: Sequence[type], values: dict[str, Any],
                         argv: Sequence[str]) -> dict[str, Any]:
    """Saving on SIGTERM on by default for TRL's configs too (TRL and transformers leave
    `enable_jit_checkpoint` off; hfllm's own configs turn it on through `faults.PreemptionArguments`):
    a pre-empted SFT, reward or DPO run keeps its last steps as pretraining does."""
    from transformers import TrainingArguments

    from hfllm.faults import PreemptionArguments

    if _said("enable_jit_checkpoint", values, argv) or not any(
            issubclass(t, TrainingArguments) and not issubclass(t, PreemptionArguments) for t in dataclass_types):
        return {}
    return {"enable_jit_checkpoint": True}


def _trl_parser(dataclass_types: Sequence[type], config_where: str):
    """TRL's `TrlParser` whose argparse errors (an unknown flag, a bad value) are one-line
    `ConfigError`s naming the command line or, for a value the YAML set, the config file. Imported
    here: TRL is slow to import and `hfllm plan` never parses a config."""
    from trl import TrlParser

    class OneLineErrorParser(TrlParser):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.argv: list[str] = []

        def error(self, message: str):
            flag = re.match(r"argument (--[\w-]+)", message)
            from_argv = message.startswith("unrecognized arguments") or (
                flag is not None and any(a.split("=", 1)[0] == flag.group(1) for a in self.argv))
            raise ConfigError(message, where="command line" if from_argv else config_where)

    return OneLineErrorParser(list(dataclass_types))


def parse_config(
    dataclass_types: Sequence[type],
    config_path: str | Path | None = None,
    argv: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """The one way a stage's dataclasses are built, by the recipes and the pipeline runner alike.

    The YAML at `config_path` is checked against the dataclasses (unknown key, wrong type: one
    line naming the file and field), `overrides` (the runner's wiring) replace its values, the
    precision rule fills in what nobody said, and TRL's `TrlParser` builds the dataclasses with
    those as defaults and `argv` (the recipe's command line) on top — what `trl/scripts/*.py`
    do with `parse_args_and_config`.
    """
    where = str(config_path) if config_path is not None else "command line"
    values: dict[str, Any] = {}
    if config_path is not None:
        values = load_yaml(config_path)
        env = values.pop("env", None) or {}
        if not isinstance(env, dict):
            raise ConfigError("must be a mapping of variable: value", where=where, field="env")
        os.environ.update({str(k): str(v) for k, v in env.items()})  # as TrlParser does
        values = check_config(values, dataclass_types, where)
    values.update(check_config(overrides or {}, dataclass_types, where))
    if _said("hub_token", {}, argv):
        check_config({"hub_token": None}, dataclass_types, "command line")
    filled_in = {k: v for k, v in {**_precision_defaults(dataclass_types, values, argv),
                                   **_preemption_defaults(dataclass_types, values, argv)}.items()
                 if not _said(k, values, argv)}  # what the user said stays theirs
    parser = _trl_parser(dataclass_types, where)
    parser.argv = list(argv)
    parser.set_defaults_with_config(**values, **filled_in)
    try:
        parsed = tuple(parser.parse_args_into_dataclasses(args=list(argv)))
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err).splitlines()[0], where=where) from None
    if "bf16" in filled_in:
        for obj in parsed:
            if hasattr(obj, "bf16"):
                setattr(obj, CHOSEN_BY_ATTRIBUTE, "auto")
    return parsed


def parse_args(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple[Any, ...]:
    """The recipes' parser: `--config file.yaml` plus command-line overrides, as TRL's scripts."""
    argv = list(sys.argv[1:] if args is None else args)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path", where="command line")
        config_path = argv[i + 1]
        del argv[i:i + 2]
    return parse_config(dataclass_types, config_path, argv)


def to_dict(*objs: Any) -> dict[str, Any]:
    """A JSON-able view of config dataclasses, for manifests and fingerprints."""
    out: dict[str, Any] = {}
    for obj in objs:
        if hasattr(obj, "to_dict"):  # TrainingArguments hides tokens and serialises enums
            out.update(obj.to_dict())
            continue
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            out[f.name] = v.value if isinstance(v, enum.Enum) else v
    return out
