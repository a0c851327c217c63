"""A small builder for one self-contained HTML page: every image is embedded as base64.

The page opens from disk with no server and no network, and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from descentlab import files

__all__ = ["Page", "format_value", "workload_label"]

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; }
.table-wrap { max-width: 100%; overflow-x: auto; margin: .8rem 0; }
table { border-collapse: collapse; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: right; }
th { background: #f3f3f5; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9rem; }
.finding { background: #eef6ff; border-left: 4px solid #2f7bd8; padding: .6rem 1rem; }
code, pre { background: #f6f6f8; padding: .1rem .3rem; border-radius: 3px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
p { overflow-wrap: anywhere; }
"""


def format_value(value: Any) -> str:
    """A number as a person would read it in a table: 4 significant digits, or as is."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def workload_label(ref: Any) -> str:
    """A workload reference of a run's config as a short title: its name, or ``factory on file``."""
    if isinstance(ref, Mapping):
        if ref.get("model"):
            return f"{ref['model']} on {Path(str(ref.get('data'))).name}"
        return str(ref.get("workload") or "stall")
    return str(ref)


class Page:
    """Sections appended in order, written as one HTML file.

    >>> page = Page("surface: rosenbrock")
    >>> page.paragraph("Paths of six optimizers.")
    >>> page.table([{"optimizer": "adam", "final loss": 1e-4}])
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def finding(self, text: str) -> None:
        """A highlighted one-sentence conclusion."""
        self._parts.append(f'<p class="finding">{html.escape(text)}</p>')

    def code(self, text: str) -> None:
        self._parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
        """A table of dicts; columns default to the first row's keys."""
        if not rows:
            self._parts.append("<p><em>(no rows)</em></p>")
            return
        columns = list(columns if columns is not None else rows[0].keys())
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(format_value(row.get(c)))}</td>" for c in columns) + "</tr>"
            for row in rows
        )
        # wide tables (a dozen columns) scroll inside their own box, never the page
        self._parts.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
                           f"<tbody>{body}</tbody></table></div>")

    def image(self, source: str | Path | bytes, caption: str = "", mime: str | None = None) -> None:
        """Embed a PNG or GIF (a path or raw bytes) with an optional caption."""
        if isinstance(source, (str, Path)):
            path = Path(source)
            data = path.read_bytes()
            mime = mime or ("image/gif" if path.suffix.lower() == ".gif" else "image/png")
        else:
            data, mime = source, mime or "image/png"
        encoded = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        alt = html.escape(caption or "figure")
        self._parts.append(f'<figure><img alt="{alt}" src="data:{mime};base64,{encoded}">{cap}</figure>')

    def figure(self, fig: Any, caption: str = "", save_to: str | Path | None = None) -> None:
        """Embed a matplotlib figure (and also save it as a PNG at ``save_to``), then close it."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        data = buffer.getvalue()
        if save_to is not None:
            files.write_bytes(save_to, data)
        self.image(data, caption)

    def render(self) -> str:
        """The page as an HTML string."""
        body = "\n".join(self._parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page atomically to ``path``."""
        return files.write_text(path, self.render())
