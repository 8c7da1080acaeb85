"""A run described in a file: `streampack pack --config run.toml`, flags overriding the file.

The file holds the same settings as the command's flags, by the flag's long name (`block-size`
or `block_size`), either at the top level or in a table named after the command, so that one
file can describe a whole recipe:

```toml
sources = ["data/pretrain/"]        # the SOURCE arguments
tokenizer = "models/qwen2.5/"

[pack]
output = "store/"
block-size = 2048
remainder = "pad"

[sft]
output = "sft-store/"
max-length = 4096
```

TOML is read with the standard library, YAML (`.yaml`, `.yml`) with PyYAML. Keys of the
command's own table win over top-level keys; a key that is no setting of the command is an
error naming the file, unless it belongs to another command's table. Flags of boolean switches
take `true`/`false`.
"""

import tomllib
from pathlib import Path

from .errors import ConfigError


def read_run_file(path) -> dict:
    """The file's settings as a dict (TOML, or YAML by the `.yaml`/`.yml` suffix)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the run file ({error.strerror})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
    else:
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run file holds settings by name, found {type(data).__name__}")
    return data


def settings_for(data: dict, command: str, names: dict, commands: set[str], path) -> dict:
    """The settings of `command` from a run file's `data`, keyed by parameter name.

    `names` maps each setting's name in a file (a flag's long name without dashes, as
    `block-size`; an argument's name, as `sources`) to its parameter name; `commands` are every
    command's name (their tables are skipped at the top level).
    """
    chosen: dict = {}
    for scope in (data, data.get(command) or {}):
        if not isinstance(scope, dict):
            raise ConfigError(f"{path}: [{command}] must be a table of settings")
        for key, value in scope.items():
            if scope is data and key in commands:
                continue
            name = names.get(str(key).replace("_", "-"))
            if name is None:
                raise ConfigError(
                    f"{path}: {key!r} is not a setting of `streampack {command}` (its settings: "
                    f"{', '.join(sorted(names))})"
                )
            chosen[name] = value
    return chosen


def store_settings(metadata: dict) -> dict:
    """The `streampack pack` settings (by parameter name) that built a store, from its
    metadata: `--like STORE` runs the same build again. The output folder is not among them."""
    from .tokenize import BUILTIN_NAME

    if metadata.get("format") != "streampack-store":
        raise ConfigError(
            f"--like takes a token store built by `streampack pack`, found format "
            f"{metadata.get('format')!r}"
        )
    read = metadata.get("read", {})
    tokenizer = metadata["tokenizer"]["name"]
    settings = {
        "sources": list(metadata["sources"]),
        "tokenizer": None if tokenizer == BUILTIN_NAME else tokenizer,
        "backend": metadata.get("backend", "auto"),
        "eos_token": metadata.get("eos_token"),
        "block_size": metadata["block_size"],
        "remainder": metadata.get("remainder", "drop"),
        "no_packing": not metadata.get("packing", True),
        "position_ids": metadata.get("position_ids", "none"),
        "token_stats": bool(metadata.get("token_counts")),
        "doc_mode": read.get("doc_mode", "line"),
        "text_field": read.get("text_field"),
        "format_": read.get("format"),
        "on_error": read.get("on_error", "skip"),
        "encoding": read.get("encoding", "utf-8"),
        "encoding_errors": read.get("encoding_errors", "replace"),
        "max_document_bytes": read.get("max_document_bytes"),
        "oversize": read.get("oversize", "split"),
    }
    if metadata.get("shard_bytes"):
        settings["shard_mb"] = metadata["shard_bytes"] / (1 << 20)
    for appended in metadata.get("appends", ()):
        settings["sources"] += appended["sources"]
    return settings
