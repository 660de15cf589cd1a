"""MkDocs hooks: pages generated at build time from the sources, so they cannot drift.

- ``<!-- config-reference -->``: a table per ``params.yaml`` section, read from the typed config
  (:mod:`mura.config`'s dataclasses: each field's type, default and inline comment).
- ``<!-- bench-results -->``: ``bench/RESULTS.md`` as it is (the measured figures live there only).
- ``<!-- readme -->``: the repository's README (the site's home page is the front page), its
  ``docs/`` links made relative to the site.
"""

from __future__ import annotations

import dataclasses
import io
import tokenize
import typing
from pathlib import Path
from typing import Any

import mura.config as config

REPO = Path(__file__).resolve().parents[1]


def _comments(source: str) -> dict[tuple[str, str], str]:
    """``(class, field) -> inline comment`` of every annotated field in ``source``."""
    out: dict[tuple[str, str], str] = {}
    current = ""
    lines = source.splitlines()
    comments = {
        tok.start[0]: tok.string.lstrip("# ").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    for number, line in enumerate(lines, 1):
        if line.startswith("class "):
            current = line[6:].split("(")[0].split(":")[0].strip()
        elif line.startswith("    ") and not line.startswith("     ") and ":" in line and number in comments:
            name = line.strip().split(":")[0]
            if name.isidentifier():
                out[(current, name)] = comments[number]
    return out


def _yaml_comments(text: str) -> dict[tuple[str, str], str]:
    """``(section, key) -> inline comment`` of params.yaml's second-level keys (top-level keys: section "")."""
    out: dict[tuple[str, str], str] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0].strip()
        comment = line.split(" #", 1)[1].strip(" #") if " #" in line else ""
        if indent == 0:
            section = key
            if comment:
                out[("", key)] = comment
        elif indent == 2 and comment:
            out[(section, key)] = comment
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return "(section)"
    return f"`{value!r}`"


def config_reference() -> str:
    """Markdown tables of every section of ``params.yaml`` (pure: reads mura/config.py)."""
    comments = _comments(Path(config.__file__).read_text())
    documented = _yaml_comments((REPO / "params.yaml").read_text())

    def meaning(kind: type, section: str, key: str) -> str:
        return _cell(comments.get((kind.__name__, key)) or documented.get((section, key), ""))

    hints = typing.get_type_hints(config.Params)
    blocks = []
    sections: list[tuple[str, type]] = []
    for field in dataclasses.fields(config.Params):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            sections.append((field.name, kind))
    sections.append(("models.<variant>", config.ModelSpec))
    top = [f for f in dataclasses.fields(config.Params) if not dataclasses.is_dataclass(hints[f.name])]
    rows = [f"| `{f.name}` | `{_cell(str(f.type))}` | {_default(f)} | {meaning(config.Params, '', f.name)} |" for f in top]
    header = "| key | type | default | meaning |\n|---|---|---|---|\n"
    blocks.append("### Top level\n\n" + header + "\n".join(rows))
    for name, kind in sections:
        rows = [
            f"| `{f.name}` | `{_cell(str(f.type))}` | {_default(f)} | {meaning(kind, name, f.name)} |"
            for f in dataclasses.fields(kind)
        ]
        doc = (kind.__doc__ or "").strip().splitlines()[0].replace("``", "`")
        blocks.append(
            f"### `{name}`\n\n{doc} (`{kind.__name__}`)\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
            + "\n".join(rows)
        )
    return "\n\n".join(blocks)


def settings_reference() -> str:
    """A Markdown table of the ``MURA_*`` runtime settings (pure: reads mura/settings.py)."""
    from mura.settings import ENV_PREFIX, RuntimeSettings

    rows = []
    for name, field in RuntimeSettings.model_fields.items():
        annotation = field.annotation
        kind = (
            annotation.__name__
            if isinstance(annotation, type)
            else str(annotation).replace("typing.", "").replace("pathlib.", "")
        )
        shown = f"`{field.default}`" if field.default is not None else "unset"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | `{_cell(kind)}` | {shown} | {_cell(field.description or '')} |")
    return "| variable | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows)


def bench_results() -> str:
    """bench/RESULTS.md, its headings moved one level down (under the page's)."""
    text = (REPO / "bench" / "RESULTS.md").read_text()
    return "\n".join(("#" + line) if line.startswith("#") else line for line in text.splitlines())


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook: fill the generated sections."""
    if "<!-- config-reference -->" in markdown:
        markdown = markdown.replace("<!-- config-reference -->", config_reference())
    if "<!-- settings-reference -->" in markdown:
        markdown = markdown.replace("<!-- settings-reference -->", settings_reference())
    if "<!-- readme -->" in markdown:
        readme = (REPO / "README.md").read_text().replace("](docs/index.md)", "](index.md)").replace("](docs/", "](")
        markdown = markdown.replace("<!-- readme -->", readme)
    if "<!-- bench-results -->" in markdown:
        markdown = markdown.replace("<!-- bench-results -->", bench_results())
    return markdown
