"""The built-in prompts `mlxspec distill` asks the target to answer: everyday topics under
chat templates and small programming tasks under code templates. None is one of the
built-in bench prompts (`mlxspec.prompts`), which stay held out for measuring drafts."""

from __future__ import annotations

import random

TOPICS = [
    "photosynthesis", "the water cycle", "black holes", "the French Revolution", "machine learning",
    "climate change", "the human heart", "volcanoes", "the stock market", "vaccines", "the Roman Empire",
    "electric cars", "the internet", "honey bees", "earthquakes", "the moon landing", "democracy",
    "recycling", "sleep", "coffee", "the Great Wall of China", "gravity", "DNA", "rainbows", "inflation",
    "the Olympic Games", "solar panels", "the immune system", "chess", "jazz music", "the printing of money",
    "glaciers", "the periodic table", "bread baking", "marathon training", "time zones", "the ocean tides",
    "public libraries", "bicycles", "the Renaissance", "antibiotics", "cloud computing", "nuclear energy",
    "meditation", "rain forests", "credit cards", "the speed of light", "earth's atmosphere", "penguins",
    "the pyramids of Egypt", "wind turbines", "email", "dinosaurs", "the camera", "tea", "robots",
]
CHAT_TEMPLATES = [
    "Explain {t} in simple terms.", "What is {t}?", "Give me three interesting facts about {t}.",
    "Why is {t} important?", "Write a short paragraph about {t}.", "How does {t} work?",
    "What are the pros and cons of {t}?", "Tell me a short story involving {t}.",
    "Describe {t} to a child.", "What should a beginner know about {t}?",
]
CODE_TASKS = [
    "computes the factorial of a number", "checks whether a string is a palindrome",
    "returns the largest element of a list", "counts the vowels in a string", "sorts a list with bubble sort",
    "merges two sorted lists", "removes duplicates from a list while keeping order",
    "converts Celsius to Fahrenheit", "finds the greatest common divisor of two numbers",
    "reads a text file and counts its lines", "flattens a nested list", "checks whether a number is prime",
    "returns the sum of the digits of an integer", "computes the average of a list of numbers",
    "finds all even numbers in a list", "capitalises the first letter of every word",
    "implements binary search", "counts how often each word appears in a text",
    "transposes a matrix given as a list of lists", "generates the first n square numbers",
]
CODE_TEMPLATES = [
    "Write a Python function that {t}.", "How do I write a function in Python that {t}?",
    "Show me Python code that {t}, with a short explanation.",
]


def builtin_prompts(seed: int) -> list[str]:
    """Every topic under every chat template and every task under every code template,
    shuffled deterministically by `seed`."""
    prompts = [c.format(t=t) for t in TOPICS for c in CHAT_TEMPLATES]
    prompts += [c.format(t=t) for t in CODE_TASKS for c in CODE_TEMPLATES]
    random.Random(seed).shuffle(prompts)
    return prompts
