"""Generate the data of pytest-slm's own lm-eval tasks (slm_facts, slm_arith, slm_cloze).

    python tools/generate_tasks.py [--out DIR]

rewrites every file under pytest_slm/data/tasks/data/ (or DIR) byte-identically: the items come
from the small tables below (written for this project) and from procedural templates drawn with
fixed seeds. Standard library only, no network; tests/test_task_data.py holds the committed files
to this script's output. It lives outside the package because only its output ships. Changing
anything here changes the tasks' prompts, so baselines measured on the old data no longer compare
(pytest-slm notices: the prompts' hash changes).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, installed or not

import itertools

from pytest_slm.data.tasks.utils import DATA_DIR, data_path

SEED = 20240611


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=True) + "\n" for row in rows)
    path.write_bytes(text.encode("utf-8"))


def _mc(rng: random.Random, answer: str, distractors: list[str], n_choices: int = 4) -> tuple[list[str], int]:
    """Shuffle the answer among n_choices - 1 distractors; return (choices, label)."""
    pool = sorted({d for d in distractors if d != answer})
    chosen = rng.sample(pool, n_choices - 1)
    choices = chosen + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


# ---------------------------------------------------------------------------------------------
# slm_facts: commonsense / world-knowledge tables
# ---------------------------------------------------------------------------------------------

# (animal, sound): "What sound does a cow make?" and "Which animal says moo?"
ANIMAL_SOUNDS = [
    ("dog", "bark"),
    ("cat", "meow"),
    ("cow", "moo"),
    ("duck", "quack"),
    ("lion", "roar"),
    ("sheep", "baa"),
    ("pig", "oink"),
    ("horse", "neigh"),
    ("owl", "hoot"),
    ("snake", "hiss"),
    ("bee", "buzz"),
    ("frog", "croak"),
    ("wolf", "howl"),
    ("mouse", "squeak"),
    ("donkey", "bray"),
    ("hen", "cluck"),
]
SOUND_CONFLICTS = {
    "dog": {"howl"},
    "wolf": {"bark"},
    "lion": {"howl"},
    "cat": {"hiss"},
    "donkey": {"neigh"},
    "horse": {"bray"},
}

BABY_ANIMALS = [
    ("cat", "kitten"),
    ("dog", "puppy"),
    ("cow", "calf"),
    ("sheep", "lamb"),
    ("horse", "foal"),
    ("duck", "duckling"),
    ("frog", "tadpole"),
    ("hen", "chick"),
    ("bear", "cub"),
    ("pig", "piglet"),
    ("kangaroo", "joey"),
    ("deer", "fawn"),
    ("goose", "gosling"),
    ("butterfly", "caterpillar"),
]
BABY_CONFLICTS = {
    "bear": {"kitten", "puppy"},
    "cat": {"cub"},
    "dog": {"cub"},
    "cow": {"cub"},
    "duck": {"chick", "gosling"},
    "goose": {"chick", "duckling"},
    "hen": {"duckling", "gosling"},
}

# (word, opposite, cluster): distractors come from other clusters only
OPPOSITES = [
    ("hot", "cold", "temp"),
    ("big", "small", "size"),
    ("up", "down", "pos"),
    ("fast", "slow", "speed"),
    ("happy", "sad", "mood"),
    ("light", "dark", "light"),
    ("open", "closed", "state"),
    ("wet", "dry", "wet"),
    ("day", "night", "light"),
    ("full", "empty", "amount"),
    ("hard", "soft", "touch"),
    ("early", "late", "time"),
    ("win", "lose", "game"),
    ("loud", "quiet", "sound"),
    ("tall", "short", "size"),
    ("thick", "thin", "size"),
    ("rich", "poor", "money"),
    ("strong", "weak", "force"),
    ("clean", "dirty", "state"),
    ("push", "pull", "force"),
    ("inside", "outside", "pos"),
    ("first", "last", "time"),
    ("buy", "sell", "money"),
    ("above", "below", "pos"),
    ("old", "young", "age"),
    ("always", "never", "time"),
    ("true", "false", "truth"),
    ("remember", "forget", "mind"),
]

# (object, use): "What is a broom used for?"
OBJECT_USES = [
    ("a broom", "sweeping the floor"),
    ("a pen", "writing words"),
    ("an umbrella", "keeping dry in the rain"),
    ("a key", "opening a lock"),
    ("an oven", "baking bread"),
    ("a toothbrush", "cleaning your teeth"),
    ("a hammer", "hitting nails"),
    ("a ladder", "climbing up high"),
    ("soap", "washing your hands"),
    ("a pillow", "resting your head"),
    ("a clock", "telling the time"),
    ("a camera", "taking photos"),
    ("a map", "finding the way"),
    ("a thermometer", "measuring temperature"),
    ("a ruler", "measuring length"),
    ("a towel", "drying your body"),
    ("a comb", "fixing your hair"),
    ("a fridge", "keeping food cold"),
    ("a needle", "sewing clothes"),
    ("a shovel", "digging holes"),
    ("a telephone", "calling people"),
    ("scissors", "cutting paper"),
    ("a cup", "holding a drink"),
    ("a bed", "sleeping at night"),
]
# uses that must not be offered as the wrong answer for an object (they would also fit)
USE_CONFLICTS = {
    "a towel": {"keeping dry in the rain"},
    "an umbrella": {"drying your body"},
    "a bed": {"resting your head"},
    "a pillow": {"sleeping at night"},
    "soap": {"cleaning your teeth"},
    "a toothbrush": {"washing your hands"},
}

COLORS = ["red", "green", "blue", "yellow", "white", "black", "orange", "brown", "pink", "purple", "gray"]
# (thing, color, colors that must not be offered as wrong answers)
THING_COLORS = [
    ("fresh snow", "white", {"gray"}),
    ("grass", "green", {"yellow", "brown"}),
    ("the sky on a clear day", "blue", set()),
    ("a ripe banana", "yellow", {"green", "brown"}),
    ("coal", "black", {"gray", "brown"}),
    ("blood", "red", {"brown", "purple"}),
    ("a carrot", "orange", set()),
    ("milk", "white", set()),
    ("a lemon", "yellow", {"green"}),
    ("a ripe strawberry", "red", {"pink"}),
    ("chocolate", "brown", {"black", "white"}),
    ("a pumpkin", "orange", {"yellow"}),
    ("a crow", "black", {"gray"}),
    ("an elephant", "gray", {"brown"}),
    ("a flamingo", "pink", {"red", "orange", "white"}),
    ("a lime", "green", {"yellow"}),
    ("a tree trunk", "brown", {"gray", "black"}),
    ("the sea", "blue", {"green", "gray"}),
    ("a ripe tomato", "red", {"green", "orange"}),
    ("an eggplant", "purple", {"black"}),
]

# (thing, size rank): "Which is the biggest: ..." uses the names as written
SIZES = [
    ("an ant", 1),
    ("a grape", 2),
    ("a coin", 2),
    ("a mouse", 3),
    ("an apple", 3),
    ("a shoe", 4),
    ("a cat", 5),
    ("a chair", 6),
    ("a dog", 6),
    ("a bicycle", 7),
    ("a horse", 8),
    ("a car", 8),
    ("a bus", 9),
    ("an elephant", 9),
    ("a house", 10),
    ("a whale", 10),
    ("a mountain", 12),
]
WEIGHTS = [
    ("a feather", 1),
    ("a leaf", 1),
    ("a pencil", 2),
    ("a spoon", 2),
    ("a book", 3),
    ("a brick", 4),
    ("a bag of rice", 5),
    ("a child", 6),
    ("a fridge", 7),
    ("a piano", 8),
    ("a car", 9),
    ("a truck", 10),
    ("a ship", 12),
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

# (question, number)
NUMBER_FACTS = [
    ("How many legs does a spider have?", 8),
    ("How many days are in a week?", 7),
    ("How many months are in a year?", 12),
    ("How many hours are in a day?", 24),
    ("How many minutes are in an hour?", 60),
    ("How many sides does a triangle have?", 3),
    ("How many sides does a square have?", 4),
    ("How many wheels does a bicycle have?", 2),
    ("How many wheels does a tricycle have?", 3),
    ("How many legs does a dog have?", 4),
    ("How many legs does a bird have?", 2),
    ("How many legs does an insect have?", 6),
    ("How many fingers are on one hand?", 5),
    ("How many eyes does a person have?", 2),
    ("How many sides does a hexagon have?", 6),
    ("How many arms does an octopus have?", 8),
    ("How many cents are in a dollar?", 100),
    ("How many years are in a decade?", 10),
    ("How many eggs are in a dozen?", 12),
    ("How many days are in a year?", 365),
    ("How many seconds are in a minute?", 60),
    ("How many years are in a century?", 100),
]
NUMBER_POOL = [2, 3, 4, 5, 6, 7, 8, 10, 12, 20, 24, 30, 50, 60, 100, 365]

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("England", "London"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Egypt", "Cairo"),
    ("Greece", "Athens"),
    ("Canada", "Ottawa"),
    ("Ireland", "Dublin"),
    ("Portugal", "Lisbon"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Austria", "Vienna"),
    ("Kenya", "Nairobi"),
    ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"),
    ("Poland", "Warsaw"),
    ("Peru", "Lima"),
    ("Cuba", "Havana"),
    ("Argentina", "Buenos Aires"),
    ("Turkey", "Ankara"),
]

# (question, answer)
PROFESSIONS = [
    ("Who flies an airplane?", "a pilot"),
    ("Who fixes teeth?", "a dentist"),
    ("Who grows crops on a farm?", "a farmer"),
    ("Who puts out fires?", "a firefighter"),
    ("Who bakes bread?", "a baker"),
    ("Who teaches students in a school?", "a teacher"),
    ("Who treats sick people in a hospital?", "a doctor"),
    ("Who cuts hair?", "a barber"),
    ("Who cooks meals in a restaurant?", "a chef"),
    ("Who catches fish for a living?", "a fisherman"),
    ("Who builds houses?", "a builder"),
    ("Who takes care of sick animals?", "a vet"),
    ("Who paints pictures?", "a painter"),
    ("Who writes books?", "an author"),
]
JOB_CONFLICTS = {
    "a baker": {"a chef"},
    "a chef": {"a baker"},
    "a vet": {"a farmer", "a doctor"},
    "a doctor": {"a dentist", "a vet"},
    "a dentist": {"a doctor"},
    "a builder": {"a painter"},
    "a painter": {"a builder"},
}

BODY = [
    ("see", "the eyes"),
    ("hear", "the ears"),
    ("smell", "the nose"),
    ("taste", "the tongue"),
    ("walk", "the legs"),
    ("think", "the brain"),
    ("breathe", "the lungs"),
    ("chew", "the teeth"),
]
BODY_CONFLICTS = {"breathe": {"the nose"}, "chew": {"the tongue"}, "taste": {"the teeth"}}

# (animal, home, homes that must not be offered as wrong answers)
HOMES = [
    ("a fish", "in water", {"in the ocean", "in a pond"}),
    ("a bee", "in a hive", {"in the jungle", "on a farm"}),
    (
        "a bird",
        "in a nest",
        {
            "in the jungle",
            "in the desert",
            "in the Arctic",
            "in Antarctica",
            "on a farm",
            "in water",
            "in the ocean",
            "in a burrow",
            "in a pond",
            "in a cave",
        },
    ),
    ("a spider", "in a web", {"in a burrow", "in the jungle", "in the desert", "on a farm", "in a cave"}),
    ("a rabbit", "in a burrow", {"on a farm"}),
    ("a camel", "in the desert", {"on a farm"}),
    ("a monkey", "in the jungle", set()),
    ("a polar bear", "in the Arctic", {"in water", "in the ocean", "in Antarctica"}),
    ("a cow", "on a farm", {"in a stable"}),
    ("a whale", "in the ocean", {"in water", "in a pond"}),
    ("a penguin", "in Antarctica", {"in a nest", "in a burrow", "in water", "in the ocean", "in the Arctic"}),
    ("a bat", "in a cave", {"in the jungle", "in the desert"}),
    ("an ant", "in an anthill", {"in the jungle", "in the desert", "on a farm", "in a burrow"}),
    ("a horse", "in a stable", {"on a farm"}),
    ("a frog", "in a pond", {"in water", "in the jungle"}),
]


def _facts_items(rng: random.Random) -> list[dict]:
    """Every facts item, grouped by category, before the train/test split."""
    cats: dict[str, list[tuple[str, str, list[str]]]] = {}

    sounds = [s for _, s in ANIMAL_SOUNDS]
    animals = [a for a, _ in ANIMAL_SOUNDS]
    cats["animal_sound"] = [
        (f"What sound does {_a(a)} make?", s, [x for x in sounds if x not in SOUND_CONFLICTS.get(a, set())])
        for a, s in ANIMAL_SOUNDS
    ]
    cats["sound_animal"] = [
        (f"Which animal says {s}?", _a(a), [_a(x) for x in animals if s not in _sounds_of(x)]) for a, s in ANIMAL_SOUNDS
    ]
    babies = [b for _, b in BABY_ANIMALS]
    cats["baby_animal"] = [
        (f"What is a baby {a} called?", b, [x for x in babies if x not in BABY_CONFLICTS.get(a, set())])
        for a, b in BABY_ANIMALS
    ]
    cats["opposite"] = [
        (f"What is the opposite of {w}?", o, [x for _, x, c in OPPOSITES if c != cl]) for w, o, cl in OPPOSITES
    ]
    uses = [u for _, u in OBJECT_USES]
    cats["object_use"] = [
        (
            f"What {'are' if o.endswith('s') else 'is'} {o} used for?",
            u,
            [x for x in uses if x not in USE_CONFLICTS.get(o, set())],
        )
        for o, u in OBJECT_USES
    ]
    cats["color"] = [(f"What color is {t}?", c, [x for x in COLORS if x not in bad]) for t, c, bad in THING_COLORS]
    cats["size"] = _compare_items(rng, SIZES, "biggest", "smallest", 12)
    cats["weight"] = _compare_items(rng, WEIGHTS, "heaviest", "lightest", 10)
    order = []
    for names, unit in ((DAYS, "day"), (MONTHS, "month")):
        n = len(names)
        for i, name in enumerate(names):
            order.append((f"Which {unit} comes after {name}?", names[(i + 1) % n], names))
            order.append((f"Which {unit} comes before {name}?", names[(i - 1) % n], names))
    rng.shuffle(order)
    cats["calendar"] = order[:20]
    cats["number"] = [(q, str(v), [str(x) for x in NUMBER_POOL]) for q, v in NUMBER_FACTS]
    cities = [c for _, c in CAPITALS]
    cats["capital"] = [(f"What is the capital of {k}?", c, cities) for k, c in CAPITALS]
    jobs = [j for _, j in PROFESSIONS]
    cats["profession"] = [(q, j, [x for x in jobs if x not in JOB_CONFLICTS.get(j, set())]) for q, j in PROFESSIONS]
    parts = [p for _, p in BODY]
    cats["body"] = [
        (f"Which part of the body do you use to {v}?", p, [x for x in parts if x not in BODY_CONFLICTS.get(v, set())])
        for v, p in BODY
    ]
    cats["home"] = [
        (f"Where does {a} usually live?", h, [x for _, x, _ in HOMES if x not in bad]) for a, h, bad in HOMES
    ]

    out = []
    for cat, triples in cats.items():
        for q, ans, distractors in triples:
            choices, label = _mc(rng, ans, distractors)
            out.append({"category": cat, "question": q, "choices": choices, "label": label})
    return out


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _sounds_of(animal: str) -> set[str]:
    own = {s for a, s in ANIMAL_SOUNDS if a == animal}
    return own | SOUND_CONFLICTS.get(animal, set())


def _compare_items(rng, table, most, least, n):
    """'Which is the biggest: a, b, c or d?' over four things of clearly different rank."""
    items = []
    seen = set()
    while len(items) < n:
        four = rng.sample(table, 4)
        ranks = sorted(r for _, r in four)
        if any(b - a < 2 for a, b in itertools.pairwise(ranks)):
            continue  # keep the answer unambiguous: neighbours at least 2 ranks apart
        key = tuple(sorted(t for t, _ in four))
        if key in seen:
            continue
        seen.add(key)
        want_most = len(items) % 2 == 0
        pick = max(four, key=lambda x: x[1]) if want_most else min(four, key=lambda x: x[1])
        names = [t for t, _ in four]
        listed = ", ".join(names[:3]) + f" or {names[3]}"
        q = f"Which is the {most if want_most else least}: {listed}?"
        items.append((q, pick[0], names))
    return items


def build_facts() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED + 1)
    items = _facts_items(rng)
    # two items of every category go to the few-shot (train) split, the rest is the test split
    by_cat: dict[str, list[dict]] = {}
    for it in items:
        by_cat.setdefault(it["category"], []).append(it)
    train, test = [], []
    for group in by_cat.values():
        rng.shuffle(group)
        train.extend(group[:2])
        test.extend(group[2:])
    rng.shuffle(train)
    rng.shuffle(test)
    return _ids("facts-train", train), _ids("facts-test", test)


def _ids(prefix: str, rows: list[dict]) -> list[dict]:
    return [{"id": f"{prefix}-{i:04d}", **row} for i, row in enumerate(rows)]


# ---------------------------------------------------------------------------------------------
# slm_arith: small-integer + - x with exact-match answers
# ---------------------------------------------------------------------------------------------


def _arith_pool() -> dict[str, list[tuple[int, int]]]:
    return {
        "plus": [(a, b) for a in range(1, 21) for b in range(1, 21)],
        "minus": [(a, b) for a in range(2, 21) for b in range(1, a)],
        "times": [(a, b) for a in range(2, 11) for b in range(2, 11)],
    }


def _arith_row(op: str, a: int, b: int) -> dict:
    result = {"plus": a + b, "minus": a - b, "times": a * b}[op]
    return {"op": op, "a": a, "b": b, "question": f"What is {a} {op} {b}?", "answer": str(result)}


def build_arith(n_test_per_op: int = 60, n_train_per_op: int = 4) -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED + 2)
    train, test = [], []
    for op, pool in _arith_pool().items():
        pool = list(pool)
        rng.shuffle(pool)

        def key(a: int, b: int, op: str = op) -> tuple[int, int]:  # 3+5 and 5+3 count as one item
            return (a, b) if op == "minus" else (min(a, b), max(a, b))

        # the few-shot items come first; no test item shares a train item's key
        op_train = pool[:n_train_per_op]
        train_keys = {key(a, b) for a, b in op_train}
        op_test = [(a, b) for a, b in pool[n_train_per_op:] if key(a, b) not in train_keys][:n_test_per_op]
        train.append([_arith_row(op, a, b) for a, b in op_train])
        test.extend(_arith_row(op, a, b) for a, b in op_test)
    # interleave the operations in the train split so the first shots mix + - x
    train_rows = [row for group in zip(*train) for row in group]
    rng.shuffle(test)
    return _ids("arith-train", train_rows), _ids("arith-test", test)


# ---------------------------------------------------------------------------------------------
# slm_cloze: short generated passages, the answer is stated in the passage
# ---------------------------------------------------------------------------------------------

NAMES = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Elena",
    "Felix",
    "Grace",
    "Hugo",
    "Iris",
    "Jonas",
    "Kira",
    "Leo",
    "Maya",
    "Nora",
    "Omar",
    "Paula",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Victor",
    "Wendy",
    "Yusuf",
    "Zoe",
]
ROOMS = ["kitchen", "garage", "bedroom", "garden", "attic", "basement", "bathroom", "hallway", "office", "cellar"]
OBJECTS = ["keys", "umbrella", "backpack", "hammer", "blanket", "lamp", "basket", "guitar", "camera", "ladder"]
THINGS = ["kite", "bicycle", "scarf", "car", "hat", "boat", "jacket", "balloon", "mug", "tent"]
PET_NAMES = ["Rex", "Luna", "Max", "Bella", "Milo", "Coco", "Bruno", "Daisy", "Oscar", "Pepper", "Toby", "Ziggy"]
PETS = ["dog", "cat", "parrot", "rabbit", "horse", "goat"]
JOBS = ["baker", "pilot", "nurse", "farmer", "teacher", "painter", "plumber", "chef", "dentist", "driver"]
CITIES = [
    "Lisbon",
    "Oslo",
    "Dublin",
    "Vienna",
    "Prague",
    "Madrid",
    "Warsaw",
    "Athens",
    "Zurich",
    "Helsinki",
    "Lyon",
    "Porto",
]
NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
FRUITS = ["apples", "pears", "oranges", "lemons", "peaches", "plums", "bananas", "melons"]
EVENTS = ["concert", "picnic", "meeting", "party", "match", "market", "wedding", "lecture"]
FOODS = ["soup", "pasta", "rice", "salad", "pizza", "fish", "bread", "noodles", "eggs", "cake"]
INSTRUMENTS = ["piano", "violin", "drums", "flute", "guitar", "trumpet", "cello", "harp"]
TOPICS = ["volcanoes", "pirates", "dinosaurs", "the moon", "bees", "castles", "trains", "whales"]
SHOPS = ["bakery", "bookshop", "pharmacy", "florist", "butcher", "toy shop"]


def _two(rng, pool):
    a, b = rng.sample(pool, 2)
    return a, b


def _either(rng, first, second):
    """A fair coin between the passage's two facts, each (what is asked, the answer, the other value)."""
    return first if rng.random() < 0.5 else second


