"""The resolved config as YAML with every field's documentation as comments (``asvd-jax config``).

The comments are the docstrings under the fields in ``_config.py`` (``field_docs``); the
output loads back to the same config, so it can be saved and edited as a preset.
"""

from __future__ import annotations

import dataclasses
import textwrap


def documented_yaml(config, width: int = 96) -> str:
    import yaml

    from asvd_jax.cl._config import field_docs, to_dict

    values = to_dict(config)
    lines = []
    for section in dataclasses.fields(config):
        sub = getattr(config, section.name)
        lines.append(f"{section.name}:")
        lines += _fields(sub, values[section.name], "  ", width)
        lines.append("")
    return "\n".join(lines)


def _fields(obj, values: dict, indent: str, width: int) -> list[str]:
    """``key: value`` lines of a config dataclass, each under its docstring as comments; a
    rank policy (a dataclass value) as ``key:`` / ``  name:`` / its own documented fields."""
    import yaml

    from asvd_jax.cl._config import field_docs

    docs = field_docs(type(obj))
    lines = []
    for f in dataclasses.fields(obj):
        if not f.init or f.name not in values:
            continue
        doc = docs.get(f.name, "")
        for line in textwrap.wrap(doc.replace("``", "`"), width - len(indent) - 2):
            lines.append(f"{indent}# {line}")
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            (name, fields), = values[f.name].items()
            inner = _fields(value, fields, indent + "    ", width)
            lines += [f"{indent}{f.name}:", f"{indent}  {name}:" + ("" if inner else " {}")]
            lines += inner
            continue
        # One key per line in YAML's own quoting: the value dumped inside a one-item flow
        # list, brackets removed (lists stay on the line as [a, b]).
        flow = yaml.safe_dump([values[f.name]], default_flow_style=True, width=10_000).strip()
        lines.append(f"{indent}{f.name}: {flow[1:-1]}")
    return lines
