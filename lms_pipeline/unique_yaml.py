"""The YAML loader of the connections file: ``yaml.SafeLoader`` refusing a repeated key (which YAML loaders keep
silently, the last one winning)."""

from __future__ import annotations

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A mapping repeats a key: YAML loaders keep the last one silently (a second ``write_back:`` block would
    replace a ``dry_run: true``), so the file is refused instead."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing duplicate keys, naming the key and both lines. Keys brought in by a merge
    (``<<: *anchor``) may still be overridden: that is what a merge is for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=False)
            line = key_node.start_mark.line + 1
            if not isinstance(key, list | dict) and key in seen:
                raise DuplicateKeyError(f"duplicate key {key!r} at line {line} (first at line {seen[key]}): a "
                                        "repeated key would silently replace the first; keep one")  # fmt: skip
            if not isinstance(key, list | dict):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)
