"""A knowledge-boundary task for pay-per-search: facts a small model knows, and facts it cannot know.

Two pools of short-answer questions, each with one sentence stating its answer:

- **common facts** (capitals, languages, continents, opposites, plurals, counts, a few others):
  questions SmolLM2-135M often answers right without help; which of them it *knows* is decided by
  sampling it (``bench/proofs/mash.py``), as MASH does (arXiv 2510.01152).
- **invented facts**: made-up countries, rivers, companies and people with made-up attributes,
  generated from a seed. No model can know them; their sentences are the only place the answers exist.

The search corpus holds the sentences of both pools, so a search answers either kind: searching never
hurts, it only costs. Arithmetic is left out on purpose: BM25 cannot tell "9 + 5" from "5 + 9 = 14"
from "4 + 5 = 9".
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    question: str
    answers: tuple[str, ...]
    passage: str
    kind: str  # family of the question (capital, language, ..., invented_*)
    invented: bool


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "China": "Beijing", "Russia": "Moscow", "England": "London", "the United Kingdom": "London",
    "Egypt": "Cairo", "Greece": "Athens", "Portugal": "Lisbon", "Canada": "Ottawa", "Australia": "Canberra",
    "India": "New Delhi", "Ireland": "Dublin", "Austria": "Vienna", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest",
    "Thailand": "Bangkok", "South Korea": "Seoul", "Argentina": "Buenos Aires", "Peru": "Lima",
    "Mexico": "Mexico City", "Cuba": "Havana", "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad",
    "Kenya": "Nairobi", "the Netherlands": "Amsterdam", "Belgium": "Brussels", "Switzerland": "Bern",
    "the United States": "Washington", "Brazil": "Brasilia", "Chile": "Santiago", "Colombia": "Bogota",
    "Vietnam": "Hanoi", "the Philippines": "Manila", "Indonesia": "Jakarta", "Scotland": "Edinburgh",
    "Wales": "Cardiff", "the Czech Republic": "Prague", "Romania": "Bucharest", "Ukraine": "Kyiv",
    "Saudi Arabia": "Riyadh", "Israel": "Jerusalem", "Nigeria": "Abuja", "Ethiopia": "Addis Ababa",
    "Venezuela": "Caracas", "Pakistan": "Islamabad", "Afghanistan": "Kabul", "Syria": "Damascus",
    "Lebanon": "Beirut", "Jordan": "Amman", "Morocco": "Rabat", "Algeria": "Algiers", "Tunisia": "Tunis",
    "Libya": "Tripoli", "Ghana": "Accra", "Senegal": "Dakar", "Uganda": "Kampala", "Bulgaria": "Sofia",
    "Serbia": "Belgrade", "Croatia": "Zagreb", "Slovakia": "Bratislava", "Iceland": "Reykjavik",
    "Estonia": "Tallinn", "Latvia": "Riga", "Lithuania": "Vilnius", "Malaysia": "Kuala Lumpur",
    "Nepal": "Kathmandu", "Bangladesh": "Dhaka", "Sri Lanka": "Colombo", "New Zealand": "Wellington",
    "Ecuador": "Quito", "Bolivia": "La Paz", "Uruguay": "Montevideo", "Paraguay": "Asuncion",
    "North Korea": "Pyongyang", "Mongolia": "Ulaanbaatar", "Qatar": "Doha", "Taiwan": "Taipei",
}  # fmt: skip
LANGUAGES = {
    "France": "French", "Germany": "German", "Spain": "Spanish", "Italy": "Italian", "Japan": "Japanese",
    "China": "Chinese", "Russia": "Russian", "Greece": "Greek", "Portugal": "Portuguese", "Brazil": "Portuguese",
    "the Netherlands": "Dutch", "Sweden": "Swedish", "Poland": "Polish", "Turkey": "Turkish",
    "South Korea": "Korean", "Mexico": "Spanish", "Argentina": "Spanish", "England": "English",
    "Australia": "English", "the United States": "English", "Finland": "Finnish", "Norway": "Norwegian",
    "Denmark": "Danish", "Hungary": "Hungarian", "Vietnam": "Vietnamese", "Thailand": "Thai",
    "Iran": "Persian", "Israel": "Hebrew", "Egypt": "Arabic", "Saudi Arabia": "Arabic",
}  # fmt: skip
CONTINENTS = {
    "France": "Europe", "Germany": "Europe", "Italy": "Europe", "Spain": "Europe", "Poland": "Europe",
    "Sweden": "Europe", "Greece": "Europe", "Norway": "Europe", "Japan": "Asia", "China": "Asia",
    "India": "Asia", "Thailand": "Asia", "Vietnam": "Asia", "Korea": "Asia", "Nepal": "Asia",
    "Indonesia": "Asia", "Egypt": "Africa", "Kenya": "Africa", "Nigeria": "Africa", "Ghana": "Africa",
    "Ethiopia": "Africa", "Morocco": "Africa", "Brazil": "South America", "Argentina": "South America",
    "Peru": "South America", "Chile": "South America", "Colombia": "South America",
    "Canada": "North America", "Mexico": "North America", "the United States": "North America",
}  # fmt: skip
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "day": "night", "black": "white", "fast": "slow",
    "happy": "sad", "left": "right", "yes": "no", "wet": "dry", "light": "dark", "hard": "soft",
    "high": "low", "full": "empty", "early": "late", "rich": "poor", "strong": "weak", "true": "false",
    "win": "lose", "push": "pull", "love": "hate", "open": "closed", "tall": "short", "top": "bottom",
    "north": "south", "east": "west", "good": "bad", "clean": "dirty", "boy": "girl", "buy": "sell",
    "first": "last", "alive": "dead", "inside": "outside", "before": "after", "thick": "thin",
    "cheap": "expensive", "loud": "quiet", "above": "below", "question": "answer", "friend": "enemy",
    "war": "peace", "summer": "winter", "king": "queen", "man": "woman", "sun": "moon",
}  # fmt: skip
PLURALS = {
    "mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth", "man": "men", "woman": "women",
    "goose": "geese", "person": "people", "box": "boxes", "knife": "knives", "leaf": "leaves",
    "baby": "babies", "city": "cities", "wolf": "wolves", "wife": "wives", "bus": "buses",
}  # fmt: skip
OTHERS = [
    ("How many days are in a week?", ("7", "seven"), "A week has seven days."),
    ("How many legs does a spider have?", ("8", "eight"), "A spider has eight legs."),
    ("How many months are in a year?", ("12", "twelve"), "A year has twelve months."),
    ("How many sides does a triangle have?", ("3", "three"), "A triangle has three sides."),
    ("How many sides does a square have?", ("4", "four"), "A square has four sides."),
    ("How many hours are in a day?", ("24", "twenty-four"), "A day has twenty-four hours."),
    ("How many minutes are in an hour?", ("60", "sixty"), "An hour has sixty minutes."),
    ("How many wheels does a bicycle have?", ("2", "two"), "A bicycle has two wheels."),
    ("How many continents are there?", ("7", "seven"), "There are seven continents."),
    ("How many legs does an insect have?", ("6", "six"), "An insect has six legs."),
    ("What is frozen water called?", ("ice",), "Frozen water is called ice."),
    ("What do bees make?", ("honey",), "Bees make honey."),
    ("What is the largest planet in the solar system?", ("Jupiter",), "Jupiter is the largest planet in the solar system."),
    ("What gas do humans need to breathe?", ("oxygen",), "Humans need oxygen to breathe."),
    ("What is a baby cat called?", ("kitten",), "A baby cat is called a kitten."),
    ("What is a baby dog called?", ("puppy",), "A baby dog is called a puppy."),
    ("Who wrote Romeo and Juliet?", ("Shakespeare", "William Shakespeare"), "Romeo and Juliet was written by William Shakespeare."),
    ("Who was the first president of the United States?", ("George Washington", "Washington"), "George Washington was the first president of the United States."),
    ("In which city is the Eiffel Tower?", ("Paris",), "The Eiffel Tower is in Paris."),
    ("What is the tallest animal?", ("giraffe", "the giraffe"), "The tallest animal is the giraffe."),
    ("What is the largest ocean on Earth?", ("Pacific", "the Pacific Ocean", "Pacific Ocean"), "The largest ocean on Earth is the Pacific Ocean."),
    ("What planet do we live on?", ("Earth",), "We live on the planet Earth."),
    ("What is the red planet?", ("Mars",), "Mars is called the red planet."),
    ("What is the largest mammal?", ("blue whale", "the blue whale", "whale"), "The largest mammal is the blue whale."),
    ("Who painted the Mona Lisa?", ("Leonardo da Vinci", "da Vinci", "Leonardo"), "The Mona Lisa was painted by Leonardo da Vinci."),
    ("What is the chemical symbol for water?", ("H2O",), "The chemical formula of water is H2O."),
    ("What is the boiling point of water in Celsius?", ("100", "100 degrees"), "Water boils at 100 degrees Celsius."),
    ("What is the colour of grass?", ("green",), "Grass is green."),
    ("What is the colour of snow?", ("white",), "Snow is white."),
    ("What do caterpillars turn into?", ("butterflies", "butterfly", "a butterfly"), "Caterpillars turn into butterflies."),
]  # fmt: skip


def common_facts() -> list[Fact]:
    """Every common-fact question of the pool, in a fixed order."""
    out = [
        Fact(f"What is the capital of {c}?", (a,), f"The capital of {c} is {a}.", "capital", False)
        for c, a in CAPITALS.items()
    ]
    out += [
        Fact(f"What language is spoken in {c}?", (a,), f"The language of {c} is {a}.", "language", False)
        for c, a in LANGUAGES.items()
    ]
    out += [
        Fact(f"On which continent is {c}?", (a,), f"{c[0].upper() + c[1:]} is in {a}.", "continent", False)
        for c, a in CONTINENTS.items()
    ]
    out += [
        Fact(f"What is the opposite of {w}?", (a,), f"The opposite of {w} is {a}.", "opposite", False)
        for w, a in OPPOSITES.items()
    ]
    out += [
        Fact(f"What is the plural of {w}?", (a,), f"The plural of {w} is {a}.", "plural", False)
        for w, a in PLURALS.items()
    ]
    out += [Fact(q, a, p, "other", False) for q, a, p in OTHERS]
    return out


_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gr",
    "tr",
    "kl",
    "st",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "m", "k"]


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)]
    return "".join(parts).capitalize()


def invented_facts(n: int, seed: int = 0) -> list[Fact]:
    """``n`` facts about made-up entities (distinct names), generated from ``seed``."""
    rng = random.Random(seed)
    used: set[str] = set()

    def name(syllables: int) -> str:
        while True:
            word = _word(rng, syllables)
            if word not in used and len(word) >= 5:
                used.add(word)
                return word

    makers = [
        lambda c, a: Fact(f"What is the capital of {c}?", (a,), f"The capital of {c} is {a}.", "invented_capital", True),
        lambda c, a: Fact(f"Who founded the company {c}?", (a,), f"The company {c} was founded by {a}.", "invented_founder", True),
        lambda c, a: Fact(f"Which river flows through the town of {c}?", (a,), f"The river {a} flows through the town of {c}.", "invented_river", True),
        lambda c, a: Fact(f"What is the national animal of {c}?", (a,), f"The national animal of {c} is the {a}.", "invented_animal", True),
    ]  # fmt: skip
    animals = ["otter", "heron", "lynx", "falcon", "badger", "ibex", "crane", "marten", "gecko", "stork"]
    out = []
    for i in range(n):
        kind = i % len(makers)
        entity = name(rng.choice([2, 3]))
        if kind == 1:
            answer = f"{name(2)} {name(2)}"
        elif kind == 3:
            answer = rng.choice(animals)
        else:
            answer = name(2)
        out.append(makers[kind](entity, answer))
    return out
