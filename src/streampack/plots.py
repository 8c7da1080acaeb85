"""Figures of a stats dict (`stats.py`): document lengths, block fill, throughput over the run.

matplotlib is an extra (`pip install "streampack[plot]"`) and is imported only here, with its
file-only Agg backend, so nothing needs a display. Every figure is drawn from the dict alone:
the histograms are in it already.
"""

import io
import itertools

from .errors import ConfigError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            'plots need matplotlib: pip install "streampack[plot]" (or matplotlib)'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _histogram(
    axis, summary: dict, log_x: bool, title: str, xlabel: str, share: bool = False
) -> None:
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    if not summary.get("count"):
        axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
        return
    edges = summary["histogram"]["edges"]
    counts = summary["histogram"]["counts"]
    widths = [right - left for left, right in itertools.pairwise(edges)]
    axis.bar(edges[:-1], counts, width=widths, align="edge", color="#4c72b0", edgecolor="white")
    if log_x:
        axis.set_xscale("log")
    axis.set_ylabel("count")
    median = summary["p50"]
    shown = f"{median:.1%}" if share else f"{median:,.3g}"
    axis.axvline(median, color="#dd8452", linestyle="--", label=f"median {shown}")
    axis.legend(loc="upper right", fontsize="small")


def figure(stats: dict):
    """A matplotlib figure of the document length histogram (log scale), the block fill and,
    when the stats hold a run timeline, the throughput over the run's time."""
    plt = _pyplot()
    timeline = stats.get("timeline") or []
    panels = 3 if timeline else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), layout="constrained")
    if "document_length" in stats:
        lengths, title = stats["document_length"], "Document length"
    else:
        lengths, title = stats["sample_length"], "Sample length"
    _histogram(axes[0], lengths, True, title, "tokens (log scale)")
    if "block_fill" in stats:
        fill = stats["block_fill"]
        _histogram(axes[1], fill, False, "Block fill", "real tokens / block size", share=True)
    else:
        axes[1].set_axis_off()
        trained = stats.get("trained_tokens") or 0
        summary = f"{stats.get('samples', 0):,} samples\n{stats['tokens']:,} tokens"
        if stats.get("kind") != "preference":
            summary += f"\n{trained:,} trained ({trained / max(stats['tokens'], 1):.1%})"
        axes[1].text(0.5, 0.5, summary, ha="center", va="center", transform=axes[1].transAxes)
    if timeline:
        seconds = [point[0] for point in timeline]
        rates = [point[2] / 1e6 for point in timeline]
        axes[2].plot(seconds, rates, color="#55a868")
        axes[2].set_title("Throughput")
        axes[2].set_xlabel("seconds into the run")
        axes[2].set_ylabel("M tokens / s")
        axes[2].set_ylim(bottom=0)
    where = stats.get("store") or ", ".join(stats.get("inputs", []))
    fig.suptitle(f"{where}: {stats['documents']:,} documents, {stats['tokens']:,} tokens")
    return fig


def save(stats: dict, path) -> None:
    """The figure as a PNG file at `path`."""
    fig = figure(stats)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def png_bytes(stats: dict) -> bytes:
    """The figure as PNG bytes (for the HTML report)."""
    buffer = io.BytesIO()
    fig = figure(stats)
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()
