"""Which field of a record holds the text.

The rule, for JSON objects per record and for parquet and CSV once per file: the configured
`text_field` if there is one; else `text`; else the only string-valued field, if exactly one.
"""

from collections.abc import Sequence

# Stands for "no text field" so that a present JSON null stays distinguishable from absence.
MISSING = object()


def only_string(obj: dict):
    """The value of the single string-valued field of `obj`, or MISSING if there are 0 or 2+."""
    found = MISSING
    for value in obj.values():
        if type(value) is str:
            if found is not MISSING:
                return MISSING
            found = value
    return found


def choose_column(names: Sequence[str], string_names: Sequence[str], text_field: str | None):
    """The column to read from a table with `names`, of which `string_names` hold strings.

    Returns None when no column qualifies; the caller counts the rows as missing_text_field.
    """
    if text_field is not None:
        return text_field if text_field in names else None
    if "text" in names:
        return "text"
    if len(string_names) == 1:
        return string_names[0]
    return None
