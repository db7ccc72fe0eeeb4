"""OPUS XML (tokenized and raw), mono text, and the safe XML parser."""

from __future__ import annotations

import gzip

import pytest

from corpus.opus import detokenize, parse_opus_xml, parse_text
from corpus.report import Report

TOKENIZED = b"""<?xml version="1.0" encoding="utf-8"?>
<document id="42">
  <s id="1">
    <time id="T1S" value="00:00:01,000" />
    <w id="1.1">I</w><w id="1.2">do</w><w id="1.3">n't</w><w id="1.4">know</w><w id="1.5">,</w>
    <w id="1.6">do</w><w id="1.7">you</w><w id="1.8">?</w>
    <time id="T1E" value="00:00:02,000" />
  </s>
  <s id="2">
    <w id="2.1">-</w><w id="2.2">He</w><w id="2.3">said</w><w id="2.4">"</w><w id="2.5">it</w>
    <w id="2.6">'s</w><w id="2.7">fine</w><w id="2.8">"</w><w id="2.9">(</w><w id="2.10">laughs</w><w id="2.11">)</w>
  </s>
  <s id="3"><w id="3.1">We</w><w id="3.2">'ll</w><w id="3.3">see</w><w id="3.4">...</w></s>
</document>
"""

RAW = b"""<?xml version="1.0" encoding="utf-8"?>
<document id="43">
  <s id="1"><time id="T1S" value="00:00:01,000"/>I don't know, do you?<time id="T1E" value="00:00:02,000"/></s>
  <s id="2">
    Across
    two lines.
  </s>
  <s id="3"></s>
</document>
"""


def test_tokenized_form_is_detokenized_and_time_is_optional():
    doc = parse_opus_xml(TOKENIZED, "en/2001/123/42.xml", Report())
    assert doc.texts() == ["I don't know, do you?", '- He said "it\'s fine" (laughs)', "We'll see..."]
    assert doc.format == "opus"


def test_raw_form():
    assert parse_opus_xml(RAW, "raw.xml", Report()).texts() == ["I don't know, do you?", "Across two lines."]


@pytest.mark.parametrize(
    "tokens, text",
    [
        (["Hello", ",", "world", "!"], "Hello, world!"),
        (["I", "ca", "n't", "."], "I can't."),
        (["You", "'re", "here", "?"], "You're here?"),
        (["It", "costs", "$", "5", "%", "more"], "It costs $5% more"),
        (['"', "Hi", '"', ",", "she", "said"], '"Hi", she said'),
    ],
)
def test_detokenize(tokens, text):
    assert detokenize(tokens) == text


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<document><s id="1">&lol3;</s></document>
"""


@pytest.mark.parametrize(
    "data, message",
    [
        (BOMB, "DTD"),
        (b"<document><s id='1'>unclosed", "ParseError"),
        (b"not xml at all", "ParseError"),
        (b"<document></document>", "no <s>"),
    ],
)
def test_bad_xml_is_reported(data, message):
    report = Report()
    assert parse_opus_xml(data, "bad.xml", report) is None
    assert report.n_problems == 1 and message in report.problems[0][1]


def test_truncated_xml_keeps_the_sentences_before_the_damage():
    report = Report()
    doc = parse_opus_xml(TOKENIZED[: TOKENIZED.index(b'<s id="3">') + 12], "cut.xml", report)
    assert doc.texts() == ["I don't know, do you?", '- He said "it\'s fine" (laughs)']
    assert report.n_problems == 1


def test_mono_text_runs_of_lines_are_documents():
    data = gzip.decompress(gzip.compress("\n".join(f"Line {i}." for i in range(7)).encode()))
    docs = list(parse_text(data + b"\n\n", "en.txt", Report(), lines_per_document=3))
    assert [d.source_id for d in docs] == ["en.txt@0", "en.txt@1", "en.txt@2"]
    assert [len(d.lines) for d in docs] == [3, 3, 1]
    assert docs[1].texts() == ["Line 3.", "Line 4.", "Line 5."] and docs[0].format == "text"
    with pytest.raises(ValueError):
        list(parse_text(b"x", "t.txt", Report(), lines_per_document=1))
