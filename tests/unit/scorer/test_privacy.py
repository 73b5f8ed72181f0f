"""The built-in detectors find personal data and leave ordinary numbers alone; patterns run on RE2; redaction."""

from __future__ import annotations

from typing import get_args

import pytest

from moai.errors import MixError
from moai.mix_instructions.load import parse_spec
from moai.mix_instructions.schema import SensitiveRule
from moai.scorer.privacy import DETECTORS, find, redact, sensitive_in, stored_answer, stored_query

DEFAULT = SensitiveRule()


def only(name: str) -> SensitiveRule:
    return SensitiveRule(detectors=(name,))  # type: ignore[arg-type]


def found(text: str, rule: SensitiveRule = DEFAULT) -> list[tuple[str, str]]:
    return [(f.label, text[f.start : f.end]) for f in find(text, rule)]


FOUND = {
    "ssn": [
        ("My SSN is 123-45-6789, which form?", "123-45-6789"),
        ("ssn 234 56 7890", "234 56 7890"),
        ("Social Security number: 234567890.", "234567890"),
        ("(SSN: 899-01-0001)", "899-01-0001"),
    ],
    "payment_card": [
        ("card 4111 1111 1111 1111 expires 2026", "4111 1111 1111 1111"),
        ("pay with 4111-1111-1111-1111", "4111-1111-1111-1111"),
        ("4111111111111111", "4111111111111111"),
        ("amex 3782 822463 10005", "3782 822463 10005"),
        ("order 12 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ],
    "email": [
        ("write to jane.doe+work@example.co.uk today", "jane.doe+work@example.co.uk"),
        ("über@müller.de", "über@müller.de"),
    ],
    "phone": [
        ("call +1 (555) 234-5678 now", "+1 (555) 234-5678"),
        ("call 555-123-4567", "555-123-4567"),
        ("(415) 555-0100", "(415) 555-0100"),
        ("1-800-555-1234", "1-800-555-1234"),
        ("+44 20 7946 0958", "+44 20 7946 0958"),
        ("0044 20 7946 0958", "0044 20 7946 0958"),
        ("ring 020 7946 0958 12 times", "020 7946 0958"),
        ("of 20 633-615-2019 students", "633-615-2019"),
        ("01 23 45 67 89", "01 23 45 67 89"),
        ("090-1234-5678", "090-1234-5678"),
        ("my phone: 5551234567", "5551234567"),
        ("+33612345678", "+33612345678"),
    ],
    "iban": [
        ("DE89 3704 0044 0532 0130 00 is mine", "DE89 3704 0044 0532 0130 00"),
        ("IBAN GB82WEST12345698765432.", "GB82WEST12345698765432"),
        ("FR14 2004 1010 0505 0001 3M02 606", "FR14 2004 1010 0505 0001 3M02 606"),
    ],
}

NOT_FOUND = {
    "ssn": [
        "SSN 000-12-3456",  # area 000
        "SSN 666-12-3456",  # area 666
        "SSN 912-12-3456",  # area 9xx
        "SSN 123-00-4567",  # group 00
        "SSN 123-45-0000",  # serial 0000
        "1123-45-6789",  # part of a longer number
        "123456789",  # nine digits without the words are just a number
    ],
    "payment_card": [
        "card 4111 1111 1111 1112",  # Luhn check fails
        "411111111111",  # 12 digits
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
        "2019 2020 2021",
        "$4,111,111,111,111,111",
    ],
    "email": ["@handle", "a@b", "me at example dot com"],
    "phone": [
        "In 2023 she paid $1,234.56 for 12 items.",
        "on 01.02.2023 10 people came",
        "The population is 331449281.",
        "3+4=7, and 10-20-30",
        "from 9:00 to 17:30",
        "0.125 0.25 0.5",
        "2023-10-12",
        "5+1234567 = 1234572",
        "00000001 00000001",
        "pi is 3.14159265358979",
    ],
    "iban": [
        "GB82 WEST 1234 5698 7654 33",  # mod-97 fails
        "DE89 3704 0044 0532 0130",  # too short for Germany
        "XY12ABCD",
    ],
}

ORDINARY = [
    # GSM8K-style questions, with the years, prices, times and quantities such questions carry.
    "Janet's ducks lay 16 eggs per day. She sells the remainder for $2 per egg. How much does she make?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?",
    "Josh buys a house for $80,000 and puts in $50,000 in repairs, increasing its value by 150%.",
    "In 1995 the town had 12,500 people; by 2020 it had 18,750. By what percent did it grow?",
    "A train leaves at 9:45 and arrives at 13:10. It travels 245 km. What is its average speed?",
    "He ran 3.5 miles on Monday, 4.25 on Tuesday and 10 on Wednesday.",
    "The store sold 125 200 and 350 units in three weeks.",
    "Compute 1234 * 5678 + 90123.",
    "What is 2^31 - 1 = 2147483647 in hexadecimal?",
    "The ISBN 978-3-16-148410-0 identifies the book.",
    "Find the degree of Q(sqrt(2), sqrt(3), sqrt(18)) over Q.",
    "Let p = (1, 2, 5, 4)(2, 3) in S_5. Find the index of <p> in S_5.",
    "Between 2001-2005 sales rose from 1,000,000 to 2,500,000.",
    "A rectangle is 12.5 cm by 7.25 cm; what is its area in mm^2?",
]


@pytest.mark.parametrize(("name", "text", "span"), [(n, t, s) for n, cases in FOUND.items() for t, s in cases])
def test_each_detector_finds_its_kind(name: str, text: str, span: str) -> None:
    assert found(text, only(name)) == [(name, span)]
    assert sensitive_in(text, DEFAULT)


@pytest.mark.parametrize(("name", "text"), [(n, t) for n, cases in NOT_FOUND.items() for t in cases])
def test_each_detector_leaves_look_alikes_alone(name: str, text: str) -> None:
    assert found(text, only(name)) == []


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_questions_are_not_sensitive(text: str) -> None:
    assert found(text) == [] and not sensitive_in(text, DEFAULT)


def test_every_detector_is_on_unless_the_mix_lists_none() -> None:
    assert set(DEFAULT.detectors) == set(DETECTORS)
    off = SensitiveRule(detectors=())
    assert not sensitive_in("SSN 123-45-6789, jane@example.com", off)
    assert found("SSN 123-45-6789, jane@example.com", only("email")) == [("email", "jane@example.com")]


def test_the_schema_offers_exactly_the_built_in_detectors() -> None:
    choices = get_args(get_args(SensitiveRule.model_fields["detectors"].annotation)[0])
    assert set(choices) == set(DETECTORS)


@pytest.mark.parametrize("value", [None, "ssn", ["ssn", "passport"]])
def test_no_value_but_an_explicit_list_changes_the_detectors(value: object) -> None:
    data = {
        "name": "t",
        "models": {"a": {"provider": "fake", "model": "a"}},
        "steps": [{"name": "answer"}],
        "gate": {"constraints": {"sensitive": {"detectors": value}}},
    }
    with pytest.raises(MixError, match=r"gate\.constraints\.sensitive\.detectors"):
        parse_spec(data)


def test_a_pattern_that_backtracks_exponentially_in_python_runs_in_linear_time_on_re2() -> None:
    # Python's re takes seconds on 28 characters of this; RE2 compiles it to an automaton.
    rule = SensitiveRule(detectors=(), patterns=["^(a+)+$"])
    assert sensitive_in("a" * 100_000, rule)
    assert not sensitive_in("a" * 100_000 + "!", rule)
    assert found("a" * 1000, rule) == [("pattern", "a" * 1000)]


@pytest.mark.parametrize("pattern", [r"(a)\1", r"secret(?=ly)", r"(?<!not )private", r"a{1001}", "(unclosed"])
def test_a_pattern_re2_cannot_match_in_linear_time_is_a_mix_error_naming_the_field(pattern: str) -> None:
    data = {
        "name": "t",
        "models": {"a": {"provider": "fake", "model": "a"}},
        "steps": [{"name": "answer"}],
        "gate": {"constraints": {"sensitive": {"patterns": ["fine", pattern]}}},
    }
    with pytest.raises(MixError, match=r"gate\.constraints\.sensitive\.patterns\.1.*not a regular expression") as err:
        parse_spec(data)
    assert "\n" not in str(err.value)


def test_an_empty_pattern_match_still_makes_a_query_sensitive() -> None:
    rule = SensitiveRule(detectors=(), patterns=["^"])
    assert sensitive_in("anything", rule) and find("anything", rule) == []


def test_redaction_names_what_each_detector_found_and_hides_pattern_matches() -> None:
    rule = SensitiveRule(patterns=[r"(?i)patient \w+"])
    text = "My patient Jane (SSN 123-45-6789, jane@example.com, +44 20 7946 0958) asks about DE89370400440532013000."
    assert redact(text, rule) == "My [redacted] (SSN [ssn], [email], [phone]) asks about [iban]."


def test_overlapping_findings_are_merged_into_one_span() -> None:
    rule = SensitiveRule(detectors=("ssn",), patterns=[r"SSN \d+"])
    assert redact("my SSN 123-45-6789 ok", rule) == "my [redacted] ok"


def test_what_the_usage_database_keeps() -> None:
    query = "My SSN is 123-45-6789"
    assert stored_query("hello", DEFAULT, sensitive=False, flagged=False) == "hello"
    assert stored_query(query, DEFAULT, sensitive=True, flagged=False) == "My SSN is [ssn]"
    assert stored_query(query, DEFAULT, sensitive=True, flagged=True) == "[sensitive query: 21 chars]"
    none = SensitiveRule(store="none")
    assert stored_query(query, none, sensitive=True, flagged=False) == "[sensitive query]"
    assert stored_answer("Your SSN 123-45-6789 is fine", DEFAULT, sensitive=False) == "Your SSN 123-45-6789 is fine"
    assert stored_answer("Form W-2", DEFAULT, sensitive=True) == "[sensitive answer: 8 chars]"
    assert stored_answer("Form W-2", none, sensitive=True) == "[sensitive answer]"
