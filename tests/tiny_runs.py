"""The overrides every small en-fr training test starts from: a local model, a corpus file, one pair."""

from __future__ import annotations

from pathlib import Path


def en_fr_overrides(
    model: Path, corpus: Path, output_dir: Path, *, validation_pairs: int, max_length: int
) -> list[str]:
    """``model`` trained on the en-fr pairs of ``corpus``, ``validation_pairs`` of them held out, texts cut
    to ``max_length`` tokens for student and teacher alike, the run folders under ``output_dir``."""
    return [
        f"model.name={model}",
        f"data.corpus={corpus}",
        "data.languages=[en,fr]",
        "data.pair_set=en-fr",
        f"data.validation_pairs={validation_pairs}",
        f"model.max_length={max_length}",
        f"teacher.max_length={max_length}",
        f"tracking.output_dir={output_dir}",
    ]
