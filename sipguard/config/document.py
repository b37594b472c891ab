"""Reading the config file into a YAML document: UTF-8, the safe loader, duplicate keys.

Owns: the file read, YAML syntax errors with line and column (and the hint that an unquoted `*`
starts an alias), duplicate mapping keys (PyYAML would silently keep the last one), the empty
file.

Never does: interpret a key (the section readers do), construct anything but plain YAML types
(the safe loader: no Python tags).
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from sipguard.errors import ConfigError


class _DuplicateKeyLoader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """The safe loader, recording duplicate mapping keys instead of keeping the last silently."""

    duplicates: list[tuple[str, int, int]]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hashable = key in seen
            except TypeError:
                continue  # an unhashable key: the constructor reports it
            if hashable:
                mark = key_node.start_mark
                self.duplicates.append((str(key), mark.line + 1, mark.column + 1))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _read_text(path: str) -> tuple[str, str]:
    """The file's text and the SHA-256 (hex) of its bytes, from one read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return data.decode("utf-8"), hashlib.sha256(data).hexdigest()
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 (byte {exc.start})"]) from None


def parse_yaml(path: str) -> tuple[object, list[str], str]:
    """The document, the problems met reading it (duplicate keys, an empty file) and the
    SHA-256 of the bytes it was read from (the admin API's status shows which file runs);
    raises ConfigError when the file cannot be read or is not YAML."""
    text, digest = _read_text(path)
    loader = _DuplicateKeyLoader(text)
    loader.duplicates = []
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        if "alias" in problem:
            problem += (
                " (an unquoted * starts a YAML alias: quote wildcard entries like '10.*.*.*')"
            )
        raise ConfigError([f"{path}: {where}YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: YAML error: {exc}"]) from None
    finally:
        loader.dispose()
    problems = [
        f"{path}: line {line}, column {column}: duplicate key {key!r}"
        for key, line, column in loader.duplicates
    ]
    if document is None:
        problems.append(f"{path}: the file is empty")
    return document, problems, digest
