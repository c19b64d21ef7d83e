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

import functools
import html
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from huggingface_hub import constants
from PIL import Image
from surface_fixtures import strict_json_loads, textured_image

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

#: Characters of monospace text a code block shows without scrolling in the theme's
#: content column at a 1280-pixel window: 656 px inside the block's padding (688 px
#: column) over 8.18 px a character (13.6 px Roboto Mono or the local monospace
#: fallback, measured in headless Chromium), 80.2.
CODE_COLUMNS = 80
#: Width of the content column at 1280 px, and the table metrics: 12.8 px text (about
#: 7 px a character), 16 px of padding each side of a cell, header cells at least 3rem
#: (60 px) wide (docs/stylesheets/extra.css; the theme's 5rem would need 800 px for
#: eight columns).
CONTENT_PX, TABLE_CHAR_PX, CELL_PADDING_PX, MIN_CELL_PX = 688, 7.0, 32, 60


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def built_pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


class _PageParser(HTMLParser):
    """What the layout tests need of a built page: what it loads, its code blocks, its tables."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.loads: list[str] = []  # src / href of scripts, stylesheets, images, frames
        self.code_blocks: list[str] = []
        self.tables: list[list[list[str]]] = []  # table -> row -> cell texts
        self._pre: list[str] | None = None
        self._output_depth = 0
        self._depth = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self._depth += 1
        if tag in ("script", "img", "iframe", "source", "video", "audio") and attributes.get("src"):
            self.loads.append(attributes["src"] or "")
        if tag == "link" and set((attributes.get("rel") or "").split()) & {"stylesheet", "preload", "modulepreload"}:
            self.loads.append(attributes.get("href") or "")
        if tag == "div" and "output" in (attributes.get("class") or "").split():
            self._output_depth = self._depth
        if tag == "pre":
            self._pre = []
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self._pre is not None:
            if not self._output_depth:  # program output wraps (docs/stylesheets/extra.css)
                self.code_blocks.append("".join(self._pre))
            self._pre = None
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        if tag == "div" and self._output_depth == self._depth:
            self._output_depth = 0
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._pre is not None:
            self._pre.append(data)
        if self._cell is not None:
            self._cell.append(data)


@functools.cache  # the layout tests each walk every page of the one built site
def parsed(page: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_site_builds_strictly(site):
    for page in ("index.html", "api/transforms/index.html", "results/index.html", "images/psnr-gain.png"):
        assert (site / page).is_file(), page
    api = (site / "api" / "transforms" / "index.html").read_text(encoding="utf-8")
    assert "JPEGArtifactCorrection" in api and ":func:" not in api  # docstrings rendered, roles stripped
    signatures = "".join(
        block
        for page in (site / "api").rglob("*.html")
        for block in re.findall(r'<div class="doc-signature.*?</pre>', page.read_text(encoding="utf-8"), re.S)
    )
    assert signatures and not re.search(r'<span class="n">DEFAULT_', signatures)  # defaults shown as values
    for page in ("install", "contributing", "changelog", "licence", "training", "training-record"):
        assert (site / page / "index.html").is_file(), page


def test_defaults_are_shown_as_values(tmp_path):
    """docs/griffe_values.py: a default naming a module constant shows the constant's value."""
    import griffe

    package = tmp_path / "demo"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from demo.sizes import TILE\n"
        "NAME = 'small'\n"
        "LOOKUP = dict(a=1)\n"
        "def f(tile=TILE, name=NAME, lookup=LOOKUP, other=None): ...\n"
    )
    (package / "sizes.py").write_text("TILE = 1024\n")
    extensions = griffe.load_extensions(f"{DOCS / 'griffe_values.py'}:DefaultsAsValues")
    module = griffe.load("demo", search_paths=[tmp_path], extensions=extensions, resolve_aliases=True)
    defaults = {p.name: str(p.default) for p in module["f"].parameters}
    assert defaults == {"tile": "1024", "name": "'small'", "lookup": "LOOKUP", "other": "None"}


def test_site_loads_nothing_from_other_hosts(site):
    """The site works offline: no script, stylesheet, font or image from another host."""
    remote = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
    found = [
        f"{page.relative_to(site)}: {url}"
        for page in built_pages(site)
        for url in parsed(page).loads
        if remote.match(url)
    ]
    for stylesheet in site.rglob("*.css"):
        text = stylesheet.read_text(encoding="utf-8", errors="replace")
        found += [f"{stylesheet.relative_to(site)}: {m[0]}" for m in re.finditer(r"@import[^;]*|url\(\s*['\"]?(?:https?:)?//[^)]*\)", text)]
    assert not found, "loaded from another host:\n" + "\n".join(found)
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "mermaid" not in index.lower() and "fonts.googleapis" not in index


def test_code_blocks_fit_the_page(site):
    """No line of a code block is wider than the theme shows at 1280 px (``CODE_COLUMNS``)."""
    long_lines = []
    for page in built_pages(site):
        name = str(page.relative_to(site))
        for block in parsed(page).code_blocks:
            long_lines += [f"{name}: {len(line)}: {line}" for line in block.splitlines() if len(line) > CODE_COLUMNS]
    assert not long_lines, f"code lines over {CODE_COLUMNS} characters:\n" + "\n".join(long_lines)


