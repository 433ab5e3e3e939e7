"""mkdocs hooks: pages generated from genlab itself at build time, so the docs cannot drift.

Registered in ``mkdocs.yml`` under ``hooks:``. Three placeholders, each an HTML comment alone on a
line of a page's Markdown, are replaced before the page is rendered:

``<!-- genlab:cli -->``
    The ``--help`` of the ``genlab`` command and of every subcommand, from ``genlab.cli.build_parser``.
``<!-- genlab:models NAME [NAME ...] -->``
    The ``genlab models`` entry (likelihood kind, capabilities, constructor options with defaults)
    of each named model, from the registry.
``<!-- genlab:readme HEADING -->``
    The README section under the heading line ``HEADING`` (e.g. ``## Diffusion``) up to the next
    heading of the same or a higher level (its sub-headings kept, so a page places it under a heading
    of that level), with ``docs/`` image paths made
    page-relative: the measured numbers are quoted from one place, the README, and never retyped.

A placeholder that names an unknown model or a missing README heading raises, which fails the build.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_PLACEHOLDER = re.compile(r"^<!-- genlab:(cli|models|readme)\s*(.*?)\s*-->$", re.MULTILINE)
_cache: dict[str, Any] = {}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The ``genlab`` subcommands in the parser's order, mapped to their argparse parsers."""
    from genlab.cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise RuntimeError("genlab.cli.build_parser() has no subcommands")


def render_cli() -> str:
    """Markdown: the top-level ``genlab --help`` and one section per subcommand with its ``--help``."""
    from genlab.cli import build_parser

    # argparse wraps help to $COLUMNS; fix it so the page does not depend on the terminal.
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parts = ["```text", build_parser().format_help().rstrip(), "```", ""]
        for name, sub in subcommands().items():
            parts += [f"## `genlab {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def _model_entries() -> dict[str, str]:
    """``genlab models`` output split into one text block per model name (cached per build)."""
    if "models" not in _cache:
        from genlab.cli import main

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(["models"])
        entries: dict[str, list[str]] = {}
        name = None
        for line in buf.getvalue().splitlines():
            if line and not line[0].isspace():
                name = line.split()[0]
                entries[name] = [line]
            elif name is not None:
                entries[name].append(line)
        _cache["models"] = {k: "\n".join(v) for k, v in entries.items()}
    return _cache["models"]


def render_models(names: list[str]) -> str:
    """Markdown: the ``genlab models`` entries of ``names`` in one text block."""
    entries = _model_entries()
    missing = [n for n in names if n not in entries]
    if missing:
        raise ValueError(f"docs placeholder names unknown model(s) {missing}; known: {sorted(entries)}")
    return "\n".join(["```text", *(entries[n] for n in names), "```"])


def readme_section(heading: str) -> str:
    """The README text under the line ``heading`` down to the next heading of its level or higher,
    without the heading line itself; ``docs/x.png`` links become ``x.png``."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    try:
        start = lines.index(heading)
    except ValueError:
        raise ValueError(f"README.md has no heading line {heading!r} (a docs page quotes it)") from None
    out, in_code = [], False
    for line in lines[start + 1 :]:
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^(#+) ", line)
        if m and len(m.group(1)) <= level:
            break
        out.append(line)
    return re.sub(r"\]\(docs/", "](", "\n".join(out)).strip()


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """mkdocs event: replace the page's placeholders by the generated Markdown."""

    def replace(m: re.Match[str]) -> str:
        kind, arg = m.group(1), m.group(2)
        if kind == "cli":
            return render_cli()
        if kind == "models":
            return render_models(arg.split())
        return readme_section(arg)

    return _PLACEHOLDER.sub(replace, markdown)


# Sphinx cross-reference roles in genlab's docstrings (:func:`x`) reach the HTML as the role name
# followed by the code span; keep the code span and drop the role, which is not rendered text.
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    """mkdocs event: drop Sphinx role prefixes (``:func:``) left before code spans in API pages."""
    return _ROLE.sub("", html)
