"""Errors a user can act on. The CLI prints their message on one line, never a traceback."""


class StreampackError(Exception):
    """Base class: the message names what is wrong, where, and what to do."""


class SourceError(StreampackError):
    """A source path, glob or file that cannot be read as given."""


class TokenizerError(StreampackError):
    """A tokenizer that cannot be found or loaded offline."""


class StoreError(StreampackError):
    """A token store that is missing, incomplete or inconsistent with its metadata."""


class ConfigError(StreampackError):
    """A setting out of range or a combination of settings that cannot work."""


class MemoryBudgetError(StreampackError):
    """Resident memory stayed over `max_memory` with every back-pressure applied; a `pack`
    build stopped by it continues from its last committed shard when run again."""


class DataError(StreampackError):
    """A bad record met with `on_error="raise"`: the message is `path:line: what is wrong
    (what was expected, what was found)`."""
