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


def test_a_diverged_path_is_drawn_without_overflow():
    grid = _grid()
    huge = np.array([1.0, 1e10, 1e200, np.inf, np.nan])
    paths = {"nesterov": {"x": huge, "y": huge, "loss": np.array([1.0, 1e20, np.inf, np.inf, np.nan])}}
    for fig in (surface_figures.contour_figure(grid, [], [], paths, [[-2, 2], [-2, 2]]),
                surface_figures.loss_figure(paths, None), surface_figures.loss_figure(paths, 0.0)):
        fig.savefig(__import__("io").BytesIO(), format="png")  # overflowed matplotlib's ticks before
        plt.close(fig)


def test_gif_is_large_with_a_readable_legend(tmp_path):
    grid = _grid(20)
    paths = {name: {"x": np.linspace(-1, 1, 4) * k, "y": np.linspace(1, 0, 4), "loss": np.ones(4)}
             for k, name in enumerate(("sgd", "momentum", "adam"), start=1)}
    surface_figures.animate_paths(tmp_path / "p.gif", grid, [], [], paths, [[-2, 2], [-2, 2]], every=3)
    assert Image.open(tmp_path / "p.gif").size >= (800, 560)


def test_losses_spanning_decades_with_exact_zeros_get_a_log_scale():
    z = _grid(25)["z"]  # the lecture's loss: zero on w1 w2 = 1, which passes through grid points
    assert z.min() == 0.0
    use_log, floor = log_scale(z)
    # the floor: the smallest positive loss, but no less than 1e-8 of the largest (rounding's near-zeros)
    assert use_log and floor == pytest.approx(max(z[z > 0].min(), 1e-8 * z.max()))
    assert log_scale(np.linspace(1.0, 2.0, 10))[0] is False  # a narrow range stays linear
    assert log_scale(np.linspace(-1.0, 20.0, 10))[0] is False  # negative losses cannot be on a log scale


def test_wide_tables_scroll_inside_their_box():
    page = Page("t")
    page.table([{f"column {i}": 1.0 for i in range(30)}])
    html = page.render()
    assert '<div class="table-wrap"><table>' in html
    assert ".table-wrap { max-width: 100%; overflow-x: auto;" in html


def test_spearman_is_scipys_on_the_finite_pairs():
    import math

    from scipy.stats import spearmanr

    from descentlab.report.stats import spearman

    x, y = [1.0, 2.0, 3.0, 4.0, math.inf, 5.0], [0.3, 0.1, 0.4, 0.2, 0.9, math.nan]
    assert spearman(x, y) == float(spearmanr([1, 2, 3, 4], [0.3, 0.1, 0.4, 0.2]).statistic)
    assert math.isnan(spearman([1.0, 2.0], [3.0, 4.0])) and math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
