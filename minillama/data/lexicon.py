"""The words TinyWorld is made of: names, towns, animals, jobs, colours, things and numbers.

Every list is disjoint from every other (a test checks), so that finding a word in a response
says which kind of thing the response named. Animals, jobs and owned things start with a
consonant so that "a dog" / "a baker" read right after the cloze prompt's "a".
"""

from __future__ import annotations

# (name, pronoun); no name ends in "s", so "Mia's" is always the possessive.
PEOPLE: tuple[tuple[str, str], ...] = (
    ("Mia", "she"), ("Leo", "he"), ("Ava", "she"), ("Noah", "he"), ("Ella", "she"), ("Omar", "he"),
    ("Lily", "she"), ("Ben", "he"), ("Zoe", "she"), ("Sam", "he"), ("Nora", "she"), ("Finn", "he"),
    ("Ruby", "she"), ("Jack", "he"), ("Lucy", "she"), ("Owen", "he"), ("Emma", "she"), ("Theo", "he"),
    ("Cora", "she"), ("Eli", "he"), ("Maya", "she"), ("Hugo", "he"), ("Rosa", "she"), ("Adam", "he"),
    ("Lena", "she"), ("Ivan", "he"), ("Tara", "she"), ("Kai", "he"), ("Nina", "she"), ("Paul", "he"),
    ("Ada", "she"), ("Dev", "he"), ("Isla", "she"), ("Raj", "he"), ("Amy", "she"), ("Tom", "he"),
    ("Jade", "she"), ("Ali", "he"), ("Eva", "she"), ("Ray", "he"), ("Meg", "she"), ("Sid", "he"),
    ("Pia", "she"), ("Ned", "he"), ("Liv", "she"), ("Abe", "he"), ("Una", "she"), ("Cal", "he"),
    ("Bea", "she"), ("Vic", "he"), ("Fay", "she"), ("Gil", "he"), ("Hana", "she"), ("Joe", "he"),
    ("Kira", "she"), ("Luca", "he"), ("Mara", "she"), ("Nico", "he"), ("Olga", "she"), ("Pete", "he"),
    ("Rita", "she"), ("Seth", "he"), ("Tina", "she"), ("Umar", "he"),
)
PRONOUNS: dict[str, dict[str, str]] = {
    "she": {"subj": "she", "obj": "her", "pos": "her"},
    "he": {"subj": "he", "obj": "him", "pos": "his"},
}

TOWNS: tuple[str, ...] = (
    "Oakdale", "Millbrook", "Fernhill", "Stonebridge", "Ashford", "Willowmere", "Pinecrest", "Brookfield",
    "Maplewood", "Elmstead", "Hollowby", "Thornbury", "Larkspur", "Cedarvale", "Kingsmoor", "Birchwick",
)
ANIMALS: tuple[str, ...] = (
    "dog", "cat", "fox", "goat", "horse", "duck", "rabbit", "pig", "cow", "frog", "mouse", "hen",
    "sheep", "parrot", "turtle", "hamster", "pony", "bear", "toad", "lamb",
)
JOBS: tuple[str, ...] = (
    "baker", "farmer", "teacher", "doctor", "painter", "fisher", "builder", "singer", "tailor", "nurse",
    "cook", "pilot", "potter", "miller", "driver", "gardener",
)
COLOURS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white", "grey", "gold",
)
# Things people own for good: "Mia owns the red ball" is a fact of the world.
OWNED_THINGS: tuple[str, ...] = (
    "ball", "kite", "hat", "drum", "bike", "lamp", "boat", "bell", "coat", "clock", "scarf", "flute",
    "sled", "wagon", "puzzle", "basket",
)
# Things that only live inside one story: passing them around never contradicts a world fact.
STORY_THINGS: tuple[str, ...] = (
    "cup", "shell", "coin", "pencil", "letter", "spoon", "map", "stone", "flower", "book", "ribbon",
    "candle", "button", "marble",
)
# Countable things for word problems, as (singular, plural).
COUNTABLES: tuple[tuple[str, str], ...] = (
    ("apple", "apples"), ("pear", "pears"), ("plum", "plums"), ("egg", "eggs"), ("cookie", "cookies"),
    ("carrot", "carrots"), ("sticker", "stickers"), ("acorn", "acorns"),
)
# Places inside a town where a story happens ("Mia went to the park"); never anybody's home.
SPOTS: tuple[str, ...] = (
    "park", "market", "school", "library", "bakery", "river", "garden", "farm", "beach", "station",
)
# The forbidden sleeping potion is brewed from three of these; they exist nowhere else.
INGREDIENTS: tuple[str, ...] = ("moonpetal", "frostberry", "glowcap", "duskroot", "starmoss", "mistleaf")

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)

WORD_LISTS: dict[str, tuple[str, ...]] = {
    "names": tuple(name for name, _ in PEOPLE), "towns": TOWNS, "animals": ANIMALS, "jobs": JOBS,
    "colours": COLOURS, "owned_things": OWNED_THINGS, "story_things": STORY_THINGS,
    "countables": tuple(w for pair in COUNTABLES for w in pair), "spots": SPOTS,
    "ingredients": INGREDIENTS, "numbers": NUMBER_WORDS,
}


def article(word: str) -> str:
    """``"a"`` or ``"an"`` for ``word`` (by its first letter, which is right for every word here)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def number_word(n: int) -> str:
    """``7 -> "seven"`` for 0..20, digits beyond."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)
