"""Plots of region perturbation (:func:`plot_curves`: the perturbation curves and the AOPC curves of one
or several methods), drawn on matplotlib's Agg canvas without pyplot (:func:`_figure`, :func:`_save`,
which the model-randomisation plot shares)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .curves import PerturbationResult


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | None, dpi: int = 100) -> Any:
    if path is not None:
        import os

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, format="png", dpi=dpi)
    return fig


def plot_curves(results: Mapping[str, PerturbationResult] | PerturbationResult, path: str | None = None,
                title: str | None = None, dpi: int = 100):
    """Plot region-perturbation curves: mean target score after ``k`` perturbed regions (left) and
    the AOPC up to ``k`` (right), one line per method, labelled with its AOPC. Returns the matplotlib
    Figure (Agg canvas, no pyplot); writes a PNG when ``path`` is given."""
    if isinstance(results, PerturbationResult):
        results = {"relevance": results}
    if not results:
        raise ValueError("nothing to plot")
    fig = _figure(12.0, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    items = sorted(results.items(), key=lambda kv: -kv[1].aopc)
    for label, r in items:
        k = np.arange(r.steps + 1)
        style = dict(color="black", linestyle="--") if label == "random" else {}
        ax1.plot(k, r.curve, linewidth=1.4, **style)
        ax2.plot(k, r.aopc_curve, label=f"{label} ({r.aopc:.3f})", linewidth=1.4, **style)
    first = items[0][1]
    ax1.set_xlabel(f"perturbation steps ({first.region}, {first.order.upper()})")
    ax1.set_ylabel("mean target score f(x) (pre-softmax)")
    ax2.set_xlabel("perturbation steps")
    ax2.set_ylabel("AOPC up to step k")
    ax2.legend(fontsize=7, title="method (AOPC)", title_fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"Region perturbation ({first.perturbation}, {first.scores.shape[0]} samples)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi)
