"""Config parsing shared by the recipes and the pipeline runner.

Recipes parse with TRL's `TrlParser` (`--config file.yaml` plus CLI overrides), exactly as
`trl/scripts/*.py` do. Before that, the YAML is checked against the stage's dataclasses so that
an unknown key or a wrong type is reported as one line naming the file and the field, rather
than as an argparse dump or a `TypeError` from inside `TrainingArguments.__post_init__`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence, Union

import yaml

from hfllm.errors import ConfigError


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


def build_dataclasses(
    dataclass_types: Sequence[type], values: dict[str, Any], where: str
) -> tuple[Any, ...]:
    """Instantiate each dataclass from the checked `values` (the pipeline runner's path)."""
    out = []
    for dtype in dataclass_types:
        names = {f.name for f in dataclasses.fields(dtype) if f.init}
        try:
            out.append(dtype(**{k: v for k, v in values.items() if k in names}))
        except (ValueError, TypeError) as err:
            raise ConfigError(str(err).splitlines()[0], where=where) from None
    return tuple(out)


def parse_config_file(
    dataclass_types: Sequence[type], path: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """Load `path`, apply `overrides` (e.g. the runner's wiring), check and build the dataclasses."""
    mapping = load_yaml(path)
    env = mapping.pop("env", None) or {}
    if not isinstance(env, dict):
        raise ConfigError("must be a mapping of variable: value", where=str(path), field="env")
    os.environ.update({str(k): str(v) for k, v in env.items()})  # as TrlParser does for recipes
    mapping.update(overrides or {})
    return build_dataclasses(dataclass_types, check_config(mapping, dataclass_types, str(path)), str(path))


def parse_args(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple[Any, ...]:
    """The recipes' parser: `TrlParser.parse_args_and_config` after checking the YAML."""
    from trl import TrlParser

    argv = list(sys.argv[1:] if args is None else args)
    where = "command line"
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path", where=where)
        where = argv[i + 1]
        check_config(load_yaml(where), dataclass_types, where)
    parser = TrlParser(list(dataclass_types))
    try:
        return tuple(parser.parse_args_and_config(argv))
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err).splitlines()[0], where=where) from None


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
