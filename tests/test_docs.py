"""The documentation site builds without warnings, and every example on it runs.

Fences in ``docs/**/*.md`` and ``README.md``:

* ```` ```python ````: run. The blocks of one page run in order as one script, in a
  fresh folder holding ``examples/sample.jpg``, offline (the packaged default weights);
  the script keeps each block on its line of the page, so a traceback's line number is
  the page's.
* ```` ```sh ````: run. Only ``qgac`` commands are allowed; each runs in-process in a
  fresh folder like the one above and must exit 0.
* ```` ```console ````: not run (needs the benchmark images, the network, a GPU, or
  installs). Every ``qgac`` command in it must still parse; the slow ones are run here
  in small versions (``qgac eval`` on a generated folder).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub import constants
from PIL import Image
from surface_fixtures import textured_image

from qgac_transforms import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]
SAMPLE = ROOT / "examples" / "sample.jpg"
_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


@dataclass(frozen=True)
class Block:
    page: Path
    language: str
    line: int  # 1-based line of the first code line
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, dedented to their fence."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _OPEN.match(lines[index])
        if not match:
            index += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = match["info"].strip().split(" ")[0].lower()
        body = []
        index += 1
        while index < len(lines) and lines[index].strip() != fence:
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        blocks.append(Block(page, language, index - len(body) + 1, "\n".join(body)))
        index += 1
    return blocks


def commands(block: Block) -> list[str]:
    """Shell commands of a block: ``\\`` continuations joined, comments and prompts dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.code)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if line and not line.startswith("#"):
            out.append(line)
    return out


def qgac_arguments(command: str) -> list[str] | None:
    """``qgac ...`` -> its arguments; ``None`` for any other command."""
    words = shlex.split(command, comments=True)
    return words[1:] if words and words[0] == "qgac" else None


def blocks_of(language: str) -> list[Block]:
    return [block for page in PAGES for block in fenced_blocks(page) if block.language == language]


def pages_with(language: str) -> list[Path]:
    return sorted({block.page for block in blocks_of(language)})


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.fixture
def workdir(tmp_path):
    """A fresh folder with ``examples/sample.jpg``, as the examples expect from the repository root."""
    folder = tmp_path / "work"
    (folder / "examples").mkdir(parents=True)
    shutil.copy(SAMPLE, folder / "examples" / "sample.jpg")
    return folder


def offline_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("HF_HUB_CACHE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------- the site


def test_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "api/transforms/index.html", "results/index.html", "images/psnr-gain.png"):
        assert (site / page).is_file(), page
    api = (site / "api" / "transforms" / "index.html").read_text(encoding="utf-8")
    assert "JPEGArtifactCorrection" in api and ":func:" not in api  # docstrings rendered, roles stripped


def test_pictures_are_small_and_tables_match_the_reports():
    images = sorted((DOCS / "images").glob("*.png"))
    assert len(images) >= 3 and sum(p.stat().st_size for p in images) < 2 * 2**20
    spec = importlib.util.spec_from_file_location("make_pictures", DOCS / "make_pictures.py")
    pictures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pictures)
    expected = pictures.tables_markdown(pictures.load_reports(DOCS / "results"), DOCS / "results")
    assert (DOCS / "results" / "tables.md").read_text() == expected, "out of date: python docs/make_pictures.py --skip-crops"


def test_readme_results_rows_are_those_of_the_reports():
    """The README's quality rows are copies of rows of ``docs/results/tables.md``."""
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if re.match(r"\| \d+ \| \d", line)]
    tables = (DOCS / "results" / "tables.md").read_text().splitlines()
    assert len(rows) >= 6 and not [row for row in rows if row not in tables]


# --------------------------------------------------------------------------- python examples


def test_there_are_examples_to_run():
    assert len(pages_with("python")) >= 5 and blocks_of("sh")


@pytest.mark.parametrize("page", pages_with("python"), ids=page_id)
def test_python_examples_run(page, workdir, tmp_path):
    blocks = [block for block in fenced_blocks(page) if block.language == "python"]
    lines = [""] * len(page.read_text(encoding="utf-8").splitlines())
    for block in blocks:
        for offset, line in enumerate(block.code.splitlines()):
            lines[block.line - 1 + offset] = line
    script = workdir / f"{page.stem}_examples.py"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, script.name], cwd=workdir, env=offline_env(tmp_path),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"the examples of {page_id(page)} failed (line numbers are the page's):\n{result.stdout}\n{result.stderr}"
    )


# --------------------------------------------------------------------------- shell examples


@pytest.fixture
def qgac(monkeypatch, workdir, capsys):
    """Run ``qgac ARGS`` in-process in ``workdir``, offline; returns (exit code, output)."""
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def run(arguments: list[str]) -> tuple[int, str]:
        try:
            code = cli.main(arguments)
        except SystemExit as exit_:
            code = exit_.code
        out, err = capsys.readouterr()
        return code, out + err

    return run


@pytest.mark.parametrize("page", pages_with("sh"), ids=page_id)
def test_sh_examples_run(page, qgac):
    for block in (b for b in fenced_blocks(page) if b.language == "sh"):
        for command in commands(block):
            arguments = qgac_arguments(command)
            assert arguments is not None, f"{block.where}: only qgac commands go in ```sh; use ```console"
            code, output = qgac(arguments)
            assert code == 0, f"{block.where}: `{command}` exited {code}:\n{output}"


def test_console_qgac_commands_parse():
    parser = cli.build_parser()
    checked = 0
    for block in blocks_of("console"):
        for command in commands(block):
            for part in command.split("&&"):
                arguments = qgac_arguments(part.strip())
                if arguments is None or "--help" in arguments:
                    continue
                try:
                    parser.parse_args(arguments)
                except SystemExit:
                    pytest.fail(f"{block.where}: `{part.strip()}` does not parse")
                checked += 1
    assert checked >= 3


def test_eval_small_version(qgac, workdir):
    """``qgac eval`` as the docs show it, on a generated two-image folder instead of LIVE1."""
    dataset = workdir / "originals"
    dataset.mkdir()
    textured_image(0, 48, 64).save(dataset / "a.png")
    textured_image(1, 40, 40, "L").save(dataset / "b.png")
    code, output = qgac(["eval", "--dataset", "originals", "--quality", "10", "50", "--json", "eval.json"])
    assert code == 0, output
    report = json.loads((workdir / "eval.json").read_text())
    assert [r["quality"] for r in report["results"]] == [10, 50]
    assert report["results"][0]["n_images"] == 2 and "PSNR / PSNR-B / SSIM" in output
