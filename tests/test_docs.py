"""The README and docs/ stay true to the code, cheaply (nothing is run or timed):

* every ``lowbit ...`` command they quote parses with the CLI's own argparse parser;
* every relative link (and ``#anchor``) points to an existing file (and heading);
* every ``from lowbit... import ...`` in their Python blocks names something that exists;
* the README's two commands are the ones CI runs (``.ci/run`` runs them verbatim).

Output excerpts (```text blocks, lines without ``$`` in ```console blocks) are not parsed.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from lowbit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUBCOMMANDS = ("info", "bench", "run", "simulate", "roofline", "sweep", "compress", "nas")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
# An inline span with these is a synopsis (`lowbit run [--quick]`), not a command line.
SYNOPSIS = ("[", "|", "...")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def _prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def _lowbit_argvs(line: str) -> list[list[str]]:
    """The ``lowbit`` invocations of one shell line (``a && lowbit ...``, ``X=1 lowbit ...``)."""
    tokens = shlex.split(line, comments=True)
    argvs, current = [], []
    for tok in tokens + ["&&"]:
        if tok in ("&&", "||", ";"):
            while current and ENV_ASSIGNMENT.match(current[0]):
                current.pop(0)
            if current and current[0] == "lowbit":
                argvs.append(current[1:])
            current = []
        else:
            current.append(tok)
    return argvs


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for lang, body in _blocks(text):
            for line in body.splitlines():
                if lang == "console" and line.startswith("$ "):
                    line = line[2:]
                elif lang not in ("bash", "sh", "shell"):
                    continue
                found += [(_rel(page), argv) for argv in _lowbit_argvs(line)]
        for span in INLINE_CODE.findall(_prose(text)):
            if span.startswith("lowbit ") and not any(s in span for s in SYNOPSIS):
                found += [(_rel(page), argv) for argv in _lowbit_argvs(span)]
    return found


COMMANDS = _commands()


def test_docs_quote_every_subcommand():
    quoted = {argv[0] for _, argv in COMMANDS if argv}
    assert len(COMMANDS) >= 40, f"only {len(COMMANDS)} lowbit command lines found in the docs"
    assert set(SUBCOMMANDS) <= quoted, f"never quoted: {sorted(set(SUBCOMMANDS) - quoted)}"


@pytest.mark.parametrize("page, argv", COMMANDS,
                         ids=[f"{p}:lowbit {' '.join(a)}"[:90] for p, a in COMMANDS])
def test_quoted_command_parses(page, argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{page}: `lowbit {' '.join(argv)}` does not parse: {err.getvalue().strip()}")
    assert args.command in SUBCOMMANDS


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _prose(path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _links() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        prose = INLINE_CODE.sub("", _prose(page.read_text(encoding="utf-8")))
        found += [(_rel(page), target) for target in LINK.findall(prose)
                  if not re.match(r"[a-z]+:", target)]
    return found


LINKS = _links()


def test_docs_have_links():
    assert len(LINKS) >= 30, f"only {len(LINKS)} relative links found in the docs"


@pytest.mark.parametrize("page, target", LINKS, ids=[f"{p}->{t}" for p, t in LINKS])
def test_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    dest = (ROOT / page).parent / path if path else ROOT / page
    assert dest.exists(), f"{page}: link to {target}: {dest} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{page}: link to {target}: no heading #{anchor}"


def _imports() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        for lang, body in _blocks(page.read_text(encoding="utf-8")):
            if lang != "python":
                continue
            for node in ast.walk(ast.parse(body)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lowbit"):
                    found += [(_rel(page), node.module, a.name) for a in node.names]
    return found


IMPORTS = _imports()


@pytest.mark.parametrize("page, module, name", IMPORTS,
                         ids=[f"{p}:{m}.{n}" for p, m, n in IMPORTS])
def test_imported_name_exists(page, module, name):
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{page}: `from {module} import {name}`: no such name"


def test_readme_commands_are_the_ones_ci_runs():
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    readme_blocks = [body for lang, body in _blocks((ROOT / "README.md").read_text("utf-8"))
                     if lang == "bash"]
    assert ci and readme_blocks[:len(ci)] == [line + "\n" for line in ci]
