"""Each cleaning rule on hand-checked examples, and the report counting what each rule removed."""

from __future__ import annotations

import pytest

from corpus.clean import (
    CleanConfig,
    Utterance,
    clean_document,
    clean_texts,
    collapse_whitespace,
    drop_empty_and_repeats,
    is_ad_or_credit,
    join_split_sentences,
    remove_ads_and_credits,
    remove_sound_cues,
    remove_speaker_label,
    restore_apostrophes,
    split_speakers,
    strip_chat_markup,
    strip_markup,
    to_sentence_case,
)
from corpus.documents import Document, Line
from corpus.report import Report


@pytest.mark.parametrize(
    "raw, clean, tags, entities",
    [
        ("<i>Hello</i> there", "Hello there", 2, 0),
        ('<font color="#ffff00">Yellow</font>', "Yellow", 2, 0),
        ('<span style="x">a</span> <b>b</b> <u>c</u>', "a b c", 6, 0),
        ("{\\an8}Top line", "Top line", 1, 0),
        ("{\\i1}{\\c&H00FF00&}green{\\i0}", "green", 3, 0),
        ("Tom &amp; Jerry &gt;&gt; &quot;hi&quot; &#39;x&#39;", "Tom & Jerry >> \"hi\" 'x'", 0, 7),
        ("&lt;i&gt;escaped tags&lt;/i&gt;", "escaped tags", 2, 4),
        ("one\\Ntwo", "one\ntwo", 0, 0),
        ("I <3 you and 2 < 3", "I <3 you and 2 < 3", 0, 0),
    ],
)
def test_strip_markup(raw, clean, tags, entities):
    report = Report()
    assert strip_markup(raw, report) == clean
    assert report.counts["markup_tags"] == tags and report.counts["html_entities"] == entities


@pytest.mark.parametrize(
    "raw, clean, n",
    [
        ("[door slams] Who's there?", " Who's there?", 1),
        ("(wind whistling)", "", 1),
        ("( man singing in Spanish,\necho )", "", 1),
        ("♪ la la la ♪ Hi", " Hi", 1),
        ("♪ lyrics with no end", "", 1),
        ("*", "", 1),
        ("*soft music* Hello", " Hello", 1),
        ("No!\n( screaming )", "No!\n", 1),
        ("Plain speech, nothing to do.", "Plain speech, nothing to do.", 0),
    ],
)
def test_remove_sound_cues(raw, clean, n):
    report = Report()
    assert remove_sound_cues(raw, report) == clean
    assert report.counts["sound_cues"] == n


@pytest.mark.parametrize(
    "raw, text, speaker",
    [
        ("MAN: Get down!", "Get down!", "MAN"),
        ("DR. HOUSE: Everybody lies.", "Everybody lies.", "DR. HOUSE"),
        ("MAN 2 : Over here.", "Over here.", "MAN 2"),
        ("Note: this is speech.", "Note: this is speech.", None),
        ("At 10:30 we leave.", "At 10:30 we leave.", None),
    ],
)
def test_remove_speaker_label(raw, text, speaker):
    report = Report()
    assert remove_speaker_label(raw, report) == (text, speaker)
    assert report.counts["speaker_labels"] == (speaker is not None)


@pytest.mark.parametrize(
    "line",
    [
        "api.OpenSubtitles.org is deprecated, please implement REST API from OpenSubtitles.com",
        "Advertise your product or brand here",
        "contact www.OpenSubtitles.org today",
        "osdb.link/ext",
        "Subtitles by DramaFever",
        "Subtitles: @marlonrock1986 (^^V^^)",
        "Sync by n17t01",
        "~ Resync by AdyMcAwsum ~",
        "Synced and corrected by VitoSilans",
        "Captioned by Media Access Group at WGBH",
        "Downloaded from YIFY",
        "www.addic7ed.com",
        "Support us and become VIP member to remove all ads",
    ],
)
def test_ads_and_credits_are_recognised(line):
    assert is_ad_or_credit(line)