def _choices(rng, pool, ans, other, shape="{}"):
    """The answer first, then the passage's other value (the tempting wrong one) and two more from pool."""
    extra = rng.sample([x for x in pool if x not in (ans, other)], 2)
    return [shape.format(x) for x in (ans, other, *extra)]


def _cloze_location(rng):
    p, q = _two(rng, NAMES)
    o1, o2 = _two(rng, OBJECTS)
    r1, r2 = _two(rng, ROOMS)
    passage = f"{p} left the {o1} in the {r1}. Later, {q} put the {o2} in the {r2}."
    leave, put = (f"Where did {p} leave the {o1}?", r1, r2), (f"Where did {q} put the {o2}?", r2, r1)
    question, ans, other = _either(rng, leave, put)
    return passage, question, _choices(rng, ROOMS, ans, other, "in the {}")


def _cloze_color(rng):
    p, q = _two(rng, NAMES)
    thing = rng.choice(THINGS)
    c1, c2 = _two(rng, COLORS)
    passage = f"{p} has a {c1} {thing}. {q} has a {c2} {thing}, and it is brand new."
    who, ans, other = _either(rng, (p, c1, c2), (q, c2, c1))
    return passage, f"What color is {who}'s {thing}?", _choices(rng, COLORS, ans, other)


