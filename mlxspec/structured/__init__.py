"""Structured output: a request's text held to a JSON schema, any JSON object, a grammar or
a regular expression (`format`), enforced token by token under speculation (`constraint`)."""

from .constraint import Constraint, guided_tokenizer
from .format import KINDS, ResponseFormat, response_format

__all__ = ["Constraint", "KINDS", "ResponseFormat", "guided_tokenizer", "response_format"]