@pytest.mark.parametrize(
    "line",
    [
        "Lip-sync for your life!",
        "Their lip-syncing was caught by the judges.",
        "Subtle, isn't it?",
        "We met by the sea.",
    ],
)
def test_speech_is_not_taken_for_an_ad(line):
    assert not is_ad_or_credit(line)


def test_ads_are_dropped_line_by_line():
    report = Report()
    assert remove_ads_and_credits("Hello.\nSync by someone\nBye.", report) == "Hello.\nBye."
    assert report.counts["ads_credits"] == 1


def test_split_two_speaker_cues():
    report = Report()
    utts = split_speakers("- Hi.\n- Hello.", report)
    assert [(u.text, u.starts_turn) for u in utts] == [("Hi.", True), ("Hello.", True)]
    assert report.counts["speaker_splits"] == 1
    utts = split_speakers("- Is he over 18? - Empowering!", Report())
    assert [u.text for u in utts] == ["Is he over 18?", "Empowering!"]
    utts = split_speakers(">> Hold on,\nhold on.\n>> No.", Report())
    assert [u.text for u in utts] == ["Hold on, hold on.", "No."]
    utts = split_speakers("One speaker\nover two lines", Report())
    assert [(u.text, u.starts_turn) for u in utts] == [("One speaker over two lines", False)]
    # A hyphen inside a sentence is not a turn.
    assert [u.text for u in split_speakers("- Well - I think so.", Report())] == ["Well - I think so."]


def test_join_split_sentences():
    report = Report()
    utts = [
        Utterance("Sharon, she has"),
        Utterance("one good character,"),
        Utterance("so she might as well use it."),
    ]
    assert [u.text for u in join_split_sentences(utts, report)] == [
        "Sharon, she has one good character, so she might as well use it."
    ]
    assert report.counts["joined_sentences"] == 2
    utts = [Utterance("I was going..."), Utterance("...to the store.")]
    assert [u.text for u in join_split_sentences(utts, Report())] == ["I was going to the store."]
    # Final punctuation, a capital, a new turn or another speaker each keep lines apart.
    for a, b in [
        (Utterance("Done."), Utterance("and then")),
        (Utterance("Wait"), Utterance("Nobody moves")),
        (Utterance("Wait"), Utterance("no", starts_turn=True)),
        (Utterance("Wait", speaker="A"), Utterance("no", speaker="B")),
    ]:
        assert len(join_split_sentences([a, b], Report())) == 2


def test_sentence_case():
    report = Report()
    assert (
        to_sentence_case("WHERE ARE YOU? I'M HERE, I THINK.", report) == "Where are you? I'm here, I think."
    )
    assert to_sentence_case("Mixed Case stays", report) == "Mixed Case stays"
    assert to_sentence_case("OK", report) == "Ok"
    assert report.counts["sentence_case"] == 2


def test_whitespace_empty_and_repeats():
    assert collapse_whitespace("  a \t b\n c  ") == "a b c"
    report = Report()
    utts = [Utterance(t) for t in ["Hi.", "hi.", "- ...", "", "Hi.", "Bye."]]
    # Once the empty lines are gone the second "Hi." follows the first and is a repeat too.
    assert [u.text for u in drop_empty_and_repeats(utts, report)] == ["Hi.", "Bye."]
    assert report.counts["repeats"] == 2 and report.counts["empty_lines"] == 2
    assert [u.text for u in drop_empty_and_repeats([Utterance("a"), Utterance("a")], Report(), False)] == [
        "a",
        "a",
    ]


