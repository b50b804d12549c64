"""Options declared once: each option's type, default, allowed values, range and help text live in one field
declaration, and the API model, the click options and the recipe schema are all derived from it.

    class TensorRTOptions(OptionsModel):
        precisions: list[str] = option(["fp16"], flag="--precision", multiple=True, choices=PRECISIONS, help=...)

pydantic v2 underneath: it gives typed models with defaults, strict type checks (a bool is never an int, "17"
is never an int, a str is never a list), validation on assignment and model validators for cross-field rules,
while the rules pydantic has no words for (choices, ranges of list items, code checks such as the profile
syntax) are one `Rules` object attached to the field. Every refusal is an `OptionError` (an InputError: one
line, exit 2) worded from the same declaration wherever the value came from: API, command line or recipe.
"""

from bge_export.options.command_line import (
    click_options,
    parse_prompts,
    parse_whole_numbers,
    parse_words,
    report_result,
)
from bge_export.options.declare import (
    OptionError,
    OptionsModel,
    Rules,
    describe,
    field_value,
    label_of,
    option,
    rules_of,
)

__all__ = ["OptionError", "OptionsModel", "Rules", "click_options", "describe", "field_value", "label_of", "option",
           "parse_prompts", "parse_whole_numbers", "parse_words", "report_result", "rules_of"]
