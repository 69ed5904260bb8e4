"""The examples of the docs pages (one per command, Python, the design page) run as written.

A page's fenced blocks run in order in a fresh folder: ```python blocks share one namespace;
in ```console blocks every line starting with ``$ metaunsup`` runs through the CLI and must
exit 0. Blocks in other languages (``diff``, ``text``, ``toml``, ``bash``) and blocks without a
language (sample output) are not run. Whatever a page registers (the design page adds a toy
learner, backbone and task kind) is removed from the registries after it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from metaunsup.app.cli import main
from metaunsup.evaluation.kinds import TASK_KINDS
from metaunsup.learners import LEARNERS
from metaunsup.nets import BACKBONES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [
    "cluster.md",
    "report.md",
    "python.md",
    "train.md",
    "evaluate.md",
    "demo.md",
    "experiment.md",
    "datasets.md",
    "design.md",
    "detect.md",
]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block of ``page``."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def test_pages_have_runnable_examples():
    for name in PAGES:
        languages = [lang for lang, _ in blocks(DOCS / name)]
        assert "python" in languages, name


#: Pages whose examples take more than a few seconds (the demo's page trains a model).
SLOW_PAGES = {"demo.md"}


@pytest.fixture
def registries_restored():
    """The learner, backbone and task-kind registries as they were before the test."""
    saved = [(registry, dict(registry)) for registry in (LEARNERS, BACKBONES, TASK_KINDS)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


@pytest.mark.usefixtures("registries_restored")
@pytest.mark.parametrize(
    "name", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW_PAGES else p for p in PAGES]
)
def test_examples_run(name, tmp_path, monkeypatch, capsys):
    if name == "report.md":
        pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": f"docs_{name}"}
    try:
        for number, (language, code) in enumerate(blocks(DOCS / name), start=1):
            if language == "python":
                exec(compile(code, f"{name} block {number}", "exec"), namespace)
            elif language == "console":
                for line in code.splitlines():
                    if line.startswith("$ metaunsup "):
                        argv = shlex.split(line[len("$ metaunsup ") :])
                        code_ = main(argv)
                        _, err = capsys.readouterr()
                        assert code_ == 0, f"{name} block {number}: {line}\n{err}"
    finally:
        torch.set_num_threads(threads)


def _layers(text: str) -> list[str]:
    """The entries of the first ``layers = [...]`` list in ``text``."""
    found = re.search(r"^layers = \[\n(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    assert found, "no layers = [...] list"
    return re.findall(r'"([^"]+)"', found.group(1))


def test_design_page_quotes_the_import_contract_as_it_is():
    quoted = _layers((DOCS / "design.md").read_text(encoding="utf-8"))
    contract = _layers((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert quoted == contract and "metaunsup.errors" in contract
