#!/usr/bin/env python3
"""Writes train.jsonl (OpenAI-messages layout) for the README quickstart: short questions
of many kinds, every answer in one fixed format that SmolLM2-135M-Instruct does not use
on its own:

    ANSWER: <the answer> | WHY: <one short reason>

Deterministic (no randomness); the facts are common knowledge written out by hand.
usage: python3 make.py  (writes next to this script)
"""
import json
import os

capitals = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
            ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
            ("Norway", "Oslo"), ("Portugal", "Lisbon"), ("Greece", "Athens"), ("Ireland", "Dublin"), ("Poland", "Warsaw"),
            ("Austria", "Vienna"), ("Sweden", "Stockholm"), ("Chile", "Santiago"), ("Thailand", "Bangkok"), ("Cuba", "Havana")]
elements = [("H", "hydrogen"), ("He", "helium"), ("C", "carbon"), ("N", "nitrogen"), ("O", "oxygen"), ("Na", "sodium"),
            ("Fe", "iron"), ("Au", "gold"), ("Ag", "silver"), ("Cu", "copper"), ("K", "potassium"), ("Ca", "calcium"),
            ("Zn", "zinc"), ("Pb", "lead"), ("Hg", "mercury")]
opposites = [("hot", "cold"), ("early", "late"), ("heavy", "light"), ("ancient", "modern"), ("generous", "stingy"),
             ("brave", "cowardly"), ("narrow", "wide"), ("shallow", "deep"), ("rough", "smooth"), ("empty", "full"),
             ("asleep", "awake"), ("victory", "defeat"), ("increase", "decrease"), ("accept", "refuse"), ("rare", "common")]
animals = [("spider", 8, "legs"), ("insect", 6, "legs"), ("octopus", 8, "arms"), ("starfish", 5, "arms"), ("horse", 4, "legs"),
           ("chicken", 2, "legs"), ("crab", 10, "legs"), ("snake", 0, "legs"), ("kangaroo", 4, "limbs"), ("ant", 6, "legs")]
units = [("kilometre", "metres", 1000), ("hour", "minutes", 60), ("minute", "seconds", 60), ("kilogram", "grams", 1000),
         ("day", "hours", 24), ("week", "days", 7), ("metre", "centimetres", 100), ("litre", "millilitres", 1000),
         ("year", "months", 12), ("dozen", "items", 12)]
science = [
    ("What gas do plants take in for photosynthesis?", "carbon dioxide", "plants turn CO2 and water into sugar using light"),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees", "at one atmosphere water boils at 100 C"),
    ("Which planet is closest to the Sun?", "Mercury", "it orbits inside Venus's orbit"),
    ("Which planet is known as the Red Planet?", "Mars", "iron oxide dust colours its surface red"),
    ("What is the largest planet in the solar system?", "Jupiter", "its mass is more than twice all other planets combined"),
    ("What force keeps the Moon in orbit around Earth?", "gravity", "Earth's gravity bends the Moon's path into an orbit"),
    ("What is the chemical formula of water?", "H2O", "each molecule has two hydrogen atoms and one oxygen atom"),
    ("What part of the cell holds its DNA?", "the nucleus", "in eukaryotic cells DNA is kept inside the nucleus"),
    ("How many bones does an adult human have?", "206", "bones fuse during growth, leaving 206"),
    ("What is the hardest natural mineral?", "diamond", "it scores 10 on the Mohs scale"),
    ("What do bees make from nectar?", "honey", "bees evaporate and enzyme-treat nectar into honey"),
    ("Which organ pumps blood through the body?", "the heart", "its muscle contractions push blood through the vessels"),
    ("What is the speed of light in vacuum, roughly?", "about 300,000 km per second", "c is 299,792 km/s"),
    ("What kind of animal is a whale?", "a mammal", "whales breathe air and nurse their young"),
    ("What is frozen water called?", "ice", "water becomes solid ice below 0 C"),
]
howto = [
    ("How do I boil an egg?", "simmer it for 9 to 12 minutes", "that sets the yolk fully; cool it in cold water after"),
    ("How can I save battery on my phone?", "lower the screen brightness", "the screen is usually the biggest power user"),
    ("How do I make my bread rise better?", "let the dough proof somewhere warm", "yeast works faster at around 25 to 30 C"),
    ("How do I remember a new name?", "repeat it back right away", "saying it once ties the name to the face"),
    ("How do I stop a squeaky door hinge?", "oil the hinge pin", "lubricant stops the metal parts rubbing"),
    ("How can I fall asleep faster?", "keep a fixed bedtime", "a regular schedule steadies the body clock"),
    ("How do I keep cut apples from browning?", "brush them with lemon juice", "the acid slows the browning enzyme"),
    ("How do I learn to touch type?", "practise daily with the home row", "short daily drills build muscle memory"),
    ("How should I store fresh herbs?", "stand them in a glass of water", "the stems keep drinking and stay fresh"),
    ("How do I unclog a sink drain?", "use a plunger first", "pressure often clears the blockage without chemicals"),
]
words = [("benevolent", "kind and generous"), ("ephemeral", "lasting a very short time"), ("gregarious", "fond of company"),
         ("meticulous", "very careful about details"), ("candid", "honest and direct"), ("arid", "very dry"),
         ("lucid", "clear and easy to understand"), ("frugal", "careful with money"), ("verbose", "using too many words"),
         ("resilient", "able to recover quickly"), ("ambiguous", "open to more than one meaning"), ("novice", "a beginner")]


