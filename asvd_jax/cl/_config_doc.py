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
        docs = field_docs(type(sub))
        lines.append(f"{section.name}:")
        for f in dataclasses.fields(sub):
            doc = docs.get(f.name, "")
            for line in textwrap.wrap(doc.replace("``", "`"), width - 4):
                lines.append(f"  # {line}")
            # One key per line in YAML's own quoting: the value dumped inside a one-item flow
            # list, brackets removed (lists stay on the line as [a, b]).
            flow = yaml.safe_dump([values[section.name][f.name]], default_flow_style=True,
                                  width=10_000).strip()
            lines.append(f"  {f.name}: {flow[1:-1]}")
        lines.append("")
    return "\n".join(lines)
