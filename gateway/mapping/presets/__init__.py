"""The gateway's presets: machine templates for standard machine interfaces.

One YAML file per preset in this folder, each a template as a mapping's ``templates:``
holds them (see ``gateway.mapping.templates``): ``euromap77`` (injection moulding,
OPC 40077) and ``packml`` (PackTags, OPC 30050). A machine uses one with
``template: euromap77`` and ``with: {prefix: …}``; anything it writes itself is laid
over the preset. This module only finds and reads the files; it must never change them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from gateway.inputfile.read import read_yaml

FOLDER = Path(__file__).parent
PRESETS = tuple(sorted(p.stem for p in FOLDER.glob("*.yaml")))


@cache
def preset(name: str):  # noqa: ANN201 - a Template; imported late, templates imports this module
    """The preset ``name`` as a template, or None if the gateway has none of that name."""
    from gateway.mapping.templates import Template

    if name not in PRESETS:
        return None
    doc, errors = read_yaml(FOLDER / f"{name}.yaml")
    if doc is None or errors or not isinstance(doc.data, dict):  # a broken shipped file is a bug
        raise RuntimeError(f"preset {name} cannot be read: {'; '.join(map(str, errors))}")
    return Template(name, doc.data, doc, (), preset=True)
