"""Base-model identification over the whole vocabulary, through the inspection engine: per family, how many
LoRAs are named right, abstained on ("unknown"), or named wrong, and what card PRs would write.

The LoRAs are built from the signature generator's tables (the real diffusers/transformers classes on the
meta device, with each checkpoint's config), as PEFT/diffusers name them: every layer of the denoiser or
model, and the blocks only (the usual LoRA). Declarations: none, one inside the class, one outside.

    python benchmarks/identification_figures.py
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_identification import DEFAULT_FAR_REPO, FAR_FAMILY_REPO, PREFIX, card_pr_base, header_of, inspect  # noqa: E402
from test_signatures import IN_BLOCK, cut_llm_widths, in_blocks, model_widths  # noqa: E402

from tests.signatures import generate  # noqa: E402


def cases():
    for entry in generate.DIFFUSION_ENTRIES:
        if entry.variant_of:
            continue
        prefix = PREFIX.get(entry.family, "transformer.")
        table = entry.components["denoiser"]
        yield entry, "all layers", header_of(model_widths(table), prefix)
        yield entry, "blocks only", header_of(in_blocks(table), prefix)
    for entry in generate.LLM_ENTRIES:
        widths = {n: w for n, w in cut_llm_widths(entry.components["model"]).items() if IN_BLOCK.search(n)}
        yield entry, "decoder layers", header_of(widths, "base_model.model.")


def main() -> None:
    outcome: dict[str, Counter] = {}
    mismatches_inside = wrong_pr = not_raised_outside = 0
    seconds, inspections = 0.0, 0
    for entry, _shape, header in cases():
        started = time.perf_counter()
        found = inspect(header)
        seconds += time.perf_counter() - started
        inspections += 1
        base = found.base_model
        tally = outcome.setdefault(entry.family, Counter())
        if base.family is None:
            tally["abstained"] += 1
        elif base.family == entry.family and set(entry.repo_ids) <= set(base.candidates):
            tally["right"] += 1
        else:
            tally["wrong"] += 1
        written = card_pr_base(found)
        if written is not None and written not in entry.repo_ids:
            wrong_pr += 1
        inside = inspect(header, card={"base_model": entry.repo_ids[-1]})
        mismatches_inside += "base-model-mismatch" in inside.codes()
        far = FAR_FAMILY_REPO.get(entry.family, DEFAULT_FAR_REPO)
        outside = inspect(header, card={"base_model": far})
        not_raised_outside += base.family is not None and "base-model-mismatch" not in outside.codes()
    print(f"{'family':<16}{'cases':>7}{'right':>7}{'abstained':>11}{'wrong':>7}")
    totals = Counter()
    for family, tally in outcome.items():
        cases_ = sum(tally.values())
        totals.update(tally)
        print(f"{family:<16}{cases_:>7}{tally['right']:>7}{tally['abstained']:>11}{tally['wrong']:>7}")
    print(
        f"{'all':<16}{sum(totals.values()):>7}{totals['right']:>7}{totals['abstained']:>11}{totals['wrong']:>7}"
    )
    print(f"base-model-mismatch on a declaration inside the class: {mismatches_inside}")
    print(f"named families whose outside declaration raised no mismatch: {not_raised_outside}")
    print(f"card PRs writing a base_model outside the entry's repos: {wrong_pr}")
    print(f"engine time per inspection (header already parsed): {seconds / inspections * 1000:.1f} ms")


if __name__ == "__main__":
    main()
