"""Draw the diagrams of ``docs/method.md`` as SVG files, so the site needs no network.

    python docs/make_diagrams.py

Writes ``docs/images/diagram-*.svg``: plain SVG (boxes, arrows, text), laid out on a
grid given below, top to bottom so that they fit a phone's width. Nothing but the
standard library is used; ``tests/test_docs.py`` checks that the committed files are
what this script writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"

COLUMN, ROW = 215, 64  # pixels between column centres, between row centres
CHAR, LINE, PAD = 7.2, 16, 12  # average glyph width and line height of 13 px sans-serif
MARGIN = 12
INK, BOX, ACCENT = "#263238", "#eef1fb", "#3f51b5"


@dataclass(frozen=True)
class Node:
    key: str
    label: str  # "\n" between lines
    column: float
    row: float
    shape: str = "box"  # or "circle", "plain"

    @property
    def lines(self) -> list[str]:
        return self.label.split("\n")

    @property
    def width(self) -> float:
        if self.shape == "circle":
            return 28
        return max(len(line) for line in self.lines) * CHAR + 2 * PAD

    @property
    def height(self) -> float:
        return 28 if self.shape == "circle" else len(self.lines) * LINE + 14


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    route: str = "auto"  # "auto": a curve; "left"/"right": along a rail beside the column; "down": down, then across


@dataclass(frozen=True)
class Diagram:
    name: str
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]


def _centre(node: Node, left: float) -> tuple[float, float]:
    return left + node.column * COLUMN, MARGIN + node.row * ROW + 20


def _path(edge: Edge, nodes: dict[str, Node], left: float) -> str:
    a, b = nodes[edge.source], nodes[edge.target]
    (ax, ay), (bx, by) = _centre(a, left), _centre(b, left)
    if edge.route in ("left", "right"):
        side = -1 if edge.route == "left" else 1
        rail = max(ax + side * a.width / 2, bx + side * b.width / 2) if side > 0 else min(
            ax + side * a.width / 2, bx + side * b.width / 2
        )
        rail += side * 18
        sx, ex = ax + side * a.width / 2, bx + side * b.width / 2
        return f"M{sx:.1f},{ay:.1f} H{rail:.1f} V{by:.1f} H{ex:.1f}"
    if edge.route == "down":
        ex = bx - b.width / 2 if ax < bx else bx + b.width / 2
        return f"M{ax:.1f},{ay + a.height / 2:.1f} V{by:.1f} H{ex:.1f}"
    if abs(ay - by) < 1:  # same row: side to side
        direction = 1 if bx > ax else -1
        sx, ex = ax + direction * a.width / 2, bx - direction * b.width / 2
        return f"M{sx:.1f},{ay:.1f} H{ex:.1f}"
    sy, ey = ay + a.height / 2, by - b.height / 2
    middle = (sy + ey) / 2
    return f"M{ax:.1f},{sy:.1f} C{ax:.1f},{middle:.1f} {bx:.1f},{middle:.1f} {bx:.1f},{ey:.1f}"


def _node_svg(node: Node, left: float) -> str:
    x, y = _centre(node, left)
    parts = []
    if node.shape == "circle":
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="14" fill="{BOX}" stroke="{ACCENT}" stroke-width="1.5"/>')
    elif node.shape == "box":
        parts.append(
            f'<rect x="{x - node.width / 2:.1f}" y="{y - node.height / 2:.1f}" width="{node.width:.1f}" '
            f'height="{node.height:.1f}" rx="6" fill="{BOX}" stroke="{ACCENT}" stroke-width="1.5"/>'
        )
    top = y - (len(node.lines) - 1) * LINE / 2
    for index, line in enumerate(node.lines):
        parts.append(
            f'<text x="{x:.1f}" y="{top + index * LINE:.1f}" text-anchor="middle" dominant-baseline="central">'
            f"{escape(line)}</text>"
        )
    return "\n".join(parts)


def render(diagram: Diagram) -> str:
    nodes = {node.key: node for node in diagram.nodes}
    left_edge = min(node.column * COLUMN - node.width / 2 for node in diagram.nodes)
    right_edge = max(node.column * COLUMN + node.width / 2 for node in diagram.nodes)
    rails = 30 * any(edge.route in ("left", "right") for edge in diagram.edges)
    left = MARGIN + rails - left_edge
    width = right_edge - left_edge + 2 * (MARGIN + rails)
    height = max(_centre(node, 0)[1] + node.height / 2 for node in diagram.nodes) + MARGIN
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(diagram.title)}">',
        f"<title>{escape(diagram.title)}</title>",
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" "
        f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{INK}"/></marker></defs>',
        f'<rect width="100%" height="100%" fill="white"/>',
        f'<g fill="none" stroke="{INK}" stroke-width="1.3">',
        *(f'<path d="{_path(edge, nodes, left)}" marker-end="url(#arrow)"/>' for edge in diagram.edges),
        "</g>",
        f'<g font-family="sans-serif" font-size="13" fill="{INK}">',
        *(_node_svg(node, left) for node in diagram.nodes),
        "</g>",
        "</svg>",
    ]
    return "\n".join(body) + "\n"


DIAGRAMS = (
    Diagram(
        "diagram-overview",
        "QGAC overview: the Y network, then the colour network guided by the corrected Y",
        (
            Node("file", "JPEG file", 1, 0),
            Node("y", "Y coefficients", 0, 1),
            Node("tables", "quantization tables", 1, 1),
            Node("c", "Cb, Cr coefficients", 2, 1),
            Node("ynet", "Y network", 0, 2),
            Node("y2", "corrected Y", 0, 3),
            Node("cnet", "colour network\n(once for Cb, once for Cr)", 2, 3),
            Node("c2", "corrected Cb, Cr\nat full resolution", 2, 4.2),
            Node("idct", "inverse DCT,\nYCbCr to RGB", 1, 5.2),
            Node("out", "corrected pixels", 1, 6.2),
        ),
        (
            Edge("file", "y"), Edge("file", "tables"), Edge("file", "c"),
            Edge("y", "ynet"), Edge("tables", "ynet"), Edge("ynet", "y2"),
            Edge("c", "cnet"), Edge("tables", "cnet"), Edge("y2", "cnet"),
            Edge("cnet", "c2"), Edge("y2", "idct"), Edge("c2", "idct"), Edge("idct", "out"),
        ),  # fmt: skip
    ),
    Diagram(
        "diagram-y-network",
        "The Y network: BlockNet, FrequencyNet, BlockNet, fused into one residual",
        (
            Node("y", "Y coefficients + table", 0, 0),
            Node("b1", "BlockNet 1", 0, 1),
            Node("fn", "FrequencyNet", 0, 2),
            Node("b2", "BlockNet 2", 0, 3),
            Node("fu", "Fusion", 0, 4),
            Node("r", "residual", 0, 5),
            Node("sum", "+", 0, 6, "circle"),
            Node("out", "corrected Y", 0, 7),
        ),
        (
            Edge("y", "b1"), Edge("b1", "fn"), Edge("fn", "b2"), Edge("b2", "fu"),
            Edge("b1", "fu", "right"), Edge("fn", "fu", "right"),
            Edge("fu", "r"), Edge("r", "sum"), Edge("y", "sum", "left"), Edge("sum", "out"),
        ),  # fmt: skip
    ),
    Diagram(
        "diagram-colour-network",
        "The colour network: chroma features upsampled, joined with the corrected Y's, decoded to a residual",
        (
            Node("c", "Cb or Cr coefficients\n+ chroma table", 1, 0),
            Node("y", "corrected Y\n+ Y table", 2, 0),
            Node("near", "nearest or fancy\nupsampling", 0, 1.2),
            Node("cfm", "CFM", 1, 1.2),
            Node("ycfm", "CFM", 2, 1.2),
            Node("rrdb", "RRDB", 1, 2.2),
            Node("up", "learned upsampling", 1, 3.2),
            Node("cat", "concatenate", 1.5, 4.2),
            Node("rrdb2", "RRDB", 1.5, 5.2),
            Node("tcfm", "transposed CFM\n(chroma table)", 1.5, 6.2),
            Node("sum", "+", 1, 7.4, "circle"),
            Node("out", "corrected chroma,\nfull resolution", 1, 8.4),
        ),
        (
            Edge("c", "near"), Edge("c", "cfm"), Edge("y", "ycfm"), Edge("cfm", "rrdb"),
            Edge("rrdb", "up"), Edge("up", "cat"), Edge("ycfm", "cat"), Edge("cat", "rrdb2"),
            Edge("rrdb2", "tcfm"), Edge("tcfm", "sum"), Edge("near", "sum", "down"), Edge("sum", "out"),
        ),  # fmt: skip
    ),
)


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    for diagram in DIAGRAMS:
        path = IMAGES / f"{diagram.name}.svg"
        path.write_text(render(diagram), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
