"""Dialogue text: `Speaker: text` scripts with scene breaks, blank-line dialogue blocks, and telling them apart."""

from __future__ import annotations

from corpus.dialogue import BLOCKS, MONO, SCRIPT, detokenize, parse_blocks, parse_script, text_shape
from corpus.dump import read_path
from corpus.report import Report
from reranker.windows import split_of

SCRIPT_TEXT = """Ann: Hi there! How was the trip?
Bob: Long. The train broke down twice.
Scene: (Bob sits down, exhausted.)
Ann: (laughing) Twice? You poor thing.
#ALL#: Welcome back!

Cid: Did anyone see my keys?
Ann: They're on the table.
(A door slams.)
"""

BLOCKS_TEXT = """Hey man , you wanna buy some weed ?
Some what ?
No , I ' m ok , really . I don ' t need it .

Let ' s see . . . you ' re a Capricorn .
She said " hello " to me ( twice ) .
"""

PROSE = """It is a truth universally acknowledged, that a single man in possession
of a good fortune, must be in want of a wife.

However little known the feelings or views of such a man may be on his
first entering a neighbourhood, this truth is so well fixed in the minds
of the surrounding families, that he is considered the rightful property
of some one or other of their daughters.

"My dear Mr. Bennet," said his lady to him one day, "have you heard that
Netherfield Park is let at last?"
"""

MONO_TEXT = "Where are you going?\nHome.\nWait for me!\nI can't.\n"


def test_shapes_are_told_apart():
    assert text_shape(SCRIPT_TEXT) == SCRIPT
    assert text_shape(BLOCKS_TEXT) == BLOCKS
    assert text_shape(PROSE) == MONO  # wrapped paragraphs are not dialogue
    assert text_shape(MONO_TEXT) == MONO  # one sentence a line, no blank lines: OPUS mono text
    assert text_shape("") == MONO


def test_a_script_gives_one_document_per_scene_without_stage_directions():
    report = Report()
    docs = list(parse_script(SCRIPT_TEXT, "show/s01e01.txt", report))
    assert [d.source_id for d in docs] == ["show/s01e01.txt#scene-0", "show/s01e01.txt#scene-1"]
    assert [(line.speaker, line.text) for line in docs[0].lines] == [
        ("Ann", "Hi there! How was the trip?"), ("Bob", "Long. The train broke down twice."),
        ("Ann", "(laughing) Twice? You poor thing."), ("All", "Welcome back!")]
    assert [line.text for line in docs[1].lines] == ["Did anyone see my keys?", "They're on the table."]
    assert report.counts["stage_directions"] == 1 and report.counts["script_lines_without_speaker"] == 1
    assert len({split_of(d.source_id) for d in docs}) == 1  # the scenes of an episode share its split


def test_dialogue_blocks_are_detokenized_one_document_each():
    report = Report()
    docs = list(parse_blocks(BLOCKS_TEXT, "dd/train.txt", report))
    assert [d.source_id for d in docs] == ["dd/train.txt@0", "dd/train.txt@1"]
    assert docs[0].texts() == ["Hey man, you wanna buy some weed?", "Some what?", "No, I'm ok, really. I don't need it."]
    assert docs[1].texts() == ["Let's see... you're a Capricorn.", 'She said "hello" to me (twice).']
    assert report.counts["detokenized_files"] == 1


def test_detokenize_leaves_ordinary_text_alone():
    for text in ["Hi, how are you?", "It's 5 o'clock.", 'He said "no".', "Wait... what?"]:
        assert detokenize(text) == text


def test_the_dump_reader_reads_both_shapes_from_a_folder(tmp_path):
    (tmp_path / "friends").mkdir()
    (tmp_path / "friends" / "s01e01.txt").write_text(SCRIPT_TEXT)
    (tmp_path / "dd.txt").write_text(BLOCKS_TEXT)
    (tmp_path / "mono.txt").write_text(MONO_TEXT)
    report = Report()
    docs = list(read_path(tmp_path, report))
    formats = sorted({d.format for d in docs})
    assert formats == ["dialogue", "script", "text"]
    assert sum(d.format == "script" for d in docs) == 2 and sum(d.format == "dialogue" for d in docs) == 2
    assert report.counts["script_files"] == 1 and report.counts["dialogue_files"] == 1


def test_a_script_without_speakers_is_reported_not_raised():
    report = Report()
    assert list(parse_script("\n\n(silence)\n", "empty.txt", report)) == []
    assert any("no `Speaker: text` lines" in message for _, message in report.problems)


def test_a_member_is_parsed_by_the_shape_its_stream_was_cut_by():
    from corpus.dialogue import MONO
    from corpus.dump import Member, parse_member

    as_cut = list(parse_member(Member("dd.txt", BLOCKS_TEXT.encode(), shape=MONO), Report()))
    assert {d.format for d in as_cut} == {"text"}  # read in mono pieces, so parsed as mono text
    told = list(parse_member(Member("dd.txt", BLOCKS_TEXT.encode()), Report()))
    assert {d.format for d in told} == {"dialogue"}  # no shape given: told from its first lines