def test_chat_markup():
    report = Report()
    text = strip_chat_markup("**hey** <@123456> look <:pog:987> https://x.io/a `code` ||spoiler||", report)
    assert collapse_whitespace(text) == "hey look :pog: code spoiler"
    assert report.counts["chat_markup"] == 9
    kept = strip_chat_markup("@sam see https://x.io", Report(), mentions=False, links=False)
    assert kept == "@sam see https://x.io"
    assert collapse_whitespace(strip_chat_markup("mail a@b.com or @sam", Report())) == "mail a@b.com or"


def test_clean_texts_end_to_end_on_cues():
    cues = [
        "<i>[door slams]</i>",
        "- MAN: Who's there?\n- ( whispering ) Me.",
        "Sharon, she has\none good character,",
        "so she might as well use it.",
        "so she might as well use it.",
        "Subtitles by Someone",
        "♪ la la ♪",
    ]
    report = Report()
    assert clean_texts(cues, CleanConfig(), report) == [
        "Who's there?",
        "Me.",
        "Sharon, she has one good character, so she might as well use it.",
    ]
    assert report.counts["sound_cues"] == 3 and report.counts["ads_credits"] == 1
    assert report.counts["speaker_labels"] == 1 and report.counts["joined_sentences"] == 1
    assert report.counts["repeats"] == 1


def test_speaker_label_kept_only_when_wanted():
    doc = Document("d", [Line("JOHN: Hello."), Line("MARY: Hi.")], "srt")
    kept = clean_document(doc, CleanConfig(keep_speaker=True), Report())
    assert [(line.speaker, line.text) for line in kept.lines] == [("JOHN", "Hello."), ("MARY", "Hi.")]
    dropped = clean_document(doc, CleanConfig(keep_speaker=False), Report())
    assert [(line.speaker, line.text) for line in dropped.lines] == [(None, "Hello."), (None, "Hi.")]


def test_chat_documents_keep_their_messages_and_metadata():
    doc = Document(
        "c",
        [
            Line("hello  **there**", "ann", 3.0, reactions=2, message_id="1"),
            Line("new line", "bob", reply_to="1"),
        ],
        "discord",
    )
    out = clean_document(doc, CleanConfig(sentence_case=True), Report())
    assert out.lines[0] == Line("hello there", "ann", 3.0, reactions=2, message_id="1")
    assert out.lines[1] == Line("new line", "bob", reply_to="1")  # lower-case start is not joined in chat


def test_a_contraction_typed_without_its_apostrophe_gets_it_back():
    report = Report()
    assert restore_apostrophes("thats cool, im in. Dont go, DONT GO", report) == "that's cool, I'm in. Don't go, DON'T GO"
    assert restore_apostrophes("I cant and wont, whats up? youre right, they havent", report) == (
        "I can't and won't, what's up? you're right, they haven't")
    assert report.counts["apostrophes_restored"] == 2  # lines changed, not words
    # words of their own stay ("its", "well", "were", "ill", "lets", "hes"), as do words that hold one, and "IM"
    for text in ("its fine, well were out", "ill lets hes shes id", "idontknow imagine", "IM me", "don't I'm"):
        assert restore_apostrophes(text, report) == text
    assert report.counts["apostrophes_restored"] == 2


def test_chat_documents_get_their_apostrophes_back_when_asked_and_subtitles_never():
    chat = Document("c", [Line("thats so cool"), Line("im in")], "chitchat")
    assert clean_document(chat, CleanConfig(apostrophes=True), Report()).texts() == ["that's so cool", "I'm in"]
    assert clean_document(chat, CleanConfig(), Report()).texts() == ["thats so cool", "im in"]  # off by default
    subtitles = Document("s", [Line("Thats the dont."), Line("Im in.")], "srt")
    assert clean_document(subtitles, CleanConfig(apostrophes=True), Report()).texts() == ["Thats the dont.", "Im in."]


def test_a_document_with_nothing_left_is_none():
    report = Report()
    assert clean_document(Document("d", [Line("(sighs)"), Line("*")], "srt"), CleanConfig(), report) is None
    assert report.counts["empty_documents"] == 1
