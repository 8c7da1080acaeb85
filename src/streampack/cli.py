"""The `streampack` command: a thin layer over the library.

Exit codes: 0 success, 1 a problem with the data or a store, 2 a usage error, 130 interrupted.
"""

import json
import logging
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

import click

from .config import (
    BACKENDS,
    DOC_MODES,
    ENCODING_ERRORS,
    FORMATS,
    ON_ERRORS,
    OVERSIZE,
    POSITION_IDS,
    REMAINDERS,
)
from .errors import StreampackError

log = logging.getLogger("streampack")


def _setup_logging(verbose: int, quiet: bool) -> None:
    # Warnings always; -v adds phases and the choices made for the user, -vv per-batch detail.
    level = (
        logging.DEBUG if verbose > 1 else logging.INFO if verbose and not quiet else logging.WARNING
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("streampack: %(message)s"))
    root = logging.getLogger("streampack")
    root.handlers[:] = [handler]
    root.setLevel(level)


class _Command(click.Command):
    """Runs the command body so that library errors end in one line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StreampackError as error:
            click.echo(f"streampack: error: {error}", err=True)
            ctx.exit(1)
        except OSError as error:
            # A path the system refused (a missing folder, no permission, a full disk).
            where = f"{error.filename}: " if error.filename else ""
            click.echo(f"streampack: error: {where}{error.strerror or error}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("streampack: interrupted", err=True)
            ctx.exit(130)


def _common(function):
    function = click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes.")(
        function
    )
    return click.option(
        "-v", "--verbose", count=True, help="Say more: -v phases and choices, -vv details."
    )(function)


def _use_run_file(ctx: click.Context, param: click.Parameter, value) -> None:
    """`--config FILE`: the file's settings become this command's defaults, so flags win."""
    if value is None:
        return
    from .runconfig import read_run_file, settings_for

    names = {}
    for other in ctx.command.params:
        if other.name in (param.name, "help"):
            continue
        longs = [opt[2:] for opt in other.opts if opt.startswith("--")]
        for key in longs or [other.name.replace("_", "-")]:
            names[key] = other.name
    try:
        settings = settings_for(
            read_run_file(value), ctx.command.name, names, set(main.commands), value
        )
    except StreampackError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    if "sources" in settings and isinstance(settings["sources"], str):
        settings["sources"] = [settings["sources"]]
    params = {other.name: other for other in ctx.command.params}
    for name, setting in settings.items():
        try:
            params[name].type_cast_value(ctx, setting)
        except click.BadParameter as error:
            key = name.rstrip("_").replace("_", "-")
            message = f"{value}: {key}: {error.message}"
            raise click.BadParameter(message, ctx=ctx, param=param) from None
    ctx.default_map = {**(ctx.default_map or {}), **settings}


def _use_store_recipe(ctx: click.Context, param: click.Parameter, value) -> None:
    """`--like STORE`: the settings that built STORE become this command's defaults."""
    if value is None:
        return
    from .runconfig import store_settings
    from .store.reader import read_metadata

    try:
        settings = store_settings(read_metadata(value))
    except StreampackError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    ctx.default_map = {**(ctx.default_map or {}), **settings}


def _run_file(function):
    return click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        is_eager=True,
        expose_value=False,
        callback=_use_run_file,
        help="A TOML or YAML file of this command's settings (flags override it).",
    )(function)


def _read_options(function, with_size: bool = True):
    """What to read and what to do with bad input: shared by `pack` and `validate`."""
    options = [
        click.option(
            "--doc-mode",
            type=click.Choice(DOC_MODES),
            default="line",
            show_default=True,
            help="Text files: a document per line, paragraph or file.",
        ),
        click.option(
            "--text-field",
            default=None,
            help="Field with the text in JSON, parquet, CSV. Default: text, else the "
            "only string field.",
        ),
        click.option(
            "--format",
            "format_",
            type=click.Choice(FORMATS),
            default=None,
            help="Read every file as this format, whatever its extension.",
        ),
        click.option(
            "--on-error",
            type=click.Choice(ON_ERRORS),
            default="skip",
            show_default=True,
            help="A bad record: count it in the report and go on, or stop with its file:line.",
        ),
        click.option(
            "--strict",
            is_flag=True,
            help="Same as --on-error raise --encoding-errors raise.",
        ),
        click.option(
            "--encoding",
            default="utf-8",
            show_default=True,
            help="Text encoding of the files, e.g. latin-1, gb18030.",
        ),
        click.option(
            "--encoding-errors",
            type=click.Choice(ENCODING_ERRORS),
            default="replace",
            show_default=True,
            help="Invalid bytes: replace with U+FFFD (counted), skip the record, or raise.",
        ),
    ]
    if with_size:
        options += [
            click.option(
                "--max-document-bytes",
                type=click.IntRange(min=16),
                default=None,
                help="Cap on a document's UTF-8 size; larger ones are split or skipped.",
            ),
            click.option(
                "--oversize",
                type=click.Choice(OVERSIZE),
                default="split",
                show_default=True,
                help="Documents above --max-document-bytes: split at line or sentence "
                "ends, or skip.",
            ),
        ]
    for option in reversed(options):
        function = option(function)
    return function


