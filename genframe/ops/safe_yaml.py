"""The one YAML reader for everything genframe reads (specs, sweep files, run folders): safe and bounded.

``yaml.safe_load`` runs no code, but a small file can still exhaust the machine: aliases that
expand to billions of nodes ("billion laughs"), or nesting deep enough to overflow Python's stack.
This reader refuses, with the file and the line, documents larger than ``MAX_BYTES``, nesting
deeper than ``MAX_DEPTH``, more than ``MAX_ALIASES`` aliases, and documents whose aliases would
expand to more than ``MAX_NODES`` nodes. It also refuses a key given twice in one mapping (YAML
would silently keep the later value), naming both lines.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from genframe.errors import SpecError

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 1000
MAX_NODES = 200_000


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: yaml.Mark | None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts depth and aliases while composing, and refuses duplicate keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys given here override those
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor reports it
                break
            if first is not None:
                raise _Refused(f"duplicate key {key!r} (lines {first + 1} and {key_node.start_mark.line + 1}); "
                               "YAML would keep only the later one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: Node) -> int:
    """Nodes the document holds once every alias is expanded, counted without expanding anything."""
    sizes: dict[int, int] = {}
    order: list[Node] = []
    stack: list[Node] = [root]
    while stack:  # children before parents, each node once (aliases share their node)
        node = stack.pop()
        if id(node) in sizes:
            continue
        sizes[id(node)] = 0
        order.append(node)
        if isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            stack.extend(item for pair in node.value for item in pair)
    for node in reversed(order):
        if isinstance(node, SequenceNode):
            children: list[Node] = node.value
        elif isinstance(node, MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            children = []
        sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes[id(child)] for child in children))
    return sizes[id(root)]


def load_yaml(text: str, source: str) -> Any:
    """The data of one YAML document, or a one-line ``SpecError`` naming ``source`` and the line."""
    if len(text) > MAX_BYTES:
        raise SpecError(f"{len(text)} characters; a YAML file genframe reads is at most {MAX_BYTES}", source=source)
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters at once
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise _Refused(f"its aliases expand to more than {MAX_NODES} nodes", node.start_mark)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SpecError(f"{where}invalid YAML: {problem}", source=source) from None
    except RecursionError:  # a structure too deep even for the composer's own bound (cannot normally happen)
        raise SpecError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels", source=source) from None
    finally:
        if loader is not None:
            loader.dispose()
