"""Core is the contract: no string in megafc.core names a specific plugin, so every plugin,
built in or third party, is reached only through the registry and the declared hooks."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from megafc.core import DatasetInputs
from megafc.core.registry import build_registry

CORE = Path(__file__).resolve().parents[1] / "core"

#: Plugin names that are also core's own words, each with why it is not a plugin reference.
NOT_PLUGIN_REFERENCES = {
    "none": "core's own config value derivatives=none",
    **{f.name: "a field of the DatasetInputs data model" for f in dataclasses.fields(DatasetInputs)},
}


def naming(text: str, name: str) -> bool:
    """The string is the name, or uses it as a config value (``=name``) or quotes it (``'name'``)."""
    return text == name or re.search(rf"(=|'|\"|`){re.escape(name)}('|\"|`|,|\s|\)|$)", text) is not None


def core_strings() -> list[tuple[str, int, str]]:
    out = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.append((path.name, node.lineno, node.value))
    return out


def test_no_string_in_core_names_a_registered_plugin():
    registry = build_registry()
    names = {name for by_name in registry.plugins.values() for name in by_name} - set(NOT_PLUGIN_REFERENCES)
    assert {"pymc", "meta", "schaefer", "fmriprep", "ledoit_wolf", "combined", "run_report"} <= names  # the check sees them
    hits = [f"{file}:{line}: {name!r} in {text[:80]!r}" for file, line, text in core_strings()
            for name in names if naming(text, name)]
    assert not hits, "\n".join(hits)


def test_the_check_would_catch_a_plugin_name():
    assert naming("pymc", "pymc") and naming("use dataset=fmriprep)", "fmriprep")
    assert naming("pooling 'meta' failed", "meta") and naming("atlas=combined,", "combined")
    assert not naming("dataset.metadata=studies.tsv", "meta") and not naming("PyMC warns", "pymc")
