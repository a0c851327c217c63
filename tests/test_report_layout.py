"""The report figures' layout, measured on the drawn figure: labels inside the axes, legends
clear of the data they would hide, colour bars where there are colours, a readable GIF, a log
colour scale for losses that span decades (issue 18)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from descentlab.critical.stall import Stall  # noqa: E402
from descentlab.report import diagnose_page, spectrum_page, surface_figures  # noqa: E402
from descentlab.report.html import Page  # noqa: E402
from descentlab.report.landscape_page import log_scale  # noqa: E402


def _boxes(fig, *artists):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [artist.get_window_extent(renderer) for artist in artists]


def _inside(inner, outer, slack=1.0):
    return (inner.x0 >= outer.x0 - slack and inner.x1 <= outer.x1 + slack and inner.y0 >= outer.y0 - slack
            and inner.y1 <= outer.y1 + slack)


def _rows(losses):
    return [{"step": i + 1, "train_loss": v, "val_loss": ""} for i, v in enumerate(losses)]


def test_stall_label_stays_inside_the_loss_axes():
    # the stall sits at the highest loss of the run, where the old label went above the axes
    losses = [2.3] * 100 + list(np.linspace(2.3, 0.5, 100))
    stall = Stall(step=60, loss=2.3, grad_norm=1e-3, reason="loss", status="diagnosed", verdict="saddle")
    late = Stall(step=199, loss=0.5, grad_norm=1e-3, reason="loss", status="diagnosed", verdict="minimum")
    fig = diagnose_page._loss_figure(_rows(losses), [stall, late])
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text().startswith("stall")]
    assert len(labels) == 2
    axes_box, *label_boxes = _boxes(fig, ax, *labels)
    assert all(_inside(box, axes_box) for box in label_boxes)
    plt.close(fig)


def test_mini_batch_loss_gets_a_moving_average():
    rng = np.random.default_rng(0)
    losses = list(1.0 + rng.normal(scale=0.3, size=200))
    window = 10
    # the oracle: the mean of the last `window` values (fewer at the start)
    expected = [np.mean(losses[max(0, i + 1 - window): i + 1]) for i in range(len(losses))]
    np.testing.assert_allclose(diagnose_page.moving_average(losses, window), expected, rtol=1e-12)
    fig = diagnose_page._loss_figure(_rows(losses), [], smooth=True)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any("mean of the last" in label for label in labels)
    plt.close(fig)
    fig = diagnose_page._loss_figure(_rows(losses), [], smooth=False)  # full batch: nothing to smooth
    assert not any("mean of the last" in line.get_label() for line in fig.axes[0].get_lines())
    plt.close(fig)


@pytest.mark.parametrize("draw", ["stall", "spectrum", "density"])
def test_legend_does_not_cover_the_extreme_eigenvalues(draw):
    values = np.concatenate([np.linspace(-0.8, 0.0, 20), np.linspace(0.0, 5.0, 200)])
    if draw == "stall":
        stall = Stall(step=10, loss=1.0, grad_norm=1e-3, reason="loss", status="diagnosed", verdict="saddle",
                      min_eigenvalue=-0.8, max_eigenvalue=5.0, eigenvalues=(-0.8, -0.7, 4.9, 5.0),
                      spectrum=tuple(values))
        fig = diagnose_page._spectrum_figure(stall)
    elif draw == "spectrum":
        fig = spectrum_page._figure({"spectrum": values.tolist(), "extremes": [-0.8, -0.7, 4.9, 5.0]})
    else:
        from types import SimpleNamespace

        from descentlab.report.spectrum_plot import plot_density

        grid = np.linspace(-1, 5.2, 200)
        density = SimpleNamespace(grid=grid, values=np.exp(-grid ** 2), nodes=np.array([[0.0, 5.0]]),
                                  weights=np.array([[0.5, 0.5]]))
        fig = plot_density(density, eigenvalues=[-0.8, 5.0])
    ax = fig.axes[0]
    axes_box, legend_box = _boxes(fig, ax, ax.get_legend())
    assert legend_box.x0 >= axes_box.x1 or not axes_box.overlaps(legend_box)  # beside the axes, never over lines
    plt.close(fig)


def _grid(n=30):
    x, y = np.meshgrid(np.linspace(-2, 2, n), np.linspace(-2, 2, n))
    return {"x": x, "y": y, "z": (1 - x * y) ** 2}


def test_surface_maps_have_colour_bars():
    grid = _grid()
    paths = {"sgd": {"x": np.linspace(-1, 1, 5), "y": np.linspace(1, 1, 5), "loss": np.ones(5)}}
    fig = surface_figures.contour_figure(grid, [], [], paths, [[-2, 2], [-2, 2]])
    assert len(fig.axes) == 2 and fig.axes[1].get_label() == "<colorbar>"
    plt.close(fig)
    lift = {"t": [-1, 0, 1], "loss_up": [1, 0, 1], "loss_down": [-1, 0, -1], "eigenvalues": [-2, 2],
            "point": [0, 0], "up": [1, 1], "down": [1, -1]}
    fig = surface_figures.lift_figure(lift, grid, [[-2, 2], [-2, 2]])
    assert sum(a.get_label() == "<colorbar>" for a in fig.axes) == 1
    plt.close(fig)


def _pixels(fig) -> np.ndarray:
    """The figure drawn by Agg as an ``(height, width, 3)`` int array, any warning an error
    (a diverged path used to overflow matplotlib's tick and path arithmetic)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def _rgb(color: str) -> np.ndarray:
    return np.array(matplotlib.colors.to_rgb(color)) * 255


def _colour_near(pixels, ax, xy, color, radius=2, tolerance=40) -> bool:
    """Whether ``color`` is drawn within ``radius`` pixels of the data point ``xy`` of ``ax``."""
    px, py = ax.transData.transform(xy)
    row, col = int(round(pixels.shape[0] - py)), int(round(px))
    patch = pixels[row - radius: row + radius + 1, col - radius: col + radius + 1]
    return bool((np.abs(patch - _rgb(color)).max(axis=-1) < tolerance).any())


def test_a_diverged_path_is_drawn_up_to_its_last_drawable_point():
    grid = _grid()
    # nesterov: (1, 1), then (1e10, 1e10) -- huge but drawable: the line leaves the window along
    # the diagonal -- then overflow. adam: (-1, -1), then (1e200, -1e200), beyond what can be
    # drawn: a gap, so no line toward the lower right.
    paths = {"nesterov": {"x": np.array([1.0, 1e10, 1e200, np.inf, np.nan]),
                          "y": np.array([1.0, 1e10, 1e200, np.inf, np.nan]),
                          "loss": np.array([1.0, 1e20, np.inf, np.inf, np.nan])},
             "adam": {"x": np.array([-1.0, 1e200, np.inf]), "y": np.array([-1.0, -1e200, np.nan]),
                      "loss": np.array([1.0, 1e300, np.nan])}}
    colors = surface_figures.path_colors(list(paths))
    fig = surface_figures.contour_figure(grid, [], [], paths, [[-2, 2], [-2, 2]])
    pixels = _pixels(fig)
    ax = fig.axes[0]
    assert ax.get_xlim() == (-2, 2) and ax.get_ylim() == (-2, 2)
    for t in (1.2, 1.5, 1.9):  # on the segment from (1, 1) toward (1e10, 1e10)
        assert _colour_near(pixels, ax, (t, t), colors["nesterov"])
    assert not _colour_near(pixels, ax, (-1.5, 1.5), colors["nesterov"])  # control: off the path
    for t in (0.5, 1.0):  # where a segment toward (1e200, -1e200) would pass
        assert not _colour_near(pixels, ax, (-1 + t, -1 - t), colors["adam"])
    plt.close(fig)
    for minimum in (None, 0.0):
        fig = surface_figures.loss_figure(paths, minimum)
        _pixels(fig)
        ax = fig.axes[0]
        lines = {line.get_label(): line.get_xydata() for line in ax.get_lines()}
        assert set(lines) == {"nesterov (diverged)", "adam (diverged)"}
        drawn = lines["nesterov (diverged)"]
        finite = drawn[np.isfinite(drawn[:, 1])]
        np.testing.assert_array_equal(finite, [[0, 1.0], [1, 1e20]])  # the losses up to the overflow
        low, high = ax.get_ylim()
        assert np.isfinite([low, high]).all() and low <= 1.0 and high >= 1e20
        plt.close(fig)


def test_gif_frames_show_the_paths_and_a_readable_legend(tmp_path):
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties
    from PIL import ImageSequence

    grid = _grid(20)
    names = ("sgd", "momentum", "adam")
    # paths on the left of the map, so the right of the figure holds only the legend
    paths = {name: {"x": np.linspace(-1.5, -0.5, 4), "y": np.linspace(1.0, 0.0, 4) - 0.5 * k, "loss": np.ones(4)}
             for k, name in enumerate(names, start=1)}
    colors = surface_figures.path_colors(names)
    surface_figures.animate_paths(tmp_path / "p.gif", grid, [], [], paths, [[-2, 2], [-2, 2]], every=3)
    gif = Image.open(tmp_path / "p.gif")
    assert gif.size >= (800, 560)
    frames = [np.asarray(frame.convert("RGB")).astype(int) for frame in ImageSequence.Iterator(gif)]
    assert len(frames) == 2  # steps 0 and 3
    # the width a name takes at 9 pt, measured by matplotlib's own text layout at the GIF's 100 dpi
    renderer = RendererAgg(800, 560, 100)
    widths = {name: renderer.get_text_width_height_descent(name, FontProperties(size=9), ismath=False)[0]
              for name in names}
    for step, pixels in zip((0, 3), frames):
        dark = pixels.max(axis=-1) < 90
        # the axes' frame: the columns and rows that are dark along most of their length
        columns, rows = dark.sum(axis=0), dark.sum(axis=1)
        left, right = np.flatnonzero(columns > columns.max() / 2)[[0, -1]]
        top, bottom = np.flatnonzero(rows > rows.max() / 2)[[0, -1]]
        entries = []
        for name in names:
            hit = np.abs(pixels - _rgb(colors[name])).max(axis=-1) < 40
            # the path's head at this step, placed by the window [-2, 2]^2 on the frame
            x, y = paths[name]["x"][step], paths[name]["y"][step]
            col, row = left + (x + 2) / 4 * (right - left), top + (2 - y) / 4 * (bottom - top)
            assert hit[int(row) - 3: int(row) + 4, int(col) - 3: int(col) + 4].any(), (step, name)
            # its legend entry right of the map: a swatch of its colour, then its name in dark text
            swatch = np.argwhere(hit[:, right + 3:])
            assert len(swatch), (step, name)
            centre, end = int(swatch[:, 0].mean()), right + 3 + swatch[:, 1].max()
            text = np.flatnonzero(dark[centre - 9: centre + 10, end + 3:].any(axis=0))
            assert abs((text[-1] - text[0] + 1) - widths[name]) <= 4, (step, name, text[-1] - text[0] + 1)
            entries.append(centre)
        assert entries == sorted(entries) and min(np.diff(entries)) >= 12  # in order, a line of 9 pt apart


def test_losses_spanning_decades_with_exact_zeros_get_a_log_scale():
    z = _grid(25)["z"]  # the lecture's loss: zero on w1 w2 = 1, which passes through grid points
    assert z.min() == 0.0
    use_log, floor = log_scale(z)
    # the floor: the smallest positive loss, but no less than 1e-8 of the largest (rounding's near-zeros)
    assert use_log and floor == pytest.approx(max(z[z > 0].min(), 1e-8 * z.max()))
    assert log_scale(np.linspace(1.0, 2.0, 10))[0] is False  # a narrow range stays linear
    assert log_scale(np.linspace(-1.0, 20.0, 10))[0] is False  # negative losses cannot be on a log scale


def _tables_outside_a_scrolling_box(page: str) -> int:
    """How many ``<table>`` of ``page`` have no ancestor inside ``<body>`` that scrolls sideways,
    by the page's own style sheet (selectors ``tag``, ``.class``, ``tag.class``) and ``style``
    attributes -- what a browser would let overflow the page instead of scrolling the table."""
    import re
    from html.parser import HTMLParser

    sheet = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    rules = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", sheet):
        declarations = dict((k.strip(), v.strip()) for k, v in (d.split(":", 1) for d in body.split(";") if ":" in d))
        rules += [(selector.strip(), declarations) for selector in selectors.split(",")]

    def overflow_x(tag: str, attrs: dict) -> str:
        classes = (attrs.get("class") or "").split()
        value = "visible"
        for selector, declarations in rules:
            name, _, cls = selector.partition(".")
            if (not name or name == tag) and (not cls or cls in classes) and re.fullmatch(r"[\w-]*(\.[\w-]+)?", selector):
                value = declarations.get("overflow-x", declarations.get("overflow", value))
        inline = dict(d.split(":", 1) for d in (attrs.get("style") or "").split(";") if ":" in d)
        inline = {k.strip(): v.strip() for k, v in inline.items()}
        return inline.get("overflow-x", inline.get("overflow", value))

    class Walk(HTMLParser):
        def __init__(self):
            super().__init__()
            self.open, self.unboxed = [], 0

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                tags = [t for t, _ in self.open]
                inside_body = self.open[tags.index("body") + 1:]
                self.unboxed += not any(scrolls for _, scrolls in inside_body)
            self.open.append((tag, overflow_x(tag, dict(attrs)) in ("auto", "scroll")))

        def handle_endtag(self, tag):
            while self.open and self.open.pop()[0] != tag:
                pass

    walk = Walk()
    walk.feed(page)
    return walk.unboxed


def test_wide_tables_scroll_inside_their_box():
    page = Page("t")
    page.table([{f"column {i}": 1.0 for i in range(30)}])  # ~3,000 px wide: more than any window
    page.table([{"a": 1}])
    assert _tables_outside_a_scrolling_box(page.render()) == 0
    # the check itself: a table in a plain box, or none, is found
    plain = "<html><head><style>div { margin: 0 }</style></head><body><div><table></table></div><table></table></body>"
    assert _tables_outside_a_scrolling_box(plain) == 2
    boxed = plain.replace("<div>", '<div style="overflow-x: auto">')
    assert _tables_outside_a_scrolling_box(boxed) == 1


def test_spearman_is_scipys_on_the_finite_pairs():
    import math

    from scipy.stats import spearmanr

    from descentlab.report.stats import spearman

    x, y = [1.0, 2.0, 3.0, 4.0, math.inf, 5.0], [0.3, 0.1, 0.4, 0.2, 0.9, math.nan]
    assert spearman(x, y) == float(spearmanr([1, 2, 3, 4], [0.3, 0.1, 0.4, 0.2]).statistic)
    assert math.isnan(spearman([1.0, 2.0], [3.0, 4.0])) and math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
