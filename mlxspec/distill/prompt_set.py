"""The built-in prompts `mlxspec distill` asks the target to answer (about 3,600): everyday
topics under chat templates and small programming tasks under code templates. None is one
of the built-in bench prompts (`mlxspec.prompts`), which stay held out for measuring drafts."""

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



def builtin_prompts(seed: int) -> list[str]:
    """Every topic under every chat template and every task under every code template,
    shuffled deterministically by `seed`."""
    chat, code = CHAT_TEMPLATES + MORE_CHAT_TEMPLATES, CODE_TEMPLATES + MORE_CODE_TEMPLATES
    prompts = [c.format(t=t) for t in TOPICS + MORE_TOPICS for c in chat]
    prompts += [c.format(t=t) for t in CODE_TASKS + MORE_CODE_TASKS for c in code]
    prompts = list(dict.fromkeys(prompts))
    random.Random(seed).shuffle(prompts)
    return prompts
