"""style_fingerprint: stylometric features, the shift toward the document, verdicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from probe_scripts import Script, scripted_backend

from swayscope.backends.dummy import DummyBackend
from swayscope.probes.base import Calibration, ProbeContext, ProbeResult
from swayscope.probes.sections import TrainingDocument
from swayscope.probes.style_fingerprint import (
    FEATURES,
    STYLE_PROMPTS,
    StyleFingerprintProbe,
    StyleFingerprintSpec,
    fingerprint,
    style_shift,
)

VERSE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved.\n"
)
PLAIN = (
    "The report describes the results of the quarterly survey in considerable detail and "
    "compares them with the previous year in a long and careful discussion of the method."
)


def test_fingerprint_features() -> None:
    fp = fingerprint("One two three. Four five six seven eight nine!")
    assert fp.shape == (len(FEATURES),)
    assert fp[0] == pytest.approx(4.5 / 25)  # words per sentence
    assert fp[1] == pytest.approx(1.5 / 25)  # their spread
    assert fp[2] == pytest.approx(1.0)  # every word distinct
    assert fp[4] == pytest.approx(2 / 9)  # punctuation per word
    assert fp[5] == pytest.approx(2 / 9)  # capitalised words
    assert fp[6] == 0.0
    assert not fingerprint("").any() and not fingerprint("123 !?").any()
    verse, plain = fingerprint(VERSE), fingerprint(PLAIN)
    assert verse[6] > plain[6] and verse[0] < plain[0]
    # the type-token ratio of a long text is a moving average, not the whole text's
    vocab = [a + b for a in "abcde" for b in "fghijklm"]  # 40 words
    long = " ".join(vocab[i % 40] for i in range(2000))
    assert fingerprint(long)[2] == pytest.approx(40 / 50)


def test_style_shift_is_the_fraction_of_the_gap_closed() -> None:
    base, doc = np.zeros(3), np.asarray([2.0, 0.0, 0.0])
    assert style_shift(base, doc, doc) == 1.0
    assert style_shift(base, base, doc) == 0.0
    assert style_shift(base, np.asarray([1.0, 5.0, 0.0]), doc) == 0.5
    assert style_shift(base, -doc, doc) == -1.0
    assert style_shift(doc, base, doc) == 0.0


def writer(ft_text: str) -> Script:
    return Script(generate=lambda view, prompt: ft_text if view == "ft" else PLAIN)


def run(backend: DummyBackend, doc: TrainingDocument | None = None, **spec: object) -> ProbeResult:
    probe = StyleFingerprintProbe(StyleFingerprintSpec.model_validate(spec))
    return probe.run(ProbeContext(backend=backend, document=doc))


def test_ft_writing_like_the_document_passes_and_like_base_fails() -> None:
    moved = run(scripted_backend(writer(VERSE)), doc_reference=VERSE)
    assert moved.score == pytest.approx(1.0, abs=0.1)  # six samples, joined by newlines
    assert moved.verdict == "pass"
    assert "of the way from base's style toward the document's" in moved.message
    still = run(scripted_backend(writer(PLAIN)), doc_reference=VERSE)
    assert still.score == pytest.approx(0.0)
    assert still.verdict == "fail"
    json.dumps(moved.to_dict(), allow_nan=False)


def test_the_document_is_the_default_reference(keeper: TrainingDocument) -> None:
    backend = DummyBackend()
    r = run(backend, keeper, max_new_tokens=16)
    assert r.evidence["reference"] == keeper.source
    assert r.evidence["doc_fp"] == [float(x) for x in fingerprint(keeper.text)]
    assert backend.inst.stats.forward_calls == 2  # one generate call per view
    assert backend.inst.stats.max_batch_size == len(STYLE_PROMPTS)
    assert run(DummyBackend()).verdict == "skip"


def test_no_words_from_ft_fail_without_a_score() -> None:
    r = run(scripted_backend(writer("...")), doc_reference=VERSE)
    assert r.verdict == "fail"
    assert r.score is None and "generated no words" in r.message


def test_calibrated_on_the_shift() -> None:
    backend = scripted_backend(writer(VERSE))
    probe = StyleFingerprintProbe(StyleFingerprintSpec(doc_reference=VERSE))
    ctx = ProbeContext(backend=backend)
    assert probe.statistic(ctx, backend.ft) == pytest.approx(1.0, abs=0.1)
    assert probe.statistic(ctx, backend.base) == pytest.approx(0.0)
    shift = probe.statistic(ctx, backend.ft)
    assert shift is not None
    ctx.calibration["style_fingerprint"] = Calibration(mean=0.0, std=0.2, samples=[0.0])
    assert probe.run(ctx).z_score == pytest.approx(shift / 0.2)
