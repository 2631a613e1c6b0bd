"""YAML read with its alias expansion bounded: a few hundred bytes of nested aliases ("billion laughs")
describe billions of nodes. PyYAML builds them shared, cheaply, but everything that walks the result
afterwards (comparing two cards, serialising, the Hub's own validation) walks every expansion.

`load_yaml` composes the node graph first, counts the nodes the document has once every alias is followed
(each node's count is computed once, so counting is linear in the graph), and refuses a document past
`MAX_YAML_NODES` or with an alias that contains itself before anything is constructed. Pure: text in.
"""

from __future__ import annotations

import yaml

from bot.core.limits import MAX_YAML_NODES


class YamlTooLarge(yaml.YAMLError):
    """The document's aliases expand past the limit, or refer to themselves."""


def expanded_size(node: yaml.Node, limit: int = MAX_YAML_NODES) -> int:
    """Nodes in the document with every alias followed; YamlTooLarge past `limit` or on a cycle."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        key = id(current)
        if key in sizes and not children_done:
            continue
        children = _children(current)
        if not children_done:
            if key in active:
                raise YamlTooLarge("an alias refers to a node that contains it")
            active.add(key)
            stack.append((current, True))
            for child in children:
                if id(child) in active:
                    raise YamlTooLarge("an alias refers to a node that contains it")
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        active.discard(key)
        total = 1 + sum(sizes[id(child)] for child in children)
        if total > limit:
            raise YamlTooLarge(f"its aliases expand to more than {limit:,} nodes")
        sizes[key] = total
    return sizes[id(node)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml(text: str, limit: int = MAX_YAML_NODES):
    """`yaml.safe_load(text)`, or YamlTooLarge (a yaml.YAMLError) when its alias expansion is past `limit`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, limit)
        return loader.construct_document(node)
    finally:
        loader.dispose()
