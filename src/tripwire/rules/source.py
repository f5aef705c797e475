"""Read a YAML rules file into plain data plus the line of every field.

A rules file is read as untrusted text: whatever is wrong with it, from its bytes to its
anchors, is a problem located by line and column, never a traceback or a stall. Limits:
at most `MAX_FILE_BYTES`, strict UTF-8 (a leading UTF-8 byte order mark is allowed),
nesting at most `MAX_DEPTH` deep, at most `MAX_ALIASES` aliases and `MAX_NODES` values
once aliases are expanded, no alias inside its own anchor, plain scalars only (text,
numbers in 64 bits, true/false, null) and text keys.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, Final

import yaml

from tripwire.errors import RuleProblem, RulesError

Path = tuple[str | int, ...]

MAX_FILE_BYTES: Final = 1024 * 1024
MAX_DEPTH: Final = 64
MAX_ALIASES: Final = 1000
MAX_NODES: Final = 100_000
_TOO_LARGE: Final = f"larger than {MAX_FILE_BYTES // 1024} KiB, the most a rules file may be; make it smaller"
_INT64: Final = range(-(2**63), 2**63)
_SCALAR_TAGS: Final = frozenset(f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null"))
_OTHER_BOMS: Final = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}
_SURROGATE = re.compile("[\ud800-\udfff]")

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


def read_rules_file(path: str | FilePath) -> str:
    """The text of the rules file at `path`: at most MAX_FILE_BYTES of strict UTF-8, else RulesError."""
    name = str(path)
    try:
        with open(path, "rb") as handle:  # bounded read: the path may be a pipe or /dev/zero
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RulesError([_problem(name, None, "(file)", f"cannot read: {exc.strerror}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise RulesError([_problem(name, None, "(file)", _TOO_LARGE)])
    return decode_rules(data, name)


def decode_rules(data: bytes, filename: str) -> str:
    """`data` decoded as strict UTF-8 without its byte order mark, else RulesError at the first bad byte."""
    try:
        return data.decode("utf-8-sig")  # strict; drops one leading UTF-8 byte order mark
    except UnicodeDecodeError as exc:
        raise RulesError([decoding_problem(exc, data, filename)]) from None


def decoding_problem(exc: UnicodeDecodeError, data: bytes, filename: str) -> RuleProblem:
    """The problem for `data` that is not UTF-8, at the line and column of its first bad byte."""
    for bom, encoding in _OTHER_BOMS.items():  # none of them is valid UTF-8
        if data.startswith(bom):
            return _problem(filename, 1, "(file)", f"the file is {encoding}; save it as UTF-8")
    line = data.count(b"\n", 0, exc.start) + 1
    start_of_line = data.rfind(b"\n", 0, exc.start) + 1
    column = len(data[start_of_line : exc.start].decode("utf-8", "replace")) + 1
    bad = data[exc.start : exc.end].hex(" ")
    return _problem(filename, line, "(file)", f"column {column}: byte {bad} is not UTF-8; save the file as UTF-8")


def read_source(text: str, filename: str) -> tuple[Source, list[RuleProblem]]:
    """Parse `text`; bad YAML, a value over a limit, a duplicated key or a tag are problems."""
    if len(text) > MAX_FILE_BYTES:
        return Source(filename, None), [_problem(filename, None, "(file)", _TOO_LARGE)]
    try:
        problems = _check_shape(text, filename)
        node = None if problems else yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        return Source(filename, None), [_yaml_problem(exc, text, filename)]
    if problems:
        return Source(filename, None), problems
    if node is None:
        return Source(filename, None, {(): 1}), problems
    source = Source(filename, None)
    source.data = _Builder(source, problems).build(node, (), 0)
    return source, problems


class _Open:
    """A mapping or sequence being read in `_check_shape`: its anchor, size and depth so far."""

    __slots__ = ("anchor", "depth", "nodes")

    def __init__(self, anchor: str | None) -> None:
        self.anchor = anchor
        self.nodes = 1
        self.depth = 1


def _check_shape(text: str, filename: str) -> list[RuleProblem]:
    """One pass over the YAML events, before anything is built: depth, aliases, cycles, size.

    The size of each anchor, aliases expanded, is added up as the events go by, so a
    "billion laughs" file is refused in time linear in its length, never expanded.
    """
    stack: list[_Open] = []
    sizes: dict[str, tuple[int, int]] = {}  # closed anchor -> (values, depth), aliases expanded
    aliases = 0
    total = 0

    def place(nodes: int, depth: int) -> None:
        """Count a finished value of `nodes` values and `depth` levels into the collection around it."""
        if stack:
            stack[-1].nodes += nodes
            stack[-1].depth = max(stack[-1].depth, depth + 1)

    for event in yaml.parse(text, Loader=_Loader):
        problem = None
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            total += 1
            stack.append(_Open(event.anchor))
            if len(stack) > MAX_DEPTH:
                problem = _at(filename, event.start_mark, f"nested more than {MAX_DEPTH} levels deep; flatten it")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            done = stack.pop()
            if done.anchor is not None:
                sizes[done.anchor] = (done.nodes, done.depth)
            place(done.nodes, done.depth)
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = (1, 0)
            place(1, 0)
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            # an undefined alias is left to the composer, which names it
            nodes, depth = sizes.get(event.anchor or "", (1, 0))
            total += nodes
            place(nodes, depth)
            if aliases > MAX_ALIASES:
                problem = _at(filename, event.start_mark, f"more than {MAX_ALIASES} aliases; write the values out")
            elif any(frame.anchor == event.anchor for frame in stack):
                problem = _at(
                    filename,
                    event.start_mark,
                    f"alias *{event.anchor} is inside its own anchor &{event.anchor} (a cycle); "
                    "an alias may only repeat a value that is complete",
                )
            elif len(stack) + depth > MAX_DEPTH:
                message = f"nested more than {MAX_DEPTH} levels deep once *{event.anchor} is expanded; flatten it"
                problem = _at(filename, event.start_mark, message)
        if problem is None and total > MAX_NODES:
            message = f"more than {MAX_NODES:,} values once aliases are expanded; write less"
            problem = _at(filename, event.start_mark, message)
        if problem is not None:
            return [problem]
    return []


class _Builder:
    """Plain data from a composed (and already checked) node graph, with the line of each path."""

    def __init__(self, source: Source, problems: list[RuleProblem]) -> None:
        self.source = source
        self.problems = problems
        self.constructor = yaml.SafeLoader("")

    def problem(self, node: yaml.Node, path: Path, message: str) -> None:
        self.problems.append(_at(self.source.filename, node.start_mark, message, _dotted(path)))

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.source.lines[path] = node.start_mark.line + 1
        if depth > MAX_DEPTH:  # _check_shape refuses this first; kept so no graph can recurse without end
            self.problem(node, path, f"nested more than {MAX_DEPTH} levels deep; flatten it")
            return None
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problem(key_node, path, "merge keys (<<) are not supported; write the keys out")
                continue
            key = self.scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag in _SCALAR_TAGS:
                    self.problem(key_node, path, f"the key {key_node.value} is not text; quote it")
                elif not isinstance(key_node, yaml.ScalarNode):
                    self.problem(key_node, path, "a mapping key must be a plain string")
                continue
            sub = (*path, key)
            if key in out:
                self.problem(key_node, sub, "this key appears twice; keep one")
                continue
            out[key] = self.build(value_node, sub, depth + 1)
            self.source.lines[sub] = key_node.start_mark.line + 1
        return out

    def scalar(self, node: yaml.Node, path: Path) -> Any:
        if node.tag not in _SCALAR_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.problem(node, path, f"the tag {tag} is not supported; use plain text, numbers, true/false or null")
            return None
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, ArithmeticError, LookupError):
            # e.g. `!!int 12x`, an empty `!!int`, or a number of more digits than Python converts (the value is not
            # echoed: the message must not show what may be a secret)
            kind = node.tag.replace("tag:yaml.org,2002:", "")
            hint = {"int": "a whole number in 64 bits", "float": "a number"}.get(kind, kind)
            self.problem(node, path, f"this value is not {hint}")
            return None
        if value.__class__ is int and value not in _INT64:
            self.problem(node, path, "this whole number does not fit in 64 bits; use a smaller one")
            return None
        if isinstance(value, str) and _SURROGATE.search(value):
            self.problem(node, path, "the text holds an unpaired surrogate (such as \\ud800); remove it")
            return None
        return value


def _yaml_problem(exc: yaml.YAMLError, text: str, filename: str) -> RuleProblem:
    mark = getattr(exc, "problem_mark", None)
    reason = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        reason += f" ({context} at line {context_mark.line + 1})"
    elif context:
        reason += f" ({context})"
    if mark is not None:
        return _at(filename, mark, f"not valid YAML: {reason}")
    position = getattr(exc, "position", None)  # a ReaderError: a character YAML does not allow
    if isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        character = getattr(exc, "character", "")
        if isinstance(character, str) and len(character) == 1:
            character = ord(character)
        code = f"#x{character:04x}" if isinstance(character, int) else "a character"
        message = f"column {column}: not valid YAML: {code} is not allowed in YAML text; remove it"
        return _problem(filename, line, "(yaml)", message)
    return _problem(filename, None, "(yaml)", f"not valid YAML: {reason}")


def _at(filename: str, mark: Any, message: str, field: str = "(yaml)") -> RuleProblem:
    """The problem at `mark` (PyYAML's Mark or libyaml's, which the stubs type apart)."""
    if mark is None:
        return _problem(filename, None, field, message)
    return _problem(filename, mark.line + 1, field, f"column {mark.column + 1}: {message}")


def _problem(filename: str, line: int | None, field: str, message: str) -> RuleProblem:
    return RuleProblem(filename, line, None, field, message)


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"
