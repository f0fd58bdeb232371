"""Chat templates: the Jinja template a model ships with, rendered as transformers renders
it (sandboxed, `trim_blocks`/`lstrip_blocks`, `raise_exception`, a `tojson` that keeps
non-ASCII text), without importing transformers."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError, MlxspecError, TokenizerError
from ..reading import JSON_LIMIT, read_file
from .unicode import check_text

Message = dict[str, Any]

# Mistral's instruct format, for models that ship no template.
MISTRAL_INSTRUCT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)


def read_chat_template(model_dir: Path) -> str | None:
    """The chat template shipped with a model: `chat_template.jinja`, `chat_template.json`, or
    the `chat_template` entry of `tokenizer_config.json` (a string, or a list of named
    templates of which "default" is used)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        try:
            return read_file(jinja, JSON_LIMIT).decode("utf-8")
        except OSError as exc:
            raise TokenizerError(f"{jinja}: unreadable chat template ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise TokenizerError(f"{jinja}: unreadable chat template ({exc})") from None
    for name in ("chat_template.json", "tokenizer_config.json"):
        template = _template_entry(side_file(model_dir / name).get("chat_template"))
        if template is not None:
            return template
    return None


def side_file(path: Path) -> dict[str, Any]:
    """A JSON object from a file beside the tokenizer; {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(read_file(path, JSON_LIMIT).decode("utf-8"))
    except OSError as exc:
        raise TokenizerError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, RecursionError):  # ValueError: also bytes that are not UTF-8
        raise TokenizerError(f"{path} is not valid UTF-8 JSON") from None
    return data if isinstance(data, dict) else {}


def _template_entry(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, list):  # [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
        named = {t.get("name"): t.get("template") for t in entry if isinstance(t, dict)}
        template = named.get("default")
        return template if isinstance(template, str) else None
    return None


def as_messages(prompt: str | Sequence[Message]) -> list[Message]:
    """One user turn for a string; otherwise the messages, checked: each a mapping with a
    string `role` and a string `content` (None in an assistant message with `tool_calls`)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = list(prompt)
    if not messages:
        raise InputError("no messages to format")
    for i, m in enumerate(messages):
        calling = isinstance(m, dict) and m.get("tool_calls") and m.get("content") is None
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not (
                calling or isinstance(m.get("content"), str)):
            raise InputError(f"message {i} must be a mapping with string 'role' and 'content'")
        if not calling:
            check_text(m["content"], f"message {i}")
    return messages


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    """The template refuses the conversation (e.g. roles that do not alternate)."""
    raise InputError(f"chat template: {message}")


class ChatTemplate:
    """A compiled chat template and the special-token strings it may refer to."""

    def __init__(self, source: str, specials: dict[str, str]) -> None:
        from jinja2 import TemplateError, meta
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise TokenizerError(f"chat template does not parse: {exc}") from None
        self._specials, self.source = specials, source
        self._reads = meta.find_undeclared_variables(env.parse(source))

    def reads(self, name: str) -> bool:
        """Whether the template reads variable `name` (e.g. "tools": it renders tools itself)."""
        return name in self._reads

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True, **context: Any) -> str:
        """The prompt text for `messages`, ending with the assistant's turn opened; `context`
        are further variables (`tools=[...]`, as transformers passes them)."""
        from jinja2 import TemplateError

        try:
            return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         **self._specials, **context)
        except TemplateError as exc:
            raise TokenizerError(f"chat template: {exc}") from None
        except MlxspecError:  # raise_exception(): the template refuses this conversation
            raise
        except Exception as exc:  # the template is the model's code: anything it raises is its failure
            raise TokenizerError(f"chat template failed ({type(exc).__name__}: {str(exc)[:120]})") from None
