"""Which field of a record holds the text.

The rule, decided once per file (from the first record of JSON, from the schema or header of
parquet and CSV): the configured `text_field` if there is one; else `text`; else the only
string-valued field, if exactly one. A later record without that field is counted as missing,
never read from another field: a stray `url` or `id` must not become a training document.
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


def first_record_field(obj: dict) -> str:
    """The text field of a JSON file with no configured field, from its first record."""
    if "text" in obj:
        return "text"
    names = [name for name, value in obj.items() if type(value) is str]
    return names[0] if len(names) == 1 else "text"