def _cloze_pet(rng):
    p = rng.choice(NAMES)
    a1, a2 = _two(rng, PETS)
    n1, n2 = _two(rng, PET_NAMES)
    passage = f"{p} has a {a1} named {n1} and a {a2} named {n2}. They all live in a small house by a lake."
    which, ans, other = _either(rng, (a1, n1, n2), (a2, n2, n1))
    return passage, f"What is the name of {p}'s {which}?", _choices(rng, PET_NAMES, ans, other)


def _cloze_job(rng):
    p, q = _two(rng, NAMES)
    j1, j2 = _two(rng, JOBS)
    passage = f"{p} works as a {j1}. {p}'s best friend, {q}, works as a {j2}. They meet every Sunday."
    who, ans, other = _either(rng, (p, j1, j2), (q, j2, j1))
    return passage, f"What is {who}'s job?", _choices(rng, JOBS, ans, other, "a {}")


def _cloze_city(rng):
    p = rng.choice(NAMES)
    c1, c2 = _two(rng, CITIES)
    passage = f"{p} was born in {c1}. Ten years ago, {p} moved to {c2} and still lives there today."
    question, ans, other = _either(rng, (f"Where was {p} born?", c1, c2), (f"Where does {p} live now?", c2, c1))
    return passage, question, _choices(rng, CITIES, ans, other)


