"""The README and the docs site say what the code does: short README, links that resolve, flags that exist.

``make docs`` (``mkdocs build --strict``, run by ``make test``) checks the site itself: links between pages,
anchors, and every page of docs/ in mkdocs.yml's nav. These tests check what it does not see.
"""

import re
from pathlib import Path

import pytest

from xdetox.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def subparser(*names: str):
    """The argparse parser of ``xdetox NAME ...``."""
    parser = build_parser()
    for name in names:
        action = next(a for a in parser._actions if getattr(a, "choices", None) and name in a.choices)
        parser = action.choices[name]
    return parser


def flags_of(*names: str) -> set[str]:
    return {flag for action in subparser(*names)._actions for flag in action.option_strings}


def test_the_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_the_readme_links_resolve():
    """Every relative link of the README names a file of the repository (anchors aside)."""
    links = [link for link in LINK.findall(README.read_text(encoding="utf-8")) if "://" not in link]
    assert links, "the README links its docs pages"
    for link in links:
        assert (ROOT / link.split("#")[0]).is_file(), link


def test_every_docs_page_is_in_the_nav():
    """mkdocs --strict warns about a page left out; this says which, without building the site."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert f": {page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"


def test_the_run_flags_table_names_real_flags():
    """Each flag in the first column of docs/cli.md's ``xdetox run`` table is a flag of ``xdetox run``."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    table = text.split("## `xdetox run`", 1)[1].split("\n\n| flag |", 1)[1].split("\n\n", 1)[0]
    documented = {flag for row in table.splitlines() for flag in re.findall(r"`(--[a-z-]+)", row.split("|")[1])}
    assert len(documented) >= 25
    assert documented <= flags_of("run"), documented - flags_of("run")


@pytest.mark.parametrize("command, flags", [
    (("eval",), {"--model", "--adapter", "--baseline", "--chat-template", "--data", "--targets", "--split",
                 "--limit", "--seed", "--text-normalisation", "--batch-size", "--max-new-tokens", "--temperature",
                 "--top-p", "--samples", "--dtype", "--trust-remote-code", "--scorer", "--out", "--reuse", "--quiet",
                 "--threads"}),
    (("grid", "run"), {"--out", "--reuse", "--quiet", "--backend", "--address", "--threads"}),
    (("report",), {"--partial", "--threads"}),
    (("export",), {"--setting", "--seed", "--out", "--no-merge", "--dtype", "--push-to-hub"}),
    (("score",), {"--scorer", "--lang", "--json"}),
    (("scorer", "check"), {"--scorer", "--langs", "--json"}),
    (("bench",), {"--prompts", "--model", "--lang", "--batch-size", "--train-examples", "--json", "--profile"}),
    (("compare",), {"--csv", "--markdown"}),
])
def test_the_flags_the_docs_name_exist(command, flags):
    assert flags <= flags_of(*command)


def test_the_readme_snippet_names_real_columns_and_methods():
    """The README's pandas snippet: the ``Run`` methods it calls exist, and the columns it selects are in the
    settings frame of a real run (``docs/results/make-run/summary.json``)."""
    import json

    from xdetox.api import Run
    from xdetox.report.tabular import summary_frame

    block = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    assert "xdetox.open_run(" in block
    for method in re.findall(r"\brun\.(\w+)\(", block):
        assert callable(getattr(Run, method, None)), method
    summary = json.loads((DOCS / "results" / "make-run" / "summary.json").read_text(encoding="utf-8"))
    columns = set(summary_frame(summary["settings"]).columns)
    selected = set(re.findall(r'"(\w+)"', block))
    assert {"reduction_abs", "ci95_low", "q_value"} <= selected
    assert selected <= columns | {"x-ft", "en"}, selected - columns
