"""Tool calling: the tools a request offers, checked (`spec`); put in the prompt through the
model's chat template, or a fallback system message for a template without tools (`prompt`);
the calls read back out of the reply, streamed or whole (`calls`, `reader`); and a call
forced by a grammar (`grammar`)."""

from .calls import FORMATS, ToolCall, template_format
from .reader import ToolCallReader, parse_tool_calls
from .spec import ToolSpecError, check_tool_calls, check_tool_choice, check_tools

__all__ = ["FORMATS", "ToolCall", "ToolCallReader", "ToolSpecError", "check_tool_calls", "check_tool_choice",
           "check_tools", "parse_tool_calls", "template_format"]
