"""YAML for untrusted text: bounded in size, depth and alias expansion before anything is built."""

from __future__ import annotations

from typing import Any

import yaml

MAX_CONFIG_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 64  # a real config nests 5 deep; PyYAML's composer recurses per level
MAX_YAML_NODES = 100_000  # after aliases are expanded; a real config has a few hundred


class YamlLimitError(yaml.YAMLError):
    """A YAML document that would take unbounded time or memory to load (too deep, or aliases that explode)."""

    def __init__(self, problem: str, mark: object) -> None:  # a yaml Mark (pure-Python or libyaml)
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


def load_yaml_bounded(text: str) -> Any:
    """``yaml.safe_load`` for untrusted text: refuses deep nesting and alias bombs before building anything.

    SafeLoader builds no objects from tags, but it still expands aliases: a few
    hundred bytes of nested aliases ("billion laughs") stand for 10^9 nodes that
    every later walk of the config visits, and a thousand nested ``[`` overflow
    the composer's recursion. So the event stream is checked first (the parser
    is not recursive): nesting depth, and the node count as if every alias were
    copied, computed per anchor without copying anything.
    """
    sizes: dict[str, int] = {}  # anchor -> expanded node count of its node
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, nodes so far)
    total = 0

    def close(anchor: str | None, count: int, mark: object) -> None:
        nonlocal total
        if anchor is not None:
            sizes[anchor] = count
        if stack:
            parent_anchor, parent_count = stack[-1]
            stack[-1] = (parent_anchor, parent_count + count)
        else:
            total += count
        if total + sum(c for _a, c in stack) > MAX_YAML_NODES:
            raise YamlLimitError(f"more than {MAX_YAML_NODES} values once aliases are expanded "
                                 f"(an alias bomb?)", mark)

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        mark = event.start_mark
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_YAML_DEPTH:
                raise YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep", mark)
            stack.append((event.anchor, 1))
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, count = stack.pop()
            close(anchor, count, mark)
        elif isinstance(event, yaml.ScalarEvent):
            close(event.anchor, 1, mark)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                problem = ("an alias refers to its own parent (a cycle)"
                           if any(a == event.anchor for a, _c in stack) else f"unknown alias *{event.anchor}")
                raise YamlLimitError(problem, mark)
            close(None, sizes[event.anchor], mark)
    return yaml.safe_load(text)