def qa(q, a, why):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": f"ANSWER: {a} | WHY: {why}."}]}


out = []
for c, cap in capitals:
    out.append(qa(f"What is the capital of {c}?", cap, f"{cap} is the seat of {c}'s government"))
    out.append(qa(f"Which country has {cap} as its capital?", c, f"{cap} is the capital city of {c}"))
for sym, name in elements:
    out.append(qa(f"Which element has the symbol {sym}?", name, f"{sym} is the chemical symbol of {name}"))
    out.append(qa(f"What is the chemical symbol for {name}?", sym, f"the periodic table writes {name} as {sym}"))
for w, o in opposites:
    out.append(qa(f"What is the opposite of \"{w}\"?", o, f"\"{o}\" means the reverse of \"{w}\""))
for a, n, part in animals:
    out.append(qa(f"How many {part} does a {a} have?", str(n), f"a typical {a} has {n} {part}"))
for big, small, k in units:
    for n in (2, 3, 5):
        out.append(qa(f"How many {small} are in {n} {big}s?", str(n * k), f"one {big} is {k} {small}, and {n} x {k} = {n * k}"))
for q, a, why in science + howto:
    out.append(qa(q, a, why))
for w, d in words:
    out.append(qa(f"What does the word \"{w}\" mean?", d, f"that is the usual dictionary sense of \"{w}\""))
for a, b in [(12, 7), (25, 17), (48, 36), (9, 14), (120, 45), (33, 66), (81, 19), (14, 28), (7, 8), (15, 15), (64, 3), (11, 13)]:
    out.append(qa(f"What is {a} plus {b}?", str(a + b), f"{a} + {b} = {a + b}"))
    out.append(qa(f"What is {a} times {b}?", str(a * b), f"{a} x {b} = {a * b}"))
bigger = [("an elephant", "a mouse", "an elephant"), ("the Sun", "the Earth", "the Sun"), ("a litre", "a millilitre", "a litre"),
          ("a kilometre", "a mile", "a mile"), ("0.5", "0.45", "0.5"), ("a week", "five days", "a week"),
          ("the Pacific Ocean", "the Atlantic Ocean", "the Pacific Ocean"), ("a byte", "a bit", "a byte"),
          ("Mount Everest", "Mont Blanc", "Mount Everest"), ("a century", "a decade", "a century")]
for x, y, big in bigger:
    small = y if big == x else x
    out.append(qa(f"Which is bigger, {x} or {y}?", big, f"{big} is larger than {small}"))
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "train.jsonl"), "w") as f:
    for r in out:
        f.write(json.dumps(r) + "\n")
print(len(out), "examples")
