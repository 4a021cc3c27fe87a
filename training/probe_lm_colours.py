"""Probe: does the embedded model's language model, before any training of ours, know the usual
colours of things?

    python training/probe_lm_colours.py

SmolLM2-135M-Instruct as the embedded model starts from it (the packaged GGUF, dequantised). For
each cue, every colour word of the scenes is scored as the sentence "<Cue> is usually <colour>."
(summed log-probability under the language model) and the best one is its answer, raw and
calibrated (minus the score of "It is usually <colour>.", so that a colour word the model prefers
everywhere does not win by its prior); chance is 1 in 10. Reports the share right for the test split's cues (``COLOUR_CUES``), the training-only cues
(``TRAINING_CUES``) and the cues of ``probe_colour_knowledge.py`` that the project never uses, and
prints a few free answers to "What colour is X?". If the language model does not know a cue's
colour, the trained model can only have learnt it from our scenes, and a cue it never saw is a
guess.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from lisa_ros.data.scenes import COLOUR_CUES, COLOURS, TRAINING_CUES, cue_slots
from lisa_ros.model.embedded import _language_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_colour_knowledge import NEW_CUES  # noqa: E402  (the sibling probe's never-used cues)

FREE_ANSWERS = ("a ripe banana", "milk", "a frog", "Cookie Monster", "a hazelnut")


def main() -> None:
    model, tokenizer = _language_model()
    model.eval()

    @torch.no_grad()
    def sentence_log_prob(text: str) -> float:
        ids = tokenizer(text, return_tensors="pt").input_ids
        log_probs = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)
        return float(log_probs.gather(1, ids[0, 1:, None]).sum())

    # Calibrated: minus the same sentence without the cue, so a colour word the model likes
    # everywhere ("white") does not win by its prior (contextual calibration, PMI scoring).
    prior = {colour: sentence_log_prob(f"It is usually {colour}.") for colour in COLOURS}

    def colour_of(cue: str, calibrated: bool) -> str:
        return max(COLOURS, key=lambda colour: sentence_log_prob(f"{cue_slots(cue)['Cue']} is usually {colour}.")
                   - (prior[colour] if calibrated else 0.0))

    for cue in FREE_ANSWERS:
        messages = [{"role": "user", "content": f"What colour is {cue}?"}]
        inputs = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                           return_tensors="pt")
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        answer = tokenizer.decode(output[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
        print(f"What colour is {cue}? -> {answer.strip()!r}")
    tables = {"test cues (COLOUR_CUES)": COLOUR_CUES, "training-only cues (TRAINING_CUES)": TRAINING_CUES,
              "never-used cues (probe_colour_knowledge.NEW_CUES)": {c: (cue,) for c, cue in NEW_CUES.items()}}
    for calibrated in (False, True):
        print("calibrated (minus 'It is usually <colour>.')" if calibrated else "raw sentence scores")
        for name, table in tables.items():
            answers = [(cue, colour, colour_of(cue, calibrated)) for colour, cues in table.items() for cue in cues]
            right = sum(got == colour for _, colour, got in answers)
            wrong = ", ".join(f"{cue} -> {got}" for cue, colour, got in answers if got != colour)
            print(f"  {name}: {right} of {len(answers)} right (chance 1 in {len(COLOURS)}); wrong: {wrong[:300]}")


if __name__ == "__main__":
    main()
