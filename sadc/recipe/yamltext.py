"""YAML text -> plain data, strictly: no duplicate keys, no alias expansion past a bound.

PyYAML's ``safe_load`` keeps the last of two equal keys (a second ``train:`` block
silently replaces the first) and expands aliases without limit (a "billion laughs"
document of a few hundred bytes becomes gigabytes once validated or printed). Both are
checked here on the composed node graph, before any Python object is built.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_VALUES = 100_000
"""Most values (keys, scalars, sections, lists) a recipe may expand to; real ones have a few hundred."""

_MERGE_TAG = "tag:yaml.org,2002:merge"

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 3
_short.maxlevel = 2


def short_repr(value: Any) -> str:
    """``repr(value)`` abbreviated to a few dozen characters (``[[1, 1, ...], ...]``): safe for any size."""
    return _short.repr(value)


class YamlLimitError(yaml.YAMLError):
    """A duplicate key, a self-referencing alias or a document past :data:`MAX_VALUES`; ``str`` is one line."""


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def check_node(root: Node, limit: int = MAX_VALUES) -> int:
    """The number of values ``root`` expands to (aliases counted at every use); raises :class:`YamlLimitError`.

    Each distinct node is walked once (sizes are memoised), so a document built to
    explode costs time in its own length, not in its expansion.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def walk(node: Node, path: str) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlLimitError(
                f"{path or 'the document'} at line {_line(node)} refers to itself (an alias inside its own anchor)"
            )
        active.add(key)
        total = 1
        if isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for k, v in node.value:
                name = k.value if isinstance(k, ScalarNode) else None
                if name is not None and k.tag != _MERGE_TAG:
                    dotted = f"{path}.{name}" if path else str(name)
                    if name in first:
                        raise YamlLimitError(
                            f"duplicate key {short_repr(dotted)[1:-1]} at lines {first[name]} and {_line(k)}; "
                            "keep one (merge the two into one block)"
                        )
                    first[name] = _line(k)
                else:
                    dotted = path
                total += walk(k, path) + walk(v, dotted)
                if total > limit:
                    break
        elif isinstance(node, SequenceNode):
            for i, v in enumerate(node.value):
                total += walk(v, f"{path}[{i}]")
                if total > limit:
                    break
        if total > limit:
            raise YamlLimitError(
                f"{path or 'the document'} expands to more than {limit:,} values (through YAML aliases "
                f"&anchor / *alias from line {_line(node)}); a recipe is a few dozen keys and short lists"
            )
        active.discard(key)
        sizes[key] = total
        return total

    return walk(root, "")


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that runs :func:`check_node` on each document before constructing it."""

    def construct_document(self, node: Node) -> Any:
        check_node(node)
        return super().construct_document(node)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` with the checks above; raises ``yaml.YAMLError`` (incl. :class:`YamlLimitError`)."""
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