def _cloze_count(rng):
    p = rng.choice(NAMES)
    f1, f2 = _two(rng, FRUITS)
    n1, n2 = _two(rng, NUMBER_WORDS)
    passage = f"At the market, {p} bought {n1} {f1} and {n2} {f2}. Everything fit in one bag."
    fruit, ans, other = _either(rng, (f1, n1, n2), (f2, n2, n1))
    return passage, f"How many {fruit} did {p} buy?", _choices(rng, NUMBER_WORDS, ans, other)


def _cloze_day(rng):
    e1, e2 = _two(rng, EVENTS)
    d1, d2 = _two(rng, DAYS)
    passage = f"The {e1} is on {d1}. The {e2} is on {d2}, in the afternoon."
    ev, ans, other = _either(rng, (e1, d1, d2), (e2, d2, d1))
    return passage, f"On which day is the {ev}?", _choices(rng, DAYS, ans, other)


def _cloze_food(rng):
    p, q = _two(rng, NAMES)
    f1, f2 = _two(rng, FOODS)
    passage = f"For lunch, {p} ate {f1} and {q} ate {f2}. After that, they went for a walk."
    who, ans, other = _either(rng, (p, f1, f2), (q, f2, f1))
    return passage, f"What did {who} eat for lunch?", _choices(rng, FOODS, ans, other)


