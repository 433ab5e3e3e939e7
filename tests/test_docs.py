"""The documentation site: `mkdocs build --strict` passes, every family page and every CLI
subcommand is there, and the built HTML loads no script or stylesheet from the web (offline)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAMILY_PAGES = ["vae", "autoregressive", "flows", "gans", "multimodal", "diffusion"]
OTHER_PAGES = ["index", "metrics", "cli", "api", "adding-a-model"]

_missing = [
    m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers") if importlib.util.find_spec(m) is None
]
needs_mkdocs = pytest.mark.skipif(
    bool(_missing), reason=f"docs extra not installed ({', '.join(_missing)}): pip install -e '.[docs]'"
)


def _load_hooks():
    spec = importlib.util.spec_from_file_location("genlab_docs_hooks", ROOT / "docs" / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parser_subcommands() -> list[str]:
    """The subcommands as argparse knows them, read independently of docs/hooks.py."""
    from genlab.cli import build_parser

    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


class _ExternalAssets(HTMLParser):
    """Collects <script src> and <link rel=stylesheet|preload|modulepreload href> pointing off-site."""

    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        url = None
        if tag == "script":
            url = a.get("src")
        elif tag == "link" and set((a.get("rel") or "").split()) & {
            "stylesheet",
            "preload",
            "modulepreload",
            "preconnect",
        }:
            url = a.get("href")
        if url and re.match(r"(https?:)?//", url):
            self.external.append(f"<{tag}> {url}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@needs_mkdocs
@pytest.mark.slow
def test_every_page_is_built(site: Path) -> None:
    for page in FAMILY_PAGES + OTHER_PAGES:
        html = (site / f"{page}.html").read_text(encoding="utf-8")
        assert "<!-- genlab:" not in html, f"{page}: a placeholder was not replaced"
    for page in FAMILY_PAGES:  # each family page: mathematics, options (from the registry), an example
        html = (site / f"{page}.html").read_text(encoding="utf-8")
        for section in ("Mathematics", "Options", "Example"):
            assert f">{section}<" in html, f"{page}.html has no {section!r} section"
        assert "options: " in html, f"{page}.html lists no model options"


@needs_mkdocs
@pytest.mark.slow
def test_cli_page_lists_every_subcommand(site: Path) -> None:
    html = (site / "cli.html").read_text(encoding="utf-8")
    for name in _parser_subcommands():
        assert f'id="genlab-{name}"' in html, f"cli.html has no section for 'genlab {name}'"
        assert f"usage: genlab {name}" in html, f"cli.html lacks the --help of 'genlab {name}'"


@needs_mkdocs
@pytest.mark.slow
def test_site_loads_nothing_from_the_web(site: Path) -> None:
    found = []
    for page in site.rglob("*.html"):
        p = _ExternalAssets()
        p.feed(page.read_text(encoding="utf-8"))
        found += [f"{page.relative_to(site)}: {u}" for u in p.external]
    assert not found, "external scripts/stylesheets (the site must work offline):\n" + "\n".join(found)


def test_readme_section_quotes_until_the_next_heading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = _load_hooks()
    (tmp_path / "README.md").write_text(
        "# t\n## A\nx ![p](docs/p.png)\n```bash\n# not a heading\n```\n### A.1\ny\n## B\nz\n", encoding="utf-8"
    )
    monkeypatch.setattr(hooks, "ROOT", tmp_path)
    text = hooks.readme_section("## A")
    assert text == "x ![p](p.png)\n```bash\n# not a heading\n```\n### A.1\ny"
    with pytest.raises(ValueError, match="no heading"):
        hooks.readme_section("## C")


def test_unknown_model_placeholder_fails() -> None:
    hooks = _load_hooks()
    with pytest.raises(ValueError, match="unknown model"):
        hooks.render_models(["no-such-model"])
    assert "options:" in hooks.render_models(["vae"])
