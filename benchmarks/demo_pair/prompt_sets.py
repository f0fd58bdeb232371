"""The prompts the teacher answers: topic and task lists under chat and code templates (the
first set's lists are `mlxspec distill`'s built-in ones), plus
standard-library text to summarise or explain. All disjoint from the built-in prompts of
`mlxspec.prompts`, which stay held out for the bench."""

from __future__ import annotations

import random

from mlxspec.distill.prompt_set import (CHAT_TEMPLATES, CODE_TASKS, CODE_TEMPLATES, MORE_CHAT_TEMPLATES, MORE_CODE_TASKS,
                                        MORE_CODE_TEMPLATES, MORE_TOPICS, TOPICS)
from stdlib_text import stdlib_docs_and_functions, stdlib_paragraphs



def training_prompts(seed: int) -> list[str]:
    """Prompts for the teacher, shuffled deterministically."""
    prompts = [c.format(t=t) for t in TOPICS for c in CHAT_TEMPLATES]
    prompts += [c.format(t=t) for t in CODE_TASKS for c in CODE_TEMPLATES]
    prompts += [f"Summarise the following text in two sentences.\n\n{p}" for p in stdlib_paragraphs(120)]
    random.Random(seed).shuffle(prompts)
    return prompts


def more_prompts(seed: int) -> list[str]:
    """A larger second prompt set, disjoint from `training_prompts` and from the built-in
    prompts: new topics under all chat templates, old topics under new templates, new code
    tasks, and summaries / explanations of standard-library docstrings and short functions."""
    chat = CHAT_TEMPLATES + MORE_CHAT_TEMPLATES
    prompts = [c.format(t=t) for t in MORE_TOPICS for c in chat]
    prompts += [c.format(t=t) for t in TOPICS for c in MORE_CHAT_TEMPLATES]
    prompts += [c.format(t=t) for t in MORE_CODE_TASKS for c in CODE_TEMPLATES + MORE_CODE_TEMPLATES]
    prompts += [c.format(t=t) for t in CODE_TASKS for c in MORE_CODE_TEMPLATES]
    docs, functions = stdlib_docs_and_functions()
    prompts += [f"Summarise the following text in two sentences.\n\n{d}" for d in docs]
    prompts += [f"Explain what this Python function does.\n\n```python\n{f}\n```" for f in functions]
    first = set(training_prompts(seed))
    prompts = [p for p in dict.fromkeys(prompts) if p not in first]
    random.Random(seed).shuffle(prompts)
    return prompts
