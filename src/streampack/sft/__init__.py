"""SFT and preference data: records → conversations → template segments → ids and label masks.

```
records ──► Conversation / PreferencePair ──► segments ──► Sample ──► batches
(formats.py: ShareGPT,   (role-order policy,  (templates.py:  (encode.py:   (collate.py:
 OpenAI, Alpaca, tools,   named fixes and      markers and     ids, labels,  padding by
 preference pairs)        rejections)          trainable;      max_length;   position)
                                               jinja.py: the   layout.py: a
                                               tokenizer's     read batch
                                               own template)   at once)
```
"""

from .collate import length_grouped_batches, pad_batch, padding_ratio
from .encode import (
    NO_ANSWER_TOKEN,
    Sample,
    check_template,
    encode_conversation,
    encode_preference,
)
from .formats import (
    FIX_ACTIONS,
    RECORD_FORMATS,
    REJECT_REASONS,
    ROLE_ALIASES,
    Conversation,
    PreferencePair,
    RecordRejected,
    Turn,
    parse_record,
    parse_records,
    record_format,
)
from .jinja import JinjaTemplate, auto_template
from .templates import TEMPLATES, Segment, Template, get_template

__all__ = [
    "FIX_ACTIONS",
    "NO_ANSWER_TOKEN",
    "RECORD_FORMATS",
    "REJECT_REASONS",
    "ROLE_ALIASES",
    "TEMPLATES",
    "Conversation",
    "JinjaTemplate",
    "PreferencePair",
    "RecordRejected",
    "Sample",
    "Segment",
    "Template",
    "Turn",
    "auto_template",
    "check_template",
    "encode_conversation",
    "encode_preference",
    "get_template",
    "length_grouped_batches",
    "pad_batch",
    "padding_ratio",
    "parse_record",
    "parse_records",
    "record_format",
]
