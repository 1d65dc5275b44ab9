"""Seeded English sentence generator for the synthetic (eSpeak NG) talkers.

Sentences are built from small hand-written word lists and sentence templates, so the
vocabulary is varied enough to cover most English phonemes while every sentence stays
grammatical and pronounceable. Everything is driven by a ``numpy.random.Generator``:
the same generator state gives the same sentence.

Example::

    rng = np.random.default_rng(0)
    make_sentence(rng)  # e.g. "Could the quiet neighbour bring seven blue cups to the garden?"
"""

from __future__ import annotations

import numpy as np

NAMES: tuple[str, ...] = (
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "James",
    "Karen", "Leo", "Maria", "Nathan", "Olivia", "Peter", "Quentin", "Rosa", "Samuel",
    "Tara", "Umar", "Vera", "Walter", "Yusuf", "Zoe", "Martha", "Oscar", "Priya", "Kenji",
)

PEOPLE: tuple[str, ...] = (
    "neighbour", "teacher", "doctor", "driver", "baker", "gardener", "student", "engineer",
    "farmer", "musician", "nurse", "pilot", "painter", "waiter", "librarian", "plumber",
    "grandmother", "uncle", "cousin", "manager", "visitor", "child", "chef", "reporter",
)

THINGS: tuple[str, ...] = (
    "cup", "book", "lamp", "chair", "basket", "kettle", "letter", "bottle", "jacket",
    "ticket", "window", "pillow", "candle", "spoon", "radio", "bicycle", "umbrella",
    "notebook", "biscuit", "orange", "blanket", "camera", "violin", "hammer", "towel",
    "plate", "key", "map", "shoe", "clock", "mirror", "parcel", "guitar", "pencil",
)

PLACES: tuple[str, ...] = (
    "kitchen", "garden", "station", "library", "market", "office", "harbour", "village",
    "museum", "bakery", "hallway", "cellar", "balcony", "school", "bridge", "theatre",
    "forest", "beach", "hospital", "airport", "square", "workshop", "church", "cinema",
)

ADJECTIVES: tuple[str, ...] = (
    "blue", "heavy", "quiet", "bright", "broken", "golden", "tiny", "enormous", "wooden",
    "yellow", "shiny", "dusty", "warm", "cold", "purple", "strange", "gentle", "noisy",
    "fresh", "smooth", "rough", "clever", "lazy", "careful", "green", "old", "new", "odd",
)

VERBS_PAST: tuple[str, ...] = (
    "found", "carried", "painted", "dropped", "borrowed", "cleaned", "opened", "fixed",
    "washed", "wrapped", "forgot", "hid", "bought", "sold", "moved", "checked", "lifted",
    "polished", "measured", "counted", "brought", "returned", "ordered", "noticed",
)

VERBS_BASE: tuple[str, ...] = (
    "find", "carry", "paint", "drop", "borrow", "clean", "open", "fix", "wash", "wrap",
    "hide", "buy", "sell", "move", "check", "lift", "polish", "measure", "bring", "return",
)

ADVERBS: tuple[str, ...] = (
    "slowly", "quickly", "carefully", "suddenly", "quietly", "happily", "gently", "early",
    "late", "twice", "again", "proudly", "nervously", "calmly", "eagerly", "politely",
)

TIMES: tuple[str, ...] = (
    "this morning", "last night", "on Monday", "on Tuesday", "on Wednesday", "on Thursday",
    "on Friday", "at the weekend", "yesterday", "in the afternoon", "before lunch",
    "after dinner", "in June", "in October", "at midnight", "around noon", "last winter",
)

NUMBERS: tuple[str, ...] = (
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "fifteen", "twenty", "thirty", "forty", "a hundred", "a dozen", "several",
)

WEATHER: tuple[str, ...] = (
    "rain", "snow", "wind", "fog", "sunshine", "thunder", "frost", "heat", "drizzle",
)

# Slots in braces are filled from the lists above; a trailing "?" makes a question.
TEMPLATES: tuple[str, ...] = (
    "{name} {verb_past} the {adj} {thing} in the {place} {time}.",
    "The {person} {adv} {verb_past} {number} {adj} {thing}s.",
    "Could the {adj} {person} {verb} the {thing} to the {place}?",
    "Please {verb} the {adj} {thing} before {name} comes back.",
    "We met {name} near the {place} {time}, and the {weather} was {adj}.",
    "Why did the {person} leave the {thing} in the {place}?",
    "{name} said that the {person} would {verb} {number} {thing}s {time}.",
    "There were {number} {adj} {thing}s on the table in the {place}.",
    "After the {weather} stopped, {name} walked {adv} to the {place}.",
    "Do you remember where the {adj} {thing} was {time}?",
    "I think the {person} {verb_past} my {thing} by mistake.",
    "The {place} was {adj} and full of {adj} {thing}s.",
    "{name} and {name2} {adv} {verb_past} the {thing} together.",
    "If the {weather} gets worse, we should {verb} the {thing}s {adv}.",
    "Have you seen the {person} with the {adj} {thing}?",
    "It takes {number} minutes to walk from the {place} to the {place2}.",
    "My {person} keeps a {adj} {thing} next to the {thing2}.",
    "Nobody knew why the {thing} in the {place} was so {adj}.",
)


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    """Draw one word uniformly from ``words``."""
    return words[int(rng.integers(len(words)))]


def make_sentence(rng: np.random.Generator) -> str:
    """Draw one sentence from a random template with random slot fillers.

    Args:
        rng: source of randomness; the result depends only on its state.

    Returns:
        A capitalised English sentence ending in ``.`` or ``?``.
    """
    template = _pick(rng, TEMPLATES)
    name = _pick(rng, NAMES)
    place = _pick(rng, PLACES)
    thing = _pick(rng, THINGS)
    fills = {
        "name": name,
        "name2": _pick(rng, tuple(n for n in NAMES if n != name)),
        "person": _pick(rng, PEOPLE),
        "thing": thing,
        "thing2": _pick(rng, tuple(t for t in THINGS if t != thing)),
        "place": place,
        "place2": _pick(rng, tuple(p for p in PLACES if p != place)),
        "adj": _pick(rng, ADJECTIVES),
        "verb_past": _pick(rng, VERBS_PAST),
        "verb": _pick(rng, VERBS_BASE),
        "adv": _pick(rng, ADVERBS),
        "time": _pick(rng, TIMES),
        "number": _pick(rng, NUMBERS),
        "weather": _pick(rng, WEATHER),
    }
    text = template.format(**fills)
    return text[0].upper() + text[1:]


def make_sentences(rng: np.random.Generator, count: int) -> list[str]:
    """Draw ``count`` sentences (see :func:`make_sentence`), in order."""
    return [make_sentence(rng) for _ in range(count)]
