"""Building an :class:`ExperimentConfig`: YAML files and ``--set a.b=v`` overrides, coerced to
the fields' types (errors name the key), the rank policy's ``{name: {field: value}}`` form and
the flat policy keys of older configs (``_legacy_policy``). The config types and their
validation are in ``_config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from typing import Any, Mapping, Sequence

from asvd_jax.cl._config import (
    ConfigError,
    ExperimentConfig,
    MethodConfig,
    _POLICY_TYPES,
    _suggest,
    validate,
)
from asvd_jax.ranks import POLICIES


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked/converted to the field type ``tp``; ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        if len(args) == 1:
            return _coerce(value, args[0], where)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "3e-5" (no dot) as a string: accept it when it parses.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported field type {tp}")


def _replace(obj: Any, changes: Mapping[str, Any], where: str) -> Any:
    if not isinstance(changes, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {changes!r}")
    if isinstance(obj, MethodConfig):
        changes = _legacy_policy(obj, changes, where)
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    kwargs = {}
    for key, value in changes.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            prefix = f"{where}." if where else ""
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = (f" (did you mean {prefix + close[0]!r}?)" if close
                    else f" (valid keys under {where or 'the top level'}: {', '.join(names)})")
            raise ConfigError(f"unknown config key {path!r}{hint}")
        current = getattr(obj, key)
        if isinstance(current, _POLICY_TYPES):
            kwargs[key] = _policy(current, value, path)
        elif dataclasses.is_dataclass(current):
            kwargs[key] = _replace(current, value or {}, path)
        else:
            kwargs[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(obj, **kwargs)


def _policy(current: Any, value: Any, where: str) -> Any:
    """The rank policy after ``value``: a name (that policy, its defaults; the current one if
    it has that name) or ``{name: {field: value}}`` (fields on top of the same)."""
    if isinstance(value, str):
        value = {value: None}
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ConfigError(f"{where}: expected a policy name or {{name: {{field: value}}}} with "
                          f"one name (one of {', '.join(POLICIES)}), got {value!r}")
    (name, fields), = value.items()
    if name not in POLICIES:
        raise ConfigError(f"{where}: {name!r} is not a rank policy" + _suggest(str(name), list(POLICIES)))
    base = current if current.name == name else POLICIES[name]()
    fields = fields or {}
    if not isinstance(fields, Mapping):
        raise ConfigError(f"{where}.{name}: expected a mapping of the policy's fields, got {fields!r}")
    hints = typing.get_type_hints(type(base))
    names = [f.name for f in dataclasses.fields(base) if f.init]
    kwargs = {}
    for key, v in fields.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{where}.{name}.{key}'" + _suggest(str(key), names))
        kwargs[key] = _coerce(v, hints[key], f"{where}.{name}.{key}")
    try:
        return dataclasses.replace(base, **kwargs)
    except (TypeError, ValueError) as e:  # the policy's own validation
        raise ConfigError(f"{where}.{name}: {e}") from None


# The flat policy keys of configs written before rank_policy held the policy (saved run dirs'
# config.yaml), with the defaults they had then.
_LEGACY_POLICY_KEYS = {"mrr": 0.1, "trr": 0.8, "max_fraction": 1.0, "fraction": 0.5, "tau": 0.95}


def _legacy_policy(method: "MethodConfig", changes: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``changes`` with the flat keys folded into ``rank_policy: {name: {...}}``.

    A key the chosen policy has is passed on; one it has not must hold the old default (a
    saved config lists them all), otherwise it is an error naming the key: it would change
    nothing, as it changed nothing before.
    """
    legacy = {k: v for k, v in changes.items() if k in _LEGACY_POLICY_KEYS}
    if not legacy:
        return changes
    prefix = f"{where}." if where else ""
    policy = changes.get("rank_policy", method.rank_policy.name)
    if not isinstance(policy, str):
        raise ConfigError(f"{prefix}{next(iter(legacy))}: a flat policy key beside "
                          f"{prefix}rank_policy: {policy!r}; write it inside rank_policy "
                          f"(e.g. rank_policy: {{budget: {{max_fraction: 0.9}}}})")
    if policy not in POLICIES:
        raise ConfigError(f"{prefix}rank_policy: {policy!r} is not a rank policy"
                          + _suggest(policy, list(POLICIES)))
    own = {f.name for f in dataclasses.fields(POLICIES[policy]) if f.init}
    fields = {}
    for key, value in legacy.items():
        if key in own:
            fields[key] = value
        elif value != _LEGACY_POLICY_KEYS[key]:
            owner = next(n for n, cls in POLICIES.items()
                         if key in {f.name for f in dataclasses.fields(cls)})
            raise ConfigError(f"{prefix}{key}: {value!r} does nothing with rank policy "
                              f"{policy!r}; did you mean {prefix}rank_policy: "
                              f"{{{owner}: {{{key}: {value}}}}}?")
    out = {k: v for k, v in changes.items() if k not in _LEGACY_POLICY_KEYS}
    out["rank_policy"] = {policy: fields}
    return out


def apply_overrides(config: ExperimentConfig, changes: Mapping[str, Any]) -> ExperimentConfig:
    """Nested mapping ``{section: {field: value}}`` applied on top of ``config``."""
    return _replace(config, changes, "")


def parse_override(text: str) -> dict:
    """``"train.lr=3e-5"`` -> ``{"train": {"lr": 3e-05}}`` (value parsed as YAML)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override {text!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from e
    out: dict = value
    for part in reversed(parts):
        out = {part: out}
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = _merge(out[k], v)
        elif not (isinstance(v, str) and isinstance(out.get(k), dict) and list(out[k]) == [v]):
            out[k] = v  # (a policy name after {that name: fields} keeps the fields)
    return out


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Defaults (or ``base``), then the YAML file at ``path``, then ``section.key=value``s."""
    import yaml

    changes: dict = {}
    if path is not None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path!r} does not exist")
        with open(path) as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML ({e})") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        changes = loaded
    # The file first, then each override on its own: an error names its source (the file,
    # or the --set that caused it), never the file for an override's typo.
    try:
        config = apply_overrides(base or ExperimentConfig(), changes)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None
    parsed = []
    for text in overrides:
        try:
            parsed.append((text, parse_override(text)))
        except ConfigError as e:
            raise ConfigError(f"--set {text}: {e}" if str(e).find(repr(text)) < 0 else str(e)) from None
    # All overrides at once, so that the result does not depend on their order (raising mrr
    # above the old trr, then trr, is as valid as the other way round); an error names the
    # last override that set its key.
    merged: dict = {}
    for _, change in parsed:
        merged = _merge(merged, change)
    try:
        return validate(apply_overrides(config, merged))
    except ConfigError as e:
        key = _error_key(str(e))
        culprit = [text for text, change in parsed if any(
            k == key or k.startswith(key + ".") or key.startswith(k + ".")
            or (key.startswith("method.rank_policy") and k.startswith("method.")
                and k.split(".")[-1] in _LEGACY_POLICY_KEYS)
            for k in _dotted_keys(change))]
        source = f"--set {culprit[-1]}" if culprit else path
        raise ConfigError(f"{source}: {e}" if source is not None else str(e)) from None


def _error_key(message: str) -> str:
    """The dotted key a ConfigError is about: its quoted unknown key, else the text before
    the first colon."""
    if message.startswith("unknown config key '"):
        return message.split("'")[1]
    return message.split(":", 1)[0]


def _dotted_keys(change: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in change.items():
        out += _dotted_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out