def _read_options_without_size(function):
    return _read_options(function, with_size=False)


def _bad_input(on_error: str, strict: bool, encoding: str, encoding_errors: str) -> dict:
    if strict:
        ctx = click.get_current_context()
        for name, value in (("on_error", on_error), ("encoding_errors", encoding_errors)):
            given = ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
            if given and value != "raise":
                flag = "--" + name.replace("_", "-")
                raise click.UsageError(f"--strict means {flag} raise; it cannot go with {value}")
        on_error, encoding_errors = "raise", "raise"
    return {"on_error": on_error, "encoding": encoding, "encoding_errors": encoding_errors}


def _pack_options(function):
    options = [
        click.option(
            "--tokenizer",
            default=None,
            metavar="PATH|ID",
            help="Local model folder, tokenizer.json, or a hub id already in the local "
            "Hugging Face cache. Default: built-in Qwen2.5.",
        ),
        click.option(
            "--backend",
            type=click.Choice(BACKENDS),
            default="auto",
            show_default=True,
            help="auto uses quicktok where it is verified exact, else tokenizers.",
        ),
        click.option(
            "--eos-token",
            default=None,
            metavar="TOKEN",
            help="End-of-document token, if not the tokenizer config's eos_token.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Encoding threads or processes; 0 means all cores.",
        ),
        click.option(
            "--block-size",
            type=click.IntRange(1, 1 << 24),
            default=1024,
            show_default=True,
            help="Tokens per block.",
        ),
        click.option(
            "--remainder",
            type=click.Choice(REMAINDERS),
            default="drop",
            show_default=True,
            help="The final partial block: drop it or pad it.",
        ),
        click.option(
            "--no-packing",
            is_flag=True,
            help="One document per sample, truncated or padded to the block size.",
        ),
        click.option(
            "--position-ids",
            type=click.Choice(POSITION_IDS),
            default="none",
            show_default=True,
            help="reset: positions restart after every EOS.",
        ),
        click.option(
            "--batch-mb",
            type=click.FloatRange(0.001, 1024),
            default=4.0,
            show_default=True,
            help="About this much text per tokenizer batch.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return _read_options(function)


def _scale_options(function):
    """Split builds: an engine, the task split, and this node's part of a multi-node build."""
    options = [
        click.option(
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="ray: build the units as Ray tasks (pip install 'streampack[ray]').",
        ),
        click.option(
            "--ray-address",
            default=None,
            metavar="ADDR",
            help="Ray cluster to use (e.g. ray://head:10001 or auto). Default: start a local "
            "instance on 127.0.0.1.",
        ),
        click.option(
            "--split-mb",
            type=click.FloatRange(min=0.004),
            default=None,
            help="Cut the sources into units of about this size (default 64 with --engine ray "
            "or --num-nodes); the store is the same for any engine or cluster size.",
        ),
        click.option(
            "--num-nodes",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Build part --node-rank of this many; join the parts with `streampack merge`.",
        ),
        click.option(
            "--node-rank",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Which part this run builds: units i with i % --num-nodes == --node-rank.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _scale_settings(scale: dict) -> dict:
    if scale["node_rank"] >= scale["num_nodes"]:
        raise click.UsageError(
            f"--node-rank must be below --num-nodes ({scale['num_nodes']}), "
            f"found {scale['node_rank']}"
        )
    split_mb = scale.pop("split_mb")
    scale["split_bytes"] = None if split_mb is None else int(split_mb * (1 << 20))
    return scale


class _BatchSize(click.ParamType):
    name = "auto|N"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        if str(value).isdigit() and int(value) > 0:
            return int(value)
        self.fail(f"must be auto or a number of documents (1 or more), found {value!r}")


class _ProgressBar:
    """A tqdm bar on stderr, made at the first update, only when stderr is a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar = None

    def update(self, progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=progress.total_bytes,
                unit="B",
                unit_scale=True,
                desc="packing",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        self.bar.update(min(progress.bytes, self.bar.total) - self.bar.n)
        self.bar.set_postfix(
            docs=f"{progress.documents:,}", tokens=f"{progress.tokens:,}", refresh=False
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _CountBar(_ProgressBar):
    """A tqdm counter (no total) on stderr, only when stderr is a terminal."""

    def __init__(self, quiet: bool, unit: str) -> None:
        super().__init__(quiet)
        self.unit = unit

    def update(self, count: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(unit=f" {self.unit}", desc="encoding", file=sys.stderr)
        self.bar.update(count - self.bar.n)


def _counted(report: dict, section: str, label: str, width: int) -> list[str]:
    """The lines of one count section of a report (`skipped`, `repaired`): total, then reasons."""
    counts = report.get(section) or {}
    if not counts:
        return []
    total = sum(entry["count"] for entry in counts.values())
    lines = [f"{section:<14} {total:,} records ({label})"]
    for reason, entry in counts.items():
        first = entry["first"][0] if entry["first"] else ""
        lines.append(f"  {reason:<{width}} {entry['count']:>8,}  first at {first}")
    return lines


def _summary(report: dict) -> str:
    lines = [
        f"documents      {report['documents']:,}",
        f"tokens         {report['tokens']:,}  (document tokens, one EOS each)",
        f"blocks         {report['blocks']:,} x {report['block_size']}",
        f"dropped        {report['dropped_tokens']:,} tokens (final tail)",
        f"padded         {report['padded_tokens']:,} tokens",
    ]
    if report.get("truncated_tokens"):
        lines.append(f"truncated      {report['truncated_tokens']:,} tokens")
    lines += _counted(report, "skipped", "not used", 22)
    lines += _counted(report, "repaired", "kept after a repair", 22)
    for field_name, types in (report.get("field_types") or {}).items():
        mixed = ", ".join(f"{kind} {count:,}" for kind, count in types.items())
        lines.append(f"field {field_name!r} changes type: {mixed}")
    if report.get("files_skipped"):
        lines.append(f"files skipped  {len(report['files_skipped'])} (see report.json)")
    if report.get("resumed"):
        resumed = report["resumed"]
        lines.append(
            f"resumed        after shard {resumed['after_shards']} "
            f"({resumed['after_blocks']:,} blocks were committed before)"
        )
    lines += [
        f"files          {len(report['files'])}",
        f"backend        {report['backend']} ({report['workers']} workers), "
        f"tokenizer {report['tokenizer']}",
        f"time           {report['seconds']:.2f} s  ({report['tokens_per_second'] / 1e6:.2f} M "
        f"tokens/s, {report['megabytes_per_second']:.1f} MB/s); tokenizer loaded in "
        f"{report['tokenizer_load_seconds']:.2f} s",
        f"peak memory    {report['peak_rss_mb']:.0f} MB",
    ]
    if report.get("batch_size_chosen_mb") is not None:
        lines.append(
            f"batch size     auto: {report['batch_size_chosen_mb']:g} MB of text "
            f"({report['documents_per_batch']:g} documents a batch)"
        )
    if report.get("backpressure_events"):
        lines.append(
            f"back-pressure  {len(report['backpressure_events'])} steps under --max-memory "
            f"{report['max_memory_mb']:.0f} MB (see report.json)"
        )
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streampack")
def main() -> None:
    """Stream, tokenize and pack LLM training data in bounded memory.

    \b
    Examples:
      streampack demo
      streampack pack corpus/ -o store/ --block-size 2048
      streampack validate corpus/
      streampack verify store/
      streampack stats store/ --top 50
      streampack inspect store/ --block 0 --decode
    """


@main.command(cls=_Command)
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The store folder to write.",
)
@_pack_options
@click.option("--overwrite", is_flag=True, help="Replace a store already at --output.")
@click.option(
    "--append",
    is_flag=True,
    help="Add the blocks of SOURCE... after those of the store at --output.",
)
@click.option(
    "--shard-mb",
    type=click.FloatRange(0.01),
    default=256,
    show_default=True,
    help="About this size per token shard file (a shard ends at a batch boundary); a killed "
    "build continues from its last whole shard.",
)
@click.option(
    "--token-stats/--no-token-stats",
    default=True,
    show_default=True,
    help="Count every token id in the store, for `streampack stats`.",
)
@click.option(
    "--batch-size",
    type=_BatchSize(),
    default="auto",
    show_default=True,
    help="Documents per tokenizer batch, or auto: the text per batch is tuned from the "
    "throughput of the first batches. The store is the same whatever the size.",
)
@click.option(
    "--max-memory",
    type=click.FloatRange(0),
    default=None,
    metavar="MB",
    help="Memory budget: near it the run applies back-pressure, over it for good it stops "
    "(a build continues when run again). Default: half the machine's or the cgroup's memory; "
    "0: no guard.",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Keep watching SOURCE... and append the files that appear, each once, in the order "
    "they appear (a file counts when its name is not *.tmp, *.partial, *.part or hidden and it "
    "is unchanged for --settle seconds); Ctrl-C stops, and the same command goes on.",
)
@click.option(
    "--settle",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="With --follow: seconds a file must stay unchanged to count as complete.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option(
    "--like",
    type=click.Path(file_okay=False, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=_use_store_recipe,
    help="Build with the settings (and sources) recorded in this store (flags override them).",
)
@_scale_options
@_run_file
@_common
def pack(
    sources,
    output,
    tokenizer,
    backend,
    eos_token,
    workers,
    block_size,
    remainder,
    no_packing,
    position_ids,
    batch_mb,
    doc_mode,
    text_field,
    format_,
    on_error,
    strict,
    encoding,
    encoding_errors,
    max_document_bytes,
    oversize,
    overwrite,
    append,
    shard_mb,
    token_stats,
    batch_size,
    max_memory,
    follow,
    settle,
    as_json,
    quiet,
    verbose,
    **scale,
):
    """Tokenize and pack SOURCE... (files, folders, globs) into a token store.

    A build that was killed or interrupted continues from its last committed shard when run
    again with the same arguments, and writes the same store; other arguments, or a source
    file that changed, are refused with what differs (--overwrite starts afresh).

    Exit codes: 0 done, 1 a problem with the data or the store (one line names it), 2 a usage
    error, 130 interrupted (the same command continues it; an old store stays as it was).

    \b
    Examples:
      streampack pack data/pretrain/ -o store/
      streampack pack 'data/**/*.jsonl.gz' -o store/ --text-field content --block-size 2048
      streampack pack notes.txt -o store/ --remainder pad --position-ids reset
      streampack pack corpus/ -o store/ --strict --max-document-bytes 1000000
      streampack pack more/ -o store/ --append
      streampack pack --config recipe.toml
      streampack pack --like store/ -o store-again/
      streampack pack corpus/ -o store/ --engine ray --ray-address auto
    """
    if append and overwrite:
        raise click.UsageError("--append adds to a store and --overwrite replaces it: pick one")
    if follow and (append or overwrite):
        raise click.UsageError("--follow appends by itself: leave out --append and --overwrite")
    from .api import pack as pack_store
    from .api import pack_follow

    scale = _scale_settings(scale)
    _setup_logging(verbose, quiet)
    bar = _ProgressBar(quiet or follow)
    try:
        report = (pack_follow if follow else pack_store)(
            sources,
            output,
            tokenizer=tokenizer,
            block_size=block_size,
            packing=not no_packing,
            remainder=remainder,
            position_ids=position_ids,
            backend=backend,
            workers=workers,
            eos_token=eos_token,
            doc_mode=doc_mode,
            text_field=text_field,
            format=format_,
            batch_bytes=int(batch_mb * (1 << 20)),
            max_document_bytes=max_document_bytes,
            oversize=oversize,
            **_bad_input(on_error, strict, encoding, encoding_errors),
            shard_bytes=int(shard_mb * (1 << 20)),
            token_stats=token_stats,
            batch_size=batch_size,
            max_memory=None if max_memory is None else int(max_memory * (1 << 20)),
            **scale,
            **(
                {"settle": settle}
                if follow
                else {"overwrite": overwrite, "append": append, "on_progress": bar.update}
            ),
        )
    finally:
        bar.close()
    if follow:
        return
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    elif not quiet:
        click.echo(_summary(report))
        if "units" in report:
            click.echo(_split_summary(report))
        click.echo(f"store          {output}")


def _split_summary(report: dict) -> str:
    line = (
        f"units          {report['units']:,} of {report['units_total']:,} "
        f"({report['split_bytes'] / (1 << 20):g} MB split), engine {report['engine']}, "
        f"{report['retries']} retries"
    )
    if "node_rank" in report:
        line += f"; part {report['node_rank']} of {report['num_nodes']}"
    return line


@main.command(cls=_Command)
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--block", type=int, default=None, help="Token store: the block to show (default 0).")
@click.option("--sample", type=int, default=None, help="SFT store: the sample to show (default 0).")
@click.option("--decode", is_flag=True, help="Show text, decoded by the store's own tokenizer.")
@click.option("--json", "as_json", is_flag=True, help="Print ids (and text) as JSON on stdout.")
@_common
def inspect(store, block, sample, decode, as_json, quiet, verbose):
    """Show one block of a token store, or one sample of an SFT store: its documents (or its
    prompt and trained runs, or a pair's prompt, chosen and rejected) as ids or, with --decode,
    as text. Negative numbers count from the end.

    Exit codes: 0 shown, 1 no such store, block or sample, or no tokenizer to decode with,
    2 a usage error.

    \b
    Examples:
      streampack inspect store/ --block 0 --decode
      streampack inspect sft-store/ --sample -1 --decode
      streampack inspect store/ --block 12 --json
    """
    from .inspection import describe, render

    _setup_logging(verbose, quiet)
    if block is not None and sample is not None:
        raise click.UsageError("give --block or --sample, not both")
    described = describe(store, block=block, sample=sample, decode=decode)
    if as_json:
        click.echo(json.dumps(described, indent=2, ensure_ascii=False))
    else:
        click.echo(render(described, color=sys.stdout.isatty()))


@main.command(cls=_Command)
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--no-checksums", is_flag=True, help="Skip re-hashing the token shards (faster).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_common
def verify(store, no_checksums, as_json, quiet, verbose):
    """Check STORE against its metadata: sizes, checksums, index, counts, id range.

    Exit code 0 when the store is sound, 1 when a problem was found.

    \b
    Example:
      streampack verify store/
    """
    from .store import verify_store

    _setup_logging(verbose, quiet)
    problems = verify_store(store, checksums=not no_checksums)
    if as_json:
        click.echo(json.dumps({"store": str(store), "ok": not problems, "problems": problems}))
    elif problems:
        for problem in problems:
            click.echo(f"streampack: {problem}", err=True)
    elif not quiet:
        click.echo(f"{store}: ok")
    sys.exit(1 if problems else 0)


def _distribution_line(name: str, summary: dict, unit: str, percent: bool = False) -> str:
    if not summary.get("count"):
        return f"{name:<15}-"
    show = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:,.0f}")
    middle = ", ".join(f"p{q} {show(summary[f'p{q}'])}" for q in (10, 50, 90, 99))
    return f"{name:<15}{middle}, max {show(summary['max'])}{unit}"


def _stats_table(stats: dict) -> str:
    where = stats["store"] if "store" in stats else ", ".join(stats["inputs"])
    lines = [
        f"{'store' if 'store' in stats else 'sources':<15}{where}",
        f"documents      {stats['documents']:,}",
        f"tokens         {stats['stored_tokens']:,} stored in {stats['blocks']:,} blocks of "
        f"{stats['block_size']} ({stats['padded_tokens']:,} padding, "
        f"{stats['dropped_tokens']:,} dropped)",
        f"tokenizer      {stats['tokenizer']} ({stats['vocab_size']:,} ids)",
    ]
    if "document_length" in stats:
        lines.append(_distribution_line("doc length", stats["document_length"], " tokens"))
        lines.append(_distribution_line("block fill", stats["block_fill"], "", percent=True))
    for key, title in (("skipped", "skipped"), ("repaired", "repaired")):
        for reason, entry in stats.get(key, {}).items():
            first = ", ".join(entry.get("first", [])[:1])
            lines.append(f"{title:<15}{entry['count']:,} {reason} (first: {first})")
    if stats.get("note"):
        lines.append(f"note           {stats['note']}")
    if stats["token_counts"]:
        top = stats["top"]
        lines += [
            f"distinct       {stats['distinct_tokens']:,} token ids used",
            f"top {len(top)} tokens cover {stats['top_share']:.2%} of the stored tokens",
            f"  {'rank':>4}  {'id':>7}  {'count':>13}  {'share':>7}  {'cumul.':>7}  token",
        ]
        for row in top:
            shown = repr(row["text"]) if "text" in row else ""
            if "\ufffd" in row.get("text", ""):
                # Part of a character: the byte-level piece says more than a replacement mark.
                shown = f"{row['piece']!r} (part of a character)"
            elif row.get("special"):
                shown += " (special)"
            lines.append(
                f"  {row['rank']:>4}  {row['id']:>7}  {row['count']:>13,}  {row['share']:>7.2%}  "
                f"{row['cumulative_share']:>7.2%}  {shown}"
            )
    if stats["sources"]:
        width = min(60, max(len(entry["path"]) for entry in stats["sources"]))
        lines.append("tokens per character, by source (text tokens, no EOS)")
        lines.append(
            f"  {'source':<{width}}  {'documents':>10}  {'characters':>13}  "
            f"{'tokens':>13}  tokens/char"
        )
        rows = [
            *stats["sources"],
            {
                "path": "all",
                "documents": stats["documents"],
                "characters": stats["characters"],
                "tokens": stats["text_tokens"],
                "tokens_per_character": stats["tokens_per_character"],
            },
        ]
        for entry in rows:
            ratio = entry["tokens_per_character"]
            lines.append(
                f"  {entry['path']:<{width}}  {entry['documents']:>10,}  "
                f"{entry['characters']:>13,}  {entry['tokens']:>13,}  "
                + ("-" if ratio is None else f"{ratio:.3f}")
            )
    return "\n".join(lines)


def _sft_stats_table(stats: dict) -> str:
    trained = stats["trained_tokens"] or 0
    pairs = stats["kind"] == "preference"
    tokens = f"{stats['tokens']:,} in prompts, chosen and rejected answers"
    if not pairs:
        tokens = (
            f"{stats['tokens']:,}, {trained:,} trained ({trained / max(stats['tokens'], 1):.1%})"
        )
    lines = [
        f"store          {stats['store']} ({stats['kind']}, template {stats['template']})",
        f"{'pairs' if pairs else 'samples':<15}{stats['samples']:,} of "
        f"{stats['records']:,} records",
        f"tokens         {tokens}",
        f"tokenizer      {stats['tokenizer']} ({stats['vocab_size']:,} ids)",
        _distribution_line(
            "prompt length" if pairs else "sample length", stats["sample_length"], " tokens"
        ),
    ]
    for reason, entry in stats.get("skipped", {}).items():
        first = ", ".join(entry.get("first", [])[:1])
        lines.append(f"skipped        {entry['count']:,} {reason} (first: {first})")
    return "\n".join(lines)


def _is_store(targets: tuple) -> bool:
    """One folder that is a store, or a store's folder left by an unfinished build."""
    if len(targets) != 1 or not Path(targets[0]).is_dir():
        return False
    folder = Path(targets[0])
    marks = ("metadata.json", "build.json")
    return any((folder / mark).is_file() for mark in marks) or any(folder.glob("shard-*"))


@main.command(cls=_Command)
@click.argument("targets", nargs=-1, required=True, metavar="STORE_OR_SOURCE...")
@click.option(
    "--top",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="List this many of the most frequent tokens.",
)
@click.option(
    "--tokenizer",
    default=None,
    metavar="PATH|ID",
    help="A store: decode with this tokenizer (same vocabulary). Sources: tokenize with it "
    "(default: built-in Qwen2.5).",
)
@click.option(
    "--block-size",
    type=click.IntRange(1, 1 << 24),
    default=1024,
    show_default=True,
    help="Sources: the block size to measure the fill of.",
)
@click.option(
    "--doc-mode",
    type=click.Choice(DOC_MODES),
    default="line",
    show_default=True,
    help="Sources: text files hold a document per line, paragraph or file.",
)
@click.option("--text-field", default=None, help="Sources: the field with the text.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the document length histogram, block fill and throughput to this PNG "
    '(needs matplotlib: pip install "streampack[plot]").',
)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON on stdout.")
@_common
def stats(targets, top, tokenizer, block_size, doc_mode, text_field, plot, as_json, quiet, verbose):
    """Describe a store, or what sources would give (streamed, nothing written): documents,
    tokens, blocks, document length percentiles, block fill, padding and truncation, skipped
    records by reason, the most frequent tokens decoded with the share of the corpus they cover,
    and the tokens per character of every source. An SFT store: samples, trained tokens and
    sample lengths.

    A vocabulary that splits a domain's words into many pieces shows as a high tokens per
    character on that domain's sources and as word pieces among the top tokens.

    Exit code 0; 1 when a store is incomplete or no document could be read; 2 a usage error.

    \b
    Examples:
      streampack stats store/
      streampack stats store/ --top 200 --json
      streampack stats corpus/ --block-size 2048 --plot stats.png
    """
    from .inspection import is_sft_store
    from .stats import sft_store_stats, source_stats, store_stats

    _setup_logging(verbose, quiet)
    sft = False
    if _is_store(targets):
        sft = is_sft_store(targets[0])
        if sft:
            result = sft_store_stats(targets[0])
        else:
            result = store_stats(targets[0], top=top, tokenizer=tokenizer)
    else:
        result = source_stats(
            list(targets),
            top=top,
            tokenizer=tokenizer,
            block_size=block_size,
            doc_mode=doc_mode,
            text_field=text_field,
        )
    if plot is not None:
        from .plots import save

        save(result, plot)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        click.echo(_sft_stats_table(result) if sft else _stats_table(result))
        if plot is not None and not quiet:
            click.echo(f"plot           {plot}")


@main.command(cls=_Command)
@click.argument("store", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write.",
)
@click.option(
    "--examples",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Blocks (or samples) shown decoded.",
)
@_common
def report(store, output, examples, quiet, verbose):
    """Write one self-contained HTML page about STORE (a token or SFT store): the summary,
    the figures, the top tokens, skipped records by reason and a few decoded blocks or samples,
    to share with a team. Needs matplotlib (pip install "streampack[plot]").

    Exit codes: 0 written, 1 not a complete store, 2 a usage error.

    \b
    Example:
      streampack report store/ -o report.html
    """
    from .report_html import write_page

    _setup_logging(verbose, quiet)
    write_page(store, output, examples=examples)
    if not quiet:
        click.echo(f"report         {output}")


@main.command(cls=_Command)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the demo store here (default: a temporary folder, removed after).",
)
@click.option(
    "--block-size",
    type=click.IntRange(1, 1 << 24),
    default=256,
    show_default=True,
    help="Tokens per block (small, so the sample makes several).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto uses quicktok where it is verified exact, else tokenizers.",
)
@click.option("--overwrite", is_flag=True, help="Replace a store already at --output.")
@_common
def demo(output, block_size, backend, overwrite, quiet, verbose):
    """Pack the built-in sample of medical text with the built-in Qwen2.5 tokenizer.

    Prints the run's summary and the decoded start of the first block.

    \b
    Example:
      streampack demo
    """
    from .api import pack as pack_store
    from .store import TokenStore
    from .tokenize import load_tokenizer

    _setup_logging(verbose, quiet)
    sample = files("streampack") / "data" / "demo.txt"
    with tempfile.TemporaryDirectory(prefix="streampack-demo-") as scratch:
        store = output or Path(scratch) / "store"
        # Padding the tail keeps every token of the small sample in the store.
        report = pack_store(
            [str(sample)],
            store,
            block_size=block_size,
            backend=backend,
            remainder="pad",
            overwrite=overwrite,
        )
        blocks = TokenStore(store)
        if not quiet:
            click.echo(_summary(report) + "\n")
        if len(blocks):
            ids = blocks.block_tokens(0)[:16].tolist()
            text = blocks.decode(0, load_tokenizer(None))
            click.echo(f"first block, ids {ids} ...")
            click.echo(f"first block, decoded start:\n{text[:300]}")
        if output is not None:
            click.echo(f"\nstore          {output}")


def _validate_table(result: dict) -> str:
    lines = []
    for entry in result["files"]:
        codec = "" if entry["codec"] == "none" else f" ({entry['codec']})"
        lines.append(
            f"{entry['path']}  {entry['format']}{codec}  records {entry['records']:,}  "
            f"documents {entry['documents']:,}  problems {entry['problems']:,}"
        )
        for reason, bad in entry["bad"].items():
            first = ", ".join(bad["first"])
            lines.append(f"  {reason:<22} {bad['count']:>8,}  first at {first}")
        for reason, fixed in entry.get("repaired", {}).items():
            first = ", ".join(fixed["first"])
            lines.append(f"  repaired {reason:<13} {fixed['count']:>8,}  first at {first}")
        for name, types in (entry["fields"] or {}).items():
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(types.items()))
            changed = "  (type changes)" if name in entry["type_changes"] else ""
            lines.append(f"  field {name!r}: {kinds}{changed}")
        stats = entry["length_chars"]
        if stats["max"] is not None:
            lines.append(
                f"  length (chars)  min {stats['min']:,}  median {stats['median']:,}  "
                f"p95 {stats['p95']:,}  max {stats['max']:,}"
            )
    across = result["fields_across_files"]
    for name, paths in across["missing_in"].items():
        more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
        files = "file" if len(paths) == 1 else "files"
        shown = ", ".join(paths[:3])
        lines.append(f"field {name!r} missing in {len(paths)} {files}: {shown}{more}")
    for name, kinds in across["types_differ"].items():
        what = "; ".join(f"{path}: {'/'.join(kind)}" for path, kind in list(kinds.items())[:3])
        lines.append(f"field {name!r} changes type between files: {what}")
    for entry in result["files_skipped"]:
        lines.append(f"skipped file {entry['path']}: {entry['reason']}")
    lines.append("ok" if result["ok"] else f"problems: {result['problems']:,} records")
    return "\n".join(lines)


@main.command(cls=_Command)
@click.argument("sources", nargs=-1, required=True)
@_read_options_without_size
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@_run_file
@_common
def validate(
    sources,
    doc_mode,
    text_field,
    format_,
    on_error,
    strict,
    encoding,
    encoding_errors,
    as_json,
    quiet,
    verbose,
):
    """Read SOURCE... without tokenizing and describe every file: format, records, bad records
    by reason with their first locations, fields and their types, document lengths.

    Exit code 0 when clean, 1 when problems were found (with --strict: at the first one), 2 on a
    usage error.

    \b
    Examples:
      streampack validate data/pretrain/
      streampack validate 'data/**/*.jsonl.gz' --text-field content --json
    """
    from .validate import validate as validate_sources

    _setup_logging(verbose, quiet)
    result = validate_sources(
        sources,
        doc_mode=doc_mode,
        text_field=text_field,
        format=format_,
        **_bad_input(on_error, strict, encoding, encoding_errors),
    )
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    elif not quiet or not result["ok"]:
        click.echo(_validate_table(result))
    sys.exit(0 if result["ok"] else 1)


def _sft_summary(report: dict, preference: bool) -> str:
    made = report["pairs"] if preference else report["samples"]
    lines = [
        f"records        {report['records']:,}",
        f"{'pairs' if preference else 'samples':<14} {made:,}",
        f"tokens         {report['tokens']:,}"
        + ("" if preference else f"  ({report['trained_tokens']:,} trained)"),
    ]
    if report.get("truncated_samples"):
        lines.append(
            f"truncated      {report['truncated_samples']:,} samples "
            f"({report['truncated_tokens']:,} tokens) to --max-length {report['max_length']}"
        )
    for action, count in sorted((report.get("sft_fixes") or {}).items()):
        lines.append(f"  fixed {action:<26} {count:>8,}")
    lines += _counted(report, "skipped", "not used", 32)
    lines += [
        f"files          {len(report['files'])}",
        f"template       {report['template']}, tokenizer {report['tokenizer']}, "
        f"backend {report['backend']}",
        f"time           {report['seconds']:.2f} s  ({report['samples_per_second']:,.0f} "
        f"per second)",
        f"peak memory    {report['peak_rss_mb']:.0f} MB",
    ]
    return "\n".join(lines)


@main.command(cls=_Command)
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The SFT store folder to write.",
)
@click.option(
    "--template",
    type=click.Choice(["auto", "chatml", "qwen", "llama3", "mistral", "vicuna", "alpaca"]),
    default="auto",
    show_default=True,
    help="Chat template: auto is the tokenizer's own Jinja chat_template (chatml where it "
    "has none, as the built-in Qwen2.5); a named one's markers must be special tokens.",
)
@click.option(
    "--max-length",
    type=click.IntRange(min=2),
    default=2048,
    show_default=True,
    help="Longest sample in tokens: earliest rounds dropped first, then the prompt cut.",
)
@click.option("--last-turn-only", is_flag=True, help="Train only the last answer of each record.")
@click.option(
    "--format",
    "record_format",
    type=click.Choice(["sharegpt", "openai", "alpaca"]),
    default=None,
    help="Read every record as this format (others are counted as unrecognized_record). "
    "Default: detected per record.",
)
@click.option(
    "--preference",
    is_flag=True,
    help="Read preference pairs (chosen/rejected) and store prompt, chosen, rejected ids.",
)
@click.option(
    "--tokenizer",
    default=None,
    metavar="PATH|ID",
    help="Local model folder, tokenizer.json, or a hub id already in the local "
    "Hugging Face cache. Default: built-in Qwen2.5.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto uses quicktok where it is verified exact, else tokenizers.",
)
@click.option(
    "--on-error",
    type=click.Choice(ON_ERRORS),
    default="skip",
    show_default=True,
    help="A bad record: count it in the report and go on, or stop with its file:line.",
)
@click.option("--overwrite", is_flag=True, help="Replace a store already at --output.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_run_file
@_common
def sft(
    sources,
    output,
    template,
    max_length,
    last_turn_only,
    record_format,
    preference,
    tokenizer,
    backend,
    on_error,
    overwrite,
    as_json,
    quiet,
    verbose,
):
    """Encode chat records of SOURCE... (JSON lines or JSON array files, folders, globs) with a
    chat template and write an SFT store: variable-length samples with their label masks.

    Formats per record: ShareGPT conversations, OpenAI messages, Alpaca, and with --preference
    chosen/rejected pairs. Read it back with `streampack.SFTStore(path)`.

    Exit codes: 0 done, 1 a problem with the data or the store (one line names it), 2 a usage
    error, 130 interrupted (the store is left incomplete, or an old one as it was).

    \b
    Examples:
      streampack sft data/sft/ -o sft-store/ --max-length 1024
      streampack sft 'data/**/*.jsonl.gz' -o sft-store/ --template llama3 --tokenizer llama/
      streampack sft data/reward/dpo_zh_500.jsonl -o dpo-store/ --preference
    """
    from .sft.store import write_sft_store
    from .sft.stream import stream_sft

    _setup_logging(verbose, quiet)
    stream = stream_sft(
        list(sources),
        tokenizer=tokenizer,
        template=template,
        max_length=max_length,
        last_turn_only=last_turn_only,
        preference=preference,
        record_format=record_format,
        group_by_length=False,
        on_error=on_error,
        backend=backend,
    )
    bar = _CountBar(quiet, "pairs" if preference else "samples")
    try:
        report = write_sft_store(stream, output, overwrite=overwrite, on_progress=bar.update)
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    elif not quiet:
        click.echo(_sft_summary(report, preference))
        click.echo(f"store          {output}")


@main.command(cls=_Command)
@click.argument("parts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="The store folder to write.",
)
@click.option("--overwrite", is_flag=True, help="Replace a store already at --output.")
@click.option(
    "--checksums", is_flag=True, help="Also re-hash every shard when verifying the result."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_common
def merge(parts, output, overwrite, checksums, as_json, quiet, verbose):
    """Join the store PARTs of a multi-node build (`pack --num-nodes N --node-rank R`) into one
    store, hard-linking their shard files (a copy across file systems), and verify it.

    The result equals a single-machine build of the same split. Exit code 0 done, 1 parts that
    do not fit together or a store problem (one line names it).

    \b
    Example:
      streampack merge parts/0 parts/1 parts/2 -o store/
    """
    from .scale import merge_parts

    _setup_logging(verbose, quiet)
    report = merge_parts(parts, output, overwrite=overwrite, checksums=checksums)
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    elif not quiet:
        click.echo(_summary(report))
        click.echo(_split_summary(report))
        click.echo(f"store          {output}")
