"""The documentation: generated pages cover the whole typed config, and the README's links land on pages."""

from __future__ import annotations

import dataclasses
import re
import typing
from types import ModuleType

from mura import config
from tests.helpers import REPO, load_script


def _hooks() -> ModuleType:
    module: ModuleType = load_script(REPO / "docs" / "hooks.py", "docs_hooks")
    return module


def test_the_configuration_reference_lists_every_key_of_every_section() -> None:
    text = _hooks().config_reference()
    hints = typing.get_type_hints(config.Params)
    sections = {f.name: hints[f.name] for f in dataclasses.fields(config.Params) if dataclasses.is_dataclass(hints[f.name])}
    sections["models.<variant>"] = config.ModelSpec
    for name, kind in sections.items():
        block = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        for field in dataclasses.fields(kind):
            assert re.search(rf"^\| `{field.name}` \|", block, re.M), f"{name}.{field.name} missing from the reference"
    # A documented key carries its comment (from config.py or params.yaml), with table pipes escaped.
    assert "| `resize` | `ResizePolicy` | `'stretch'` | stretch (as the seed) \\| pad" in text


def test_the_home_page_is_the_readme_with_site_links() -> None:
    page = _hooks().on_page_markdown("<!-- readme -->")
    assert page.startswith("# mura") and "](docs/" not in page and "](data.md)" in page


def test_every_readme_link_into_docs_exists() -> None:
    links = re.findall(r"\]\((docs/[^)#]+)", (REPO / "README.md").read_text())
    assert links and all((REPO / link).is_file() for link in links), links
