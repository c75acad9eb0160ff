"""The accuracy harness's own arithmetic: scores, the MIDI it renders from, the keys it reads.

The expected values come from the published definitions (MIREX key scoring, ±4 % tempo
tolerance) written out by hand, and from music21's MIDI parser for the files we write.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


eval_accuracy = load("eval_accuracy")
make_eval_set = load("make_eval_set")


@pytest.mark.parametrize(
    ("ref", "est", "expected"),
    [
        (("C", "major"), ("C", "major"), 1.0),
        (("C", "major"), ("G", "major"), 0.5),  # fifth above
        (("C", "major"), ("F", "major"), 0.5),  # fifth below
        (("C", "major"), ("A", "minor"), 0.3),  # relative minor
        (("C", "major"), ("C", "minor"), 0.2),  # parallel minor
        (("C", "major"), ("E", "minor"), 0.0),
        (("C", "major"), ("D", "major"), 0.0),
        (("C", "major"), ("G", "minor"), 0.0),  # a fifth, but the mode differs
        (("A", "minor"), ("C", "major"), 0.3),  # relative major
        (("A", "minor"), ("A", "major"), 0.2),
        (("A", "minor"), ("E", "minor"), 0.5),
        (("A", "minor"), ("D", "minor"), 0.5),
        (("A", "minor"), ("F", "major"), 0.0),
        (("C#", "major"), ("Db", "major"), 1.0),  # Essentia spells flats, earshot sharps
        (("F#", "minor"), ("A", "major"), 0.3),
        (("Bb", "major"), ("G", "minor"), 0.3),
        (("B", "major"), ("Gb", "major"), 0.5),
    ],
)
def test_mirex_key_score_follows_the_mirex_weights(ref, est, expected) -> None:
    assert eval_accuracy.mirex_key_score(*ref, *est) == expected


@pytest.mark.parametrize(
    ("ref", "est", "acc1", "acc2"),
    [
        (120.0, 120.0, True, True),
        (120.0, 124.7, True, True),  # +3.9 %
        (120.0, 115.3, True, True),  # -3.9 %
        (120.0, 125.0, False, False),  # +4.2 %
        (120.0, 60.0, False, True),
        (120.0, 240.0, False, True),
        (60.0, 180.0, False, True),  # the eighth-note pulse of a 6/8 piece
        (90.0, 30.5, False, True),
        (120.0, 180.0, False, False),  # 1.5 times is not an octave error
        (120.0, 80.0, False, False),
    ],
)
def test_tempo_accuracy_tolerates_four_percent_and_octave_errors_only_in_acc2(
    ref, est, acc1, acc2
) -> None:
    assert eval_accuracy.tempo_acc(ref, est, (1.0,)) is acc1
    assert eval_accuracy.tempo_acc(ref, est, eval_accuracy.OCTAVE_FACTORS) is acc2


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("G", (7, "major")),
        ("Am", (9, "minor")),
        ("E Minor", (4, "minor")),
        ("Bb", (10, "major")),
        ("F#m", (6, "minor")),
        ("A Mixolydian", None),  # modal tunes have no major/minor answer: left out
        ("Dmix", None),
        ("A Dorian", None),
        ("", None),
    ],
)
def test_abc_key_field_is_read_as_tonic_and_mode(field, expected) -> None:
    assert make_eval_set._abc_key(field) == expected


def test_written_midi_carries_the_tempo_and_notes_we_asked_for(tmp_path: Path) -> None:
    music21 = pytest.importorskip("music21")
    events: list = [make_eval_set.program_change(0, 40)]
    make_eval_set.note(events, 0, 0.0, 1.0, 60, 90)
    make_eval_set.note(events, 0, 1.0, 0.5, 64, 90)
    make_eval_set.note(events, 0, 1.5, 2.0, 67, 90)
    midi = tmp_path / "t.mid"
    make_eval_set.write_midi(midi, events, 137.0)

    score = music21.converter.parse(midi)
    marks = list(score.flatten().getElementsByClass(music21.tempo.MetronomeMark))
    assert marks and marks[0].number == pytest.approx(137.0, abs=0.1)
    notes = [(float(n.offset), float(n.quarterLength), n.pitch.midi) for n in score.flatten().notes]
    assert notes == [(0.0, 1.0, 60), (1.0, 0.5, 64), (1.5, 2.0, 67)]
    instruments = list(score.flatten().getElementsByClass(music21.instrument.Instrument))
    assert instruments and instruments[0].midiProgram == 40


MAJOR_SCALE = {0, 2, 4, 5, 7, 9, 11}
# Natural minor plus the raised seventh of the harmonic minor's dominant.
MINOR_SCALE = {0, 2, 3, 5, 7, 8, 10, 11}


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_synthesized_progressions_stay_in_their_key_and_start_on_its_tonic_triad(mode) -> None:
    scale = MAJOR_SCALE if mode == "major" else MINOR_SCALE
    tonic_triad = {0, 4, 7} if mode == "major" else {0, 3, 7}
    progressions = (
        make_eval_set.MAJOR_PROGRESSIONS if mode == "major" else make_eval_set.MINOR_PROGRESSIONS
    )
    for progression in progressions:
        chords = [
            {p % 12 for p in make_eval_set.triad(d, make_eval_set.chord_quality(d, mode))}
            for d in progression
        ]
        assert chords[0] == tonic_triad
        assert all(chord <= scale for chord in chords), (progression, chords)
        # The major dominant (with the leading tone) tells a minor key from its relative major.
        assert {7, 11, 2} in chords
