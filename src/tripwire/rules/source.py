"""Read a YAML rules file into plain data plus the line of every field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from tripwire.errors import RuleProblem

Path = tuple[str | int, ...]

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type,misc]  # CSafeLoader is untyped when present
    """YAML 1.2 scalars: only true/false are booleans, dates stay strings.

    PyYAML follows YAML 1.1, where `yes`, `no`, `on` and `off` are booleans and
    `2026-03-01` is a date; in a `where` literal both would surprise.
    """


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


@dataclass
class Source:
    """A parsed YAML document with the line of each node, keyed by its path."""

    filename: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def read_source(text: str, filename: str) -> tuple[Source, list[RuleProblem]]:
    """Parse `text`; a YAML syntax error or a duplicated key is reported as a problem."""
    problems: list[RuleProblem] = []
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        problems.append(RuleProblem(filename, line, None, "(yaml)", f"not valid YAML: {reason}"))
        return Source(filename, None), problems
    if node is None:
        return Source(filename, None, {(): 1}), problems
    source = Source(filename, None)
    source.data = _build(node, (), source, problems)
    return source, problems


def _build(node: yaml.Node, path: Path, source: Source, problems: list[RuleProblem]) -> Any:
    source.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if isinstance(key, (dict, list)):
                problems.append(
                    RuleProblem(
                        source.filename,
                        key_node.start_mark.line + 1,
                        None,
                        _dotted(path),
                        "a mapping key must be a plain string",
                    )
                )
                continue
            if key in out:
                problems.append(
                    RuleProblem(
                        source.filename,
                        key_node.start_mark.line + 1,
                        None,
                        _dotted((*path, str(key))),
                        "this key appears twice; keep one",
                    )
                )
                continue
            out[key] = _build(value_node, (*path, str(key)), source, problems)
            source.lines[(*path, str(key))] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), source, problems) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return {} if isinstance(node, yaml.MappingNode) else []
    constructor = yaml.SafeLoader("")
    return constructor.construct_object(node, deep=True)


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"
