from __future__ import annotations

from moai.mix_instructions.schema import Constraints, ModelSpec, Price, SensitiveRule
from moai.scorer.select import call_cost, excluded, is_sensitive, rank, worst_case_co2e


def model(**kw: object) -> ModelSpec:
    return ModelSpec.model_validate({"provider": "fake", "model": "m", **kw})


POOL = {
    "free": model(privacy="local", latency_s=1),
    "cheap": model(price={"input_per_mtok": 0.1, "output_per_mtok": 0.4}, privacy="private_cloud", latency_s=2),
    "pricey": model(price={"input_per_mtok": 5, "output_per_mtok": 15}, latency_s=3),
}


def test_call_cost_uses_the_price_per_million_tokens() -> None:
    assert call_cost(model(price=Price(input_per_mtok=2, output_per_mtok=8)), 1000, 500) == 0.006


def test_rank_by_score_alone_when_alpha_is_zero() -> None:
    scores = {"free": 0.3, "cheap": 0.5, "pricey": 0.9}
    assert rank(scores, POOL, "score", alpha=0) == ["pricey", "cheap", "free"]


def test_rank_trades_quality_for_cost_as_alpha_grows() -> None:
    scores = {"free": 0.3, "cheap": 0.5, "pricey": 0.9}
    assert rank(scores, POOL, "score", alpha=1)[0] == "free"
    assert rank(scores, POOL, "score", alpha=0.05)[0] == "pricey"


def test_rank_ties_go_to_the_lower_output_price_then_input_price_then_latency() -> None:
    pool = {
        "a": model(price={"input_per_mtok": 1, "output_per_mtok": 2}, latency_s=1),
        "b": model(price={"input_per_mtok": 2, "output_per_mtok": 1}, latency_s=1),
        "c": model(price={"input_per_mtok": 1, "output_per_mtok": 1}, latency_s=5),
        "d": model(price={"input_per_mtok": 1, "output_per_mtok": 1}, latency_s=2),
    }
    assert rank(dict.fromkeys(pool, 0.5), pool, "score") == ["d", "c", "b", "a"]


def test_rank_by_cost_puts_the_cheapest_and_then_the_fastest_first() -> None:
    scores = {"free": 0.3, "cheap": 0.5, "pricey": 0.9}
    assert rank(scores, POOL, "cost") == ["free", "cheap", "pricey"]


def test_sensitive_by_flag_or_pattern() -> None:
    rule = SensitiveRule(patterns=[r"\b\d{3}-\d{2}-\d{4}\b"])
    assert is_sensitive("hello", True, rule)
    assert is_sensitive("my SSN is 123-45-6789", False, rule)
    assert not is_sensitive("hello", False, rule)


def test_sensitive_by_a_built_in_detector_without_any_pattern() -> None:
    assert is_sensitive("my SSN is 123-45-6789", False, SensitiveRule())
    assert is_sensitive("card 4111 1111 1111 1111", False, SensitiveRule())
    assert not is_sensitive("my SSN is 123-45-6789", False, SensitiveRule(detectors=()))
    assert not is_sensitive("In 2023 a ticket cost $12.50", False, SensitiveRule())


def test_sensitive_when_the_conversation_before_the_query_holds_personal_data() -> None:
    rule = SensitiveRule(patterns=["patient"])
    assert is_sensitive("and now?", False, rule, ["mail me at jane@example.com", "noted"])
    assert is_sensitive("and now?", False, rule, ["my patient coughs"])
    assert not is_sensitive("and now?", False, rule, ["hello", "hi"])


def test_excluded_names_each_broken_constraint() -> None:
    constraints = Constraints(sensitive=SensitiveRule(allow_privacy=["local", "private_cloud"]), max_latency_s=2.5)
    assert excluded(POOL, constraints, sensitive=False) == {"pricey": "latency 3s above 2.5s"}
    assert set(excluded(POOL, constraints, sensitive=True)) == {"pricey"}
    assert "privacy 'third_party'" in excluded(POOL, Constraints(), sensitive=True)["pricey"]


def test_carbon_cap_uses_the_worst_case_call() -> None:
    dirty = model(energy_wh_per_ktok=10, grid_gco2_per_kwh=500, max_tokens=500)
    assert worst_case_co2e(dirty) == 5.0  # (500 + 500) / 1000 * 10 Wh * 0.5 g/Wh
    assert excluded({"dirty": dirty}, Constraints(max_co2e_g=1), sensitive=False) == {"dirty": "5 gCO2e above 1 g"}
