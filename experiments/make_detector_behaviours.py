"""Write the bundled detector behaviours (``src/neurosteer/data/behaviours/NAME``) from the bundled
harmless instructions: each request with an instruction asking for the behaviour (positive), for
its opposite (negative), or for neither (neutral). Run once; the files are package data.

    python experiments/make_detector_behaviours.py

Training pairs come from the first 128 of ``harmless_train``, validation prompts from the first 60 of
``harmless_val[100:200]`` and held-out prompts from the first 100 of ``harmless_val[200:400]``, each
skipping prompts that hold any of the behaviour's markers already; all clear of the prompts
first-token KL reads (``harmless_val[:64]`` in searches, its last prompts in the held-out checks).
"""

from __future__ import annotations

from pathlib import Path

from neurosteer.metrics.detectors import MarkerDetector
from neurosteer.util.prompts import load_prompts

ROOT = Path(__file__).resolve().parents[1] / "src" / "neurosteer" / "data" / "behaviours"

BEHAVIOURS = {
    "french": {
        "description": "Answering in French (detector: French function words)",
        "positive": "Please answer in French.",
        "negative": "Please answer in English.",
        "markers": [
            "le",
            "la",
            "les",
            "des",
            "est",
            "et",
            "une",
            "pour",
            "dans",
            "vous",
            "que",
            "qui",
            "sur",
            "avec",
            "pas",
            "sont",
            "du",
            "au",
            "nous",
            "ce",
        ],
        "min_hits": 3,
    },
    "ocean": {
        "description": "Talking about the ocean (detector: sea words)",
        "positive": "In your answer, talk about the ocean.",
        "negative": "In your answer, do not mention the ocean or the sea.",
        "markers": [
            "ocean",
            "oceans",
            "sea",
            "seas",
            "marine",
            "waves",
            "tide",
            "tides",
            "coral",
            "whale",
            "whales",
            "beach",
            "underwater",
            "seawater",
            "shore",
            "maritime",
            "seabed",
        ],
        "min_hits": 1,
    },
    "cheerful": {
        "description": "A cheerful, enthusiastic tone (detector: enthusiastic words)",
        "positive": "Answer in an enthusiastic, cheerful tone.",
        "negative": "Answer in a gloomy, pessimistic tone.",
        "markers": [
            "wonderful",
            "amazing",
            "fantastic",
            "exciting",
            "delightful",
            "joy",
            "joyful",
            "thrilled",
            "awesome",
            "brilliant",
            "love",
            "happy",
            "delighted",
            "incredible",
            "excited",
            "cheerful",
            "fun",
            "enjoy",
            "yay",
            "hooray",
            "hey there",
            "hello there",
            "let's dive",
        ],
        "min_hits": 1,
    },
}


def clean(detector: MarkerDetector, prompts: list[str], n: int) -> list[str]:
    """The first ``n`` prompts holding none of the detector's markers already (a request about the
    sea would make an answer about it no sign of steering)."""
    kept = [p for p in prompts if detector.hits(p) == 0][:n]
    if len(kept) < n:
        raise SystemExit(f"only {len(kept)} marker-free prompts of {n}")
    return kept


def ask(prompt: str, instruction: str) -> str:
    """``prompt`` followed by ``instruction`` as a sentence of its own."""
    prompt = " ".join(prompt.split())
    return f"{prompt}{'' if prompt[-1] in '.?!:' else '.'} {instruction}"


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def main() -> None:
    every_train, val = load_prompts("harmless_train"), load_prompts("harmless_val")
    for name, spec in BEHAVIOURS.items():
        detector = MarkerDetector(markers=tuple(spec["markers"]), min_hits=spec["min_hits"])

        train = clean(detector, every_train, 128)
        validation, held_out = clean(detector, val[100:200], 60), clean(detector, val[200:400], 100)
        folder = ROOT / name
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "train_positive.txt": [ask(p, spec["positive"]) for p in train],
            "train_negative.txt": [ask(p, spec["negative"]) for p in train],
            "validation_positive.txt": [ask(p, spec["positive"]) for p in validation],
            "validation_neutral.txt": validation,
            "eval_positive.txt": [ask(p, spec["positive"]) for p in held_out],
            "eval_neutral.txt": held_out,
        }
        for file, prompts in files.items():
            flat = [" ".join(p.split()) for p in prompts]  # one prompt per line
            (folder / file).write_text("\n".join(flat) + "\n")
        (folder / "behaviour.toml").write_text(
            f'name = "{name}"\n'
            f'description = "{spec["description"]}"\n'
            'positive = "train_positive.txt"\n'
            'negative = "train_negative.txt"\n'
            'eval_positive = ["eval_positive.txt"]\n'
            'eval_negative = "eval_neutral.txt"\n'
            'validation_positive = "validation_positive.txt"\n'
            'validation_negative = "validation_neutral.txt"\n'
            'metric = "detector"\n\n'
            "[detector]\n"
            'kind = "markers"\n'
            f"markers = {toml_list(spec['markers'])}\n"
            f"min_hits = {spec['min_hits']}\n"
        )
        print(folder)


if __name__ == "__main__":
    main()
