"""`streampack report STORE -o report.html`: one self-contained page to share a store's facts.

The page holds the summary of `stats.py`, the figures of `plots.py` as an inline PNG, the top
tokens, the skipped records by reason, and a few blocks (or samples) decoded as `streampack
inspect` shows them. Nothing is fetched: styles are inline and the image is a data URI, so the
file can be mailed or attached to a ticket. A small script marks the body with
`data-figures="N loaded"` once its images have decoded, which the browser test reads.
"""

import base64
import html
from pathlib import Path

from .errors import StreampackError
from .inspection import describe, open_store
from .store import TokenStore

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
td, th { border-bottom: 1px solid #ddd; padding: .2rem .8rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: .6rem; border-radius: 4px; }
.piece { margin: .4rem 0; } .kind { font-size: .8rem; color: #666; }
.trained pre, .chosen pre { background: #e7f4e4; } .rejected pre { background: #f8e4e4; }
.padding pre { background: #e4ecf8; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-figures", ok.length + " loaded of " + images.length);
});
"""


def _rows(pairs) -> str:
    cells = []
    for name, value in pairs:
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        cells.append(f"<tr><th>{html.escape(name)}</th><td class=n>{html.escape(shown)}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def _summary(stats: dict) -> str:
    pairs = [("tokenizer", stats["tokenizer"])]
    if "samples" in stats:
        pairs += [
            ("samples", stats["samples"]),
            ("tokens", stats["tokens"]),
            ("trained tokens", stats.get("trained_tokens") or 0),
        ]
        lengths = stats["sample_length"]
    else:
        pairs += [
            ("documents", stats["documents"]),
            ("tokens", stats["tokens"]),
            ("blocks", stats["blocks"]),
            ("block size", stats["block_size"]),
            ("padded tokens", stats["padded_tokens"]),
            ("dropped tokens", stats["dropped_tokens"]),
            ("truncated tokens", stats["truncated_tokens"]),
        ]
        if stats.get("tokens_per_character"):
            pairs.append(("tokens per character", f"{stats['tokens_per_character']:.3f}"))
        lengths = stats["document_length"]
    if lengths.get("count"):
        for q in (10, 50, 90, 99):
            pairs.append((f"length p{q}", f"{lengths[f'p{q}']:,.0f}"))
    return _rows(pairs)


def _top_tokens(stats: dict, limit: int = 20) -> str:
    if not stats.get("top"):
        return "<p>No token counts in this store.</p>"
    head = "<tr><th>rank</th><th>id</th><th>count</th><th>share</th><th>token</th></tr>"
    rows = [
        f"<tr><td class=n>{row['rank']}</td><td class=n>{row['id']}</td>"
        f"<td class=n>{row['count']:,}</td><td class=n>{row['share']:.2%}</td>"
        f"<td><code>{html.escape(repr(row.get('text', '')))}</code></td></tr>"
        for row in stats["top"][:limit]
    ]
    share = f"<p>The top {len(rows)} cover {sum(r['share'] for r in stats['top'][:limit]):.1%}.</p>"
    return share + "<table>" + head + "".join(rows) + "</table>"


def _skipped(stats: dict) -> str:
    entries = stats.get("skipped", {})
    if not entries:
        return "<p>No record was skipped.</p>"
    rows = [
        f"<tr><td>{html.escape(reason)}</td><td class=n>{entry['count']:,}</td>"
        f"<td>{html.escape(', '.join(entry.get('first', [])[:3]))}</td></tr>"
        for reason, entry in entries.items()
    ]
    head = "<tr><th>reason</th><th>records</th><th>first at</th></tr>"
    return "<table>" + head + "".join(rows) + "</table>"


def _examples(path, is_sft: bool, count: int) -> str:
    parts = []
    for index in range(count):
        keyword = {"sample": index} if is_sft else {"block": index}
        try:
            shown = describe(path, decode=True, **keyword)
        except StreampackError as error:  # no tokenizer to decode with: the page says why
            parts.append(f"<p>{html.escape(str(error))}</p>")
            break
        pieces = []
        for piece in shown["pieces"]:
            body = piece.get("text", " ".join(map(str, piece.get("ids", []))))
            pieces.append(
                f"<div class='piece {piece['kind']}'><div class=kind>{piece['kind']}, "
                f"{piece['tokens']} tokens</div><pre>{html.escape(body)}</pre></div>"
            )
        title = f"{'sample' if is_sft else 'block'} {index}"
        parts.append(f"<h3>{title}</h3>" + "".join(pieces))
    return "".join(parts)


def build_page(path, examples: int = 3) -> str:
    """The HTML page of the store at `path`, as a string."""
    from . import plots
    from .stats import sft_store_stats, store_stats

    store = open_store(path)
    is_sft = not isinstance(store, TokenStore)
    stats = sft_store_stats(path) if is_sft else store_stats(path, top=20)
    figure = base64.b64encode(plots.png_bytes(stats)).decode("ascii")
    count = min(examples, len(store))
    title = f"streampack report: {Path(path).name}"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(str(path))}</p>"
        f"<h2>Summary</h2>{_summary(stats)}"
        f"<h2>Figures</h2><img alt='document lengths and block fill' "
        f"src='data:image/png;base64,{figure}'>"
        + ("" if is_sft else f"<h2>Most frequent tokens</h2>{_top_tokens(stats)}")
        + f"<h2>Skipped records</h2>{_skipped(stats)}"
        f"<h2>First {'samples' if is_sft else 'blocks'}</h2>{_examples(path, is_sft, count)}"
        f"<script>{SCRIPT}</script></body></html>"
    )


def write_page(path, output, examples: int = 3) -> Path:
    """Write the page of the store at `path` to `output`."""
    output = Path(output)
    output.write_text(build_page(path, examples), encoding="utf-8")
    return output
