"""Machine templates: one machine definition with parameters, instantiated per machine.

A mapping may define ``templates:``; a machine that says ``template: NAME`` is that
template with its parameters filled in (``with:``), and with whatever else the machine
writes laid over it (mappings merge key by key, everything else replaces)::

    templates:
      press:
        parameters: {prefix: ~, cavities: 1}    # ~: required; otherwise the default
        source: press-line
        work_center: WC-PRESS
        units_per_cycle: "{cavities}"
        counters:
          good: {node: "ns=2;s={prefix}.GoodCount"}
          scrap: {register: "{offset}+2", type: uint32}   # a whole number: "{p}", "{p}+N", "{p}-N"
    machines:
      PRESS-07: {template: press, with: {prefix: Press07, cavities: 4}}

``{machine}`` is always the machine's own name. A template of the gateway's presets
(``gateway.mapping.presets``: euromap77, packml) is used the same way; a template of the
file with the same name wins.

Expansion happens on the plain data before the schema sees it, so every other part of
the gateway knows only machines. What is wrong in a machine that came from a template
is reported at the machine's line, naming the template's line it came from
(``TemplatedDoc``). This module must never guess a parameter, evaluate anything but a
whole number plus or minus a whole number, or change the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.inputfile.errors import FileError, Loc, dotted
from gateway.inputfile.messages import show
from gateway.inputfile.read import YamlDoc

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
NUMBER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\s*(?:([+-])\s*([0-9]+))?\Z")
BUILT_IN = "machine"  # the instance's own name


@dataclass(frozen=True)
class Template:
    """A template's body as written, and where: the mapping's ``templates.NAME`` or a preset file."""

    name: str
    body: dict[str, Any]
    doc: YamlDoc
    at: Loc  # the body's place in ``doc``
    preset: bool = False

    def where(self, rest: Loc) -> str:
        """``template 'press', line 12: templates.press.counters.good.node`` (a preset: its file's name)."""
        line = self.doc.line(self.at + rest)
        path = dotted(self.at + rest)
        what = f"preset '{self.name}', {os.path.basename(self.doc.file)}" if self.preset else f"template '{self.name}',"
        return f"{what} line {line}" + (f": {path}" if path else "")


@dataclass(frozen=True, slots=True)
class TemplatedDoc(YamlDoc):
    """The mapping with its templates expanded: ``data`` has the machines as the schema reads them.

    A problem at a key the machine did not write itself (it came from its template) is
    reported at the machine's line, and the message names the template's line."""

    origins: dict[str, Template] = field(default_factory=dict)  # machine → the template it came from

    def error(self, loc: Loc, message: str, *, name_parent: bool = False) -> FileError:
        template, rest = self._origin(loc)
        if template is None:
            return YamlDoc.error(self, loc, message, name_parent=name_parent)
        line = YamlDoc.line(self, loc[:2] + ("template",))
        return FileError(self.file, line, dotted(loc[:-1] if name_parent else loc),
                         f"{message} (from {template.where(rest[:-1] if name_parent else rest)})")

    def line(self, loc: Loc) -> int:
        template, _ = self._origin(loc)
        return YamlDoc.line(self, loc[:2] + ("template",) if template is not None else loc)

    def _origin(self, loc: Loc) -> tuple[Template | None, Loc]:
        if len(loc) < 3 or loc[0] != "machines" or str(loc[1]) not in self.origins:
            return None, ()
        if YamlDoc.writes(self, loc):
            return None, ()
        return self.origins[str(loc[1])], tuple(loc[2:])


def expand(doc: YamlDoc, presets: Callable[[str], Template | None]) -> tuple[YamlDoc, list[FileError]]:
    """The document with every ``template:`` machine expanded, and what is wrong with them."""
    data = doc.data
    if not isinstance(data, dict) or ("templates" not in data and not _uses_templates(data)):
        return doc, []
    errors: list[FileError] = []
    written = data.get("templates")
    if written is not None and not isinstance(written, dict):
        errors.append(doc.error(("templates",), f"expected a mapping of template names to machines, got {show(written)}"))
        written = {}
    templates: dict[str, Template] = {}
    for name, body in (written or {}).items():
        if not isinstance(body, dict):
            errors.append(doc.error(("templates", name), f"a template is a machine with parameters, got {show(body)}"))
            continue
        templates[str(name)] = Template(str(name), body, doc, ("templates", name))
    machines = data.get("machines")
    origins: dict[str, Template] = {}
    if isinstance(machines, dict):
        out = {}
        for name, machine in machines.items():
            if isinstance(machine, dict) and "template" in machine:
                expanded, template, problems = _instance(doc, str(name), machine, templates, presets)
                errors += problems
                if template is None:
                    continue  # what it would be is unknown: its one error says why
                origins[str(name)] = template
                out[name] = expanded
            else:
                out[name] = machine
        machines = out
    plain = {k: v for k, v in data.items() if k != "templates"}
    if machines is not None:
        plain["machines"] = machines
    return TemplatedDoc(doc.file, doc.tree, plain, doc.unset, origins), errors


def _uses_templates(data: dict) -> bool:
    machines = data.get("machines")
    return isinstance(machines, dict) and any(isinstance(m, dict) and "template" in m for m in machines.values())


def _instance(doc: YamlDoc, name: str, machine: dict, templates: dict[str, Template],
              presets: Callable[[str], Template | None]) -> tuple[Any, Template | None, list[FileError]]:
    at = ("machines", name)
    chosen = machine.get("template")
    template = templates.get(str(chosen)) if isinstance(chosen, str | int) else None
    if template is None and isinstance(chosen, str):
        template = presets(chosen)
    if template is None:
        known = sorted(templates) + [f"{p} (preset)" for p in _preset_names()]
        return _without(machine), None, [doc.error(at + ("template",), (
            f"unknown template {show(chosen)} (defined: {', '.join(known) or 'none'})"))]
    given = machine.get("with", {})
    if not isinstance(given, dict):
        return _without(machine), None, [doc.error(at + ("with",), f"expected a mapping of parameters, got {show(given)}")]
    declared = template.body.get("parameters") or {}
    if not isinstance(declared, dict):
        return _without(machine), None, [template.doc.error(template.at + ("parameters",), (
            "expected a mapping of parameter names to defaults (~ for a required one)"))]
    errors = [doc.error(at + ("with", key), (
        f"template '{template.name}' has no parameter {show(key)} (its parameters: "
        f"{', '.join(map(str, declared)) or 'none'}; {{{BUILT_IN}}} is the machine's name)"))
        for key in given if key not in declared]
    values = {str(k): v for k, v in declared.items() if v is not None}
    values.update({str(k): v for k, v in given.items() if k in declared})
    values[BUILT_IN] = name
    body = {k: v for k, v in template.body.items() if k != "parameters"}
    missing: dict[str, Loc] = {}
    filled = _fill(body, values, (), missing)
    for param, where in missing.items():
        declared_here = param in declared
        what = "needs the parameter" if declared_here else "uses the parameter"
        hint = "" if declared_here else ", which it does not declare under `parameters:`"
        errors.append(doc.error(at + ("template",), (
            f"template '{template.name}' {what} {{{param}}}{hint}; give it under `with:` "
            f"(used at {template.where(where)})")))
    return _merged(filled, _without(machine)), template, errors


def _without(machine: dict) -> dict:
    return {k: v for k, v in machine.items() if k not in ("template", "with")}


def _fill(value: Any, values: dict[str, Any], loc: Loc, missing: dict[str, Loc]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, values, loc + (k,), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values, loc + (i,), missing) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    for param in PLACEHOLDER.findall(value):
        if param not in values:
            missing.setdefault(param, loc)
    if any(p not in values for p in PLACEHOLDER.findall(value)):
        return value
    whole = NUMBER.match(value.strip())
    if whole is not None:
        base = values[whole.group(1)]
        if whole.group(2) is None:
            return base  # "{cavities}" keeps the parameter's own type: 4, not "4"
        if isinstance(base, int) and not isinstance(base, bool):
            offset = int(whole.group(3))
            return base + offset if whole.group(2) == "+" else base - offset
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)


def _merged(base: Any, over: Any) -> Any:
    """``over`` laid over ``base``: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merged(base[key], value) if key in base else value
        return out
    return over


def _preset_names() -> list[str]:
    from gateway.mapping.presets import PRESETS

    return list(PRESETS)


def with_presets(doc: YamlDoc) -> tuple[YamlDoc, list[FileError]]:
    """``expand`` with the gateway's presets: what the mapping loader runs."""
    from gateway.mapping.presets import preset

    return expand(doc, preset)


__all__ = ["Template", "TemplatedDoc", "expand", "with_presets"]
