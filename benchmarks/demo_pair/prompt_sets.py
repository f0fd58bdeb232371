"""The prompts the teacher answers: topic and task lists under chat and code templates (the
first set's lists are `mlxspec distill`'s built-in ones), plus
standard-library text to summarise or explain. All disjoint from the built-in prompts of
`mlxspec.prompts`, which stay held out for the bench."""

from __future__ import annotations

import random

from mlxspec.distill.prompt_set import CHAT_TEMPLATES, CODE_TASKS, CODE_TEMPLATES, TOPICS
from stdlib_text import stdlib_docs_and_functions, stdlib_paragraphs

# a second, disjoint set (distill_features.py --answers): new topics, templates and code tasks
MORE_TOPICS = [
    "the Silk Road", "octopuses", "the Industrial Revolution", "quantum computers", "hurricanes", "the Amazon river",
    "compound interest", "the Moon's phases", "coral reefs", "the Cold War", "3D printing", "wolves",
    "the metric system", "blood types", "the Mars rovers", "tsunamis", "the Beatles", "minimum wage",
    "composting", "the Eiffel Tower", "magnetism", "fungi", "the Vikings", "batteries", "the Sahara desert",
    "opera", "password security", "the placebo effect", "hydroelectric dams", "the Mayan civilisation",
    "origami", "typhoons", "the human brain", "supply and demand", "lighthouses", "tectonic plates",
    "the violin", "fermentation", "the Hubble telescope", "elephants", "carbon dating", "the Byzantine Empire",
    "urban gardening", "satellites", "allergies", "the Industrial design of chairs", "the Nile",
    "migrating birds", "blockchains", "the Greek myths", "mountain climbing", "microplastics",
    "the Panama Canal", "photography", "bats", "the stock exchange crash of 1929", "desalination",
    "yoga", "the Arctic", "language learning", "submarines", "the theory of evolution", "smartphones",
    "bridges", "the Aztecs", "cheese making", "sharks", "renewable energy", "the human skeleton",
    "video games", "the Milky Way", "trains", "the water footprint of food", "board games", "cacti",
    "the Apollo programme", "first aid", "the blues", "skyscrapers", "the printing of books in Asia",
    "tornadoes", "the Internet of Things", "ants", "impressionist painting", "the Amazon rainforest fires",
    "nutrition labels", "the human eye", "paper making", "whales", "the Mongol Empire", "fireworks",
    "artificial sweeteners", "the Northern Lights", "the census", "submarine cables", "vaccination campaigns",
    "deserts", "the piano", "public transport", "the seasons", "cryptography", "bees and pollination",
    "the Statue of Liberty", "self-driving cars", "glass making", "the ozone layer", "kangaroos",
    "the history of maps", "microwave ovens", "volunteering", "the Magna Carta", "the Dead Sea",
    "spiders", "online privacy", "the Titanic", "genetics", "team sports", "lightning", "the Alps",
    "writing a CV", "saving money", "the French language", "clouds", "the Industrial use of salt",
]
MORE_CHAT_TEMPLATES = [
    "Can you summarise what is known about {t}?", "Write a haiku and then a short explanation about {t}.",
    "What is a common misconception about {t}?", "Give me a short quiz with three questions about {t}.",
    "How has {t} changed over time?", "Explain {t} in one paragraph for a busy professional.",
    "List five key words related to {t} and explain each briefly.", "Compare {t} with something from everyday life.",
]
MORE_CODE_TASKS = [
    "returns the second largest number in a list", "checks whether two strings are anagrams",
    "counts the words in a sentence", "converts a decimal number to binary", "computes the power set of a list",
    "finds the longest word in a sentence", "rotates a list by k positions", "checks whether a year is a leap year",
    "returns the intersection of two lists", "computes the median of a list", "validates an email address with a regular expression",
    "reads a CSV file and prints each row", "generates a random password", "computes the n-th triangular number",
    "checks whether a list is sorted", "returns the index of the first repeated character in a string",
    "counts the uppercase letters in a string", "splits a list into chunks of size n", "computes the dot product of two vectors",
    "converts a list of strings to integers", "finds the missing number in a list of 1 to n", "removes whitespace from a string",
    "computes the running total of a list", "merges two dictionaries", "checks whether a number is a perfect square",
    "returns the keys of a dictionary sorted by value", "computes simple interest", "draws a triangle of stars",
    "finds the common prefix of a list of strings", "converts minutes into hours and minutes",
    "implements a stack class with push and pop", "implements a queue using two stacks",
    "computes the Euclidean distance between two points", "counts the lines in a string that contain a word",
]
MORE_CODE_TEMPLATES = [
    "Write a Python function that {t}. Include a docstring.", "Write a short Python program that {t}, and show an example run.",
    "I need Python code that {t}. Please explain each step.",
]


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