def table_min_width(table: list[list[str]]) -> float:
    """The least width a table can take: each column as wide as its longest word."""
    columns = max((len(row) for row in table), default=0)
    width = 0.0
    for column in range(columns):
        words = [word for row in table if column < len(row) for word in row[column].split()]
        longest = max((len(word) for word in words), default=0)
        width += max(MIN_CELL_PX, CELL_PADDING_PX + longest * TABLE_CHAR_PX)
    return width


def test_tables_fit_the_page(site):
    """No table needs more than the content column at 1280 px, with no word broken."""
    wide = []
    for page in built_pages(site):
        for table in parsed(page).tables:
            if table and table_min_width(table) > CONTENT_PX:
                wide.append(f"{page.relative_to(site)}: {table_min_width(table):.0f} px: {table[0]}")
    assert not wide, f"tables wider than {CONTENT_PX} px:\n" + "\n".join(wide)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Injected into a copy of each page: lists what is wider than the content column.
_MEASURE = """<script>
window.addEventListener("load", () => {
  const column = document.querySelector(".md-content__inner").getBoundingClientRect();
  const wide = [];
  document.querySelectorAll(".md-content table, .md-content pre > code").forEach((box) => {
    const right = box.getBoundingClientRect().right;
    if (box.scrollWidth > box.clientWidth + 1 || right > column.right + 1) {
      wide.push(box.tagName + ": " + box.textContent.trim().slice(0, 60).replace(/\\s+/g, " "));
    }
  });
  if (document.documentElement.scrollWidth > window.innerWidth) wide.push("the page scrolls sideways");
  document.title = "LAYOUT " + JSON.stringify(wide);
});
</script></body>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
def test_pages_fit_1280_px_in_chromium(site):
    """What the two tests above estimate, measured: headless Chromium at 1280 x 900."""
    wide = []
    for page in built_pages(site):
        name = str(page.relative_to(site))
        if page.name != "index.html":
            continue
        probe = page.with_name("layout-probe.html")
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE), encoding="utf-8")
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
             "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        probe.unlink()
        found = re.search(r"<title>LAYOUT (.*?)</title>", result.stdout, re.S)
        assert found, f"{name}: no measurement from Chromium:\n{result.stderr[-2000:]}"
        wide += [f"{name}: {item}" for item in json.loads(html.unescape(found[1]))]
    assert not wide, "wider than the content column at 1280 px:\n" + "\n".join(wide)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_pictures_are_small_and_generated_files_match_their_scripts():
    images = sorted((DOCS / "images").iterdir())
    assert len(images) >= 6 and sum(p.stat().st_size for p in images) < 512 * 2**10
    pictures = _load_script("make_pictures")
    results = DOCS / "results"
    generated = pictures.markdown_files(pictures.load_reports(results), results)
    for name, text in generated.items():
        assert (results / name).read_text() == text, f"{name} out of date: python docs/make_pictures.py --skip-crops"
    for name, text in generated.items():
        for picture in re.findall(r"\]\((images/[^)]+)\)", text):
            assert (DOCS / picture).is_file(), f"{name} shows {picture}: python docs/make_pictures.py"
    diagrams = _load_script("make_diagrams")
    for diagram in diagrams.DIAGRAMS:
        path = DOCS / "images" / f"{diagram.name}.svg"
        assert path.read_text(encoding="utf-8") == diagrams.render(diagram), f"{path.name}: python docs/make_diagrams.py"


def test_committed_reports_and_configs_are_standard_json():
    """What the docs, the cards and the Hub serve is read by other tools too (browsers, jq)."""
    paths = [*(DOCS / "results").glob("*.json"), *(ROOT / "hub").rglob("*.json"),
             *(ROOT / "qgac_transforms" / "weights").rglob("*.json")]
    assert len(paths) > 10
    for path in paths:
        strict_json_loads(path.read_text())


def test_readme_results_rows_are_those_of_the_reports():
    """The README's results rows are copies of rows generated into ``docs/results/``."""
    readme = (ROOT / "README.md").read_text().splitlines()
    rows = [line for line in readme if re.match(r"\| (?:LIVE1|Classic-5) q\d+ \| |\| gain at quality ", line)]
    generated = {line for page in (DOCS / "results").glob("*.md") for line in page.read_text().splitlines()}
    assert len(rows) >= 6 and not [row for row in rows if row not in generated]


def test_readme_opens_like_the_landing_page():
    """The README's first lines are the two fresh-machine commands, then the landing page's tagline."""
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line.strip() for line in readme if line.startswith("    pip install")]
    assert commands[0].endswith("qgac correct examples/sample.jpg -o corrected")
    assert commands[1].endswith("python -m pytest -q tests")
    landing = (DOCS / "index.md").read_text()
    tagline = re.search(r'<p class="qgac-tagline">(.*?)</p>', landing, re.S)[1]
    assert " ".join(tagline.split()) in " ".join(" ".join(readme).split())


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


def test_licence_page_quotes_the_licence_file():
    page = (ROOT / "docs" / "licence.md").read_text(encoding="utf-8")
    assert (ROOT / "LICENSE").read_text(encoding="utf-8") in page