def _cloze_instrument(rng):
    p, q = _two(rng, NAMES)
    i1, i2 = _two(rng, INSTRUMENTS)
    passage = f"{p} plays the {i1} in a band. {q} plays the {i2} at home."
    who, ans, other = _either(rng, (p, i1, i2), (q, i2, i1))
    return passage, f"Which instrument does {who} play?", _choices(rng, INSTRUMENTS, ans, other, "the {}")


def _cloze_book(rng):
    p = rng.choice(NAMES)
    shop = rng.choice(SHOPS)
    t1 = rng.choice(TOPICS)
    passage = f"On Saturday, {p} walked past the {shop} and into the library. There, {p} found a book about {t1}."
    extra = rng.sample([t for t in TOPICS if t != t1], 3)
    return passage, f"What was the book that {p} found about?", [t1, *extra]


CLOZE_KINDS = [
    _cloze_location,
    _cloze_color,
    _cloze_pet,
    _cloze_job,
    _cloze_city,
    _cloze_count,
    _cloze_day,
    _cloze_food,
    _cloze_instrument,
    _cloze_book,
]


def build_cloze(n_test: int = 180, n_train: int = 10) -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED + 3)
    rows, seen = [], set()
    i = 0
    while len(rows) < n_test + n_train:
        kind = CLOZE_KINDS[i % len(CLOZE_KINDS)]
        passage, question, ordered = kind(rng)  # ordered[0] is the answer
        if (passage, question) in seen:
            continue
        seen.add((passage, question))
        i += 1
        choices = list(ordered)
        rng.shuffle(choices)
        rows.append(
            {
                "kind": kind.__name__.removeprefix("_cloze_"),
                "passage": passage,
                "question": question,
                "choices": choices,
                "label": choices.index(ordered[0]),
            }
        )
    train, test = rows[:n_train], rows[n_train:]
    rng.shuffle(test)
    return _ids("cloze-train", train), _ids("cloze-test", test)


TASKS = {"slm_facts": build_facts, "slm_arith": build_arith, "slm_cloze": build_cloze}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"where the JSONL files go (default {DATA_DIR})")
    out = parser.parse_args(argv).out
    for name, build in TASKS.items():
        train, test = build()
        _write_jsonl(data_path(name, "train", out), train)
        _write_jsonl(data_path(name, "test", out), test)
        print(f"{name}: {len(test)} test, {len(train)} train -> {data_path(name, '{test,train}', out)}")


if __name__ == "__main__":
    main()
