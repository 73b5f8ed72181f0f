"""Every kind of mistake in a mix file raises a MixError naming the file, the exact field and the way out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from moai.api import mix_runtime
from moai.errors import MixError
from moai.graphs.compile import build_graph
from moai.mix_instructions import bundled_mixes, load_spec
from moai.mix_instructions.load import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, parse_spec
from moai.mix_instructions.schema import MAX_MODELS, MAX_ROUNDS, MAX_STEPS

GOOD_MODELS: dict[str, dict[str, Any]] = {
    "gpt": {"provider": "openai", "model": "gpt-4o-mini", "api_key": "${OPENAI_API_KEY}"},
    "smol": {"provider": "fake", "model": "smol", "privacy": "local"},
}
POOL = "gpt, smol"


def P(name: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "propose", "name": name, **fields}


def J(name: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "judge", "name": name, **fields}


def models(**changes: dict[str, Any]) -> dict[str, Any]:
    """The good pool with some fields of some models replaced."""
    return {name: {**spec, **changes.get(name, {})} for name, spec in GOOD_MODELS.items()}


def mix(**top: Any) -> str:
    """YAML of a valid mix with top-level fields replaced (the value None removes the field)."""
    data: dict[str, Any] = {"name": "broken", "models": models(), "steps": [P("answer")]}
    for key, value in top.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False)


@dataclass(frozen=True)
class Case:
    text: str
    field: str
    words: tuple[str, ...]
    suffix: str = ".yaml"


GOOD_YAML = "name: good\nmodels:\n  s: {provider: fake, model: s}\nsteps: [{kind: propose, name: answer}]\n"
JSON_MIX = (
    '{"name": "j", "models": {"a": {"provider": "fake", "model": "a", "quality": 0.5}}, '
    '"steps": [{"kind": "propose", "name": "x"}]}'
)
# 469 bytes that a naive loader expands into 9**9 (387 million) strings.
LAUGHS = (
    "bomb:\n"
    + "  a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"  {c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
)
LOOP = J("check", cross=None, otherwise="answer")
CASES: dict[str, Case] = {
    "unparsable_yaml": Case("name: [unclosed\nmodels: {\n", "", ("cannot be parsed",)),
    "json_syntax_error": Case('{"name": "broken", "models": {},}', "", ("cannot be parsed",), ".json"),
    "not_a_mapping": Case("- gpt\n- smol\n", "", ("mapping", "not list")),
    "missing_models": Case(mix(models=None), "models", ("required",)),
    "empty_pool": Case(mix(models={}), "models", ("pool is empty",)),
    "missing_steps": Case(mix(steps=None), "steps", ("required",)),
    "empty_steps": Case(mix(steps=[]), "steps", ("no steps", "propose")),
    "steps_not_a_list": Case(mix(steps="answer"), "steps", ("valid list",)),
    "model_not_a_mapping": Case(mix(models={"gpt": "gpt-4o"}), "models.gpt", ("valid dictionary",)),
    "misspelt_top_level_key": Case(
        mix(descripton="typo"),
        "descripton",
        ("unknown field 'descripton'", "did you mean 'description'", "valid fields:", "models", "steps"),
    ),
    "misspelt_gate_key": Case(
        mix(gate={"top_kk": 2}), "gate.top_kk", ("unknown field 'top_kk'", "candidates", "min_confidence", "top_k")
    ),
    "misspelt_model_key": Case(
        mix(models=models(gpt={"prize": {}})), "models.gpt.prize", ("unknown field 'prize'", "price", "provider")
    ),
    "misspelt_price_key": Case(
        mix(models=models(gpt={"price": {"input": 1}})),
        "models.gpt.price.input",
        ("input_per_mtok", "output_per_mtok"),
    ),
    "misspelt_judge_key": Case(
        mix(steps=[P("answer"), J("check", crosss="gpt")]),
        "steps.1.crosss",
        ("cross", "otherwise", "self", "stop_when"),
    ),
    "misspelt_stop_when_key": Case(
        mix(steps=[P("answer"), J("check", stop_when={"max_round": 2})]),
        "steps.1.stop_when.max_round",
        ("did you mean 'max_rounds'", "score_at_least"),
    ),
    "misspelt_sensitive_key": Case(
        mix(gate={"constraints": {"sensitive": {"patternz": ["x"]}}}),
        "gate.constraints.sensitive.patternz",
        ("did you mean 'patterns'", "allow_privacy"),
    ),
    "wrong_provider": Case(
        mix(models=models(gpt={"provider": "anthropic"})), "models.gpt.provider", ("'local'", "'openai'", "'fake'")
    ),
    "wrong_privacy": Case(
        mix(models=models(smol={"privacy": "public"})),
        "models.smol.privacy",
        ("'local'", "'private_cloud'", "'third_party'"),
    ),
    "wrong_allow_privacy": Case(
        mix(gate={"constraints": {"sensitive": {"allow_privacy": ["local", "vpn"]}}}),
        "gate.constraints.sensitive.allow_privacy.1",
        ("'local'", "'private_cloud'", "'third_party'"),
    ),
    "negative_price": Case(
        mix(models=models(gpt={"price": {"output_per_mtok": -0.5}})),
        "models.gpt.price.output_per_mtok",
        ("greater than or equal to 0",),
    ),
    "negative_budget": Case(
        mix(gate={"objective": {"budget_usd": -1}}), "gate.objective.budget_usd", ("greater than or equal to 0",)
    ),
    "quality_above_one": Case(
        mix(models=models(smol={"quality": 1.5})), "models.smol.quality", ("less than or equal to 1",)
    ),
    "zero_max_tokens": Case(mix(models=models(smol={"max_tokens": 0})), "models.smol.max_tokens", ("greater than 0",)),
    "top_k_not_a_number": Case(mix(gate={"top_k": "three"}), "gate.top_k", ("valid integer",)),
    "bad_mix_name": Case(mix(name="my mix"), "name", ("'my mix' is not a valid name", "letters, digits")),
    "wrong_aggregate_mode": Case(
        mix(aggregate={"mode": "vote"}), "aggregate.mode", ("'synthesize'", "'best'", "'last'")
    ),
    "unknown_step_kind": Case(mix(steps=[{"kind": "vote", "name": "v"}]), "steps.0", ("kind", "propose, judge")),
    "step_without_kind": Case(mix(steps=[{"name": "answer"}]), "steps.0", ("needs a 'kind'", "propose or judge")),
    "unknown_scorer": Case(mix(gate={"scorer": "bert"}), "gate.scorer", ("'bert'", "priors")),
    "undeclared_candidate": Case(
        mix(gate={"candidates": ["smol", "claude"]}), "gate.candidates.1", ("'claude'", "not declared", POOL)
    ),
    "no_candidates": Case(mix(gate={"candidates": []}), "gate.candidates", ("no candidates", POOL)),
    "undeclared_gate_fallback": Case(
        mix(gate={"min_confidence": 0.5, "fallback": "claude"}), "gate.fallback", ("'claude'", POOL)
    ),
    "undeclared_step_model": Case(
        mix(steps=[P("answer", models=["gpt", "claude"])]), "steps.0.models.1", ("'claude'", POOL)
    ),
    "undeclared_proposer_model": Case(
        mix(steps=[P("answer", models=[{"model": "claude", "role": "r", "instructions": "i"}])]),
        "steps.0.models.0",
        ("'claude'", POOL),
    ),
    "empty_step_models": Case(mix(steps=[P("answer", models=[])]), "steps.0.models", ("selected", POOL)),
    "undeclared_model_fallback": Case(
        mix(models=models(gpt={"fallbacks": ["claude"]})), "models.gpt.fallbacks.0", ("'claude'", POOL)
    ),
    "model_is_own_fallback": Case(
        mix(models=models(gpt={"fallbacks": ["smol", "gpt"]})), "models.gpt.fallbacks.1", ("own fallback",)
    ),
    "undeclared_judge_cross": Case(
        mix(steps=[P("answer"), J("check", cross="claude")]), "steps.1.cross", ("'claude'", "top1", POOL)
    ),
    "undeclared_aggregate_model": Case(
        mix(aggregate={"mode": "synthesize", "model": "claude"}), "aggregate.model", ("'claude'", "top1", POOL)
    ),
    "synthesize_without_model": Case(mix(aggregate={"mode": "synthesize"}), "aggregate.model", ("synthesize", "top1")),
    "replies_on_real_provider": Case(mix(models=models(gpt={"replies": ["hi"]})), "models.gpt.replies", ("'fake'",)),
    "top_k_above_candidates": Case(mix(gate={"top_k": 3}), "gate.top_k", ("3 exceeds the 2 candidate",)),
    "top_k_above_listed_candidates": Case(
        mix(gate={"top_k": 2, "candidates": ["smol"]}), "gate.top_k", ("2 exceeds the 1 candidate",)
    ),
    "min_confidence_without_fallback": Case(mix(gate={"min_confidence": 0.3}), "gate.fallback", ("min_confidence",)),
    "duplicate_step_names": Case(
        mix(steps=[P("answer"), J("check"), P("answer")]), "steps.2.name", ("'answer'", "twice")
    ),
    "reserved_step_name": Case(
        mix(steps=[P("aggregate")]), "steps.0.name", ("'aggregate' is reserved", "gate, aggregate, __start__, __end__")
    ),
    "first_step_a_judge": Case(mix(steps=[J("check"), P("answer")]), "steps.0.kind", ("first step", "'propose'")),
    "otherwise_unknown_step": Case(
        mix(steps=[P("answer"), J("check", otherwise="retry")]),
        "steps.1.otherwise",
        ("no step 'retry'", "answer, check, aggregate"),
    ),
    "next_unknown_step": Case(
        mix(steps=[P("answer", next="polish")]), "steps.0.next", ("no step 'polish'", "answer, aggregate")
    ),
    "next_self_loop": Case(
        mix(steps=[P("answer", next="answer")]), "steps.0.next", ("cycle answer -> answer", "no reachable stop")
    ),
    "judge_next_self_loop": Case(
        mix(steps=[P("answer"), J("check", next="check")]), "steps.1.next", ("cycle check -> check", "otherwise")
    ),
    "next_cycle_without_judge": Case(
        mix(steps=[P("answer"), P("polish", next="answer")]),
        "steps.1.next",
        ("cycle answer -> polish -> answer", "no reachable stop"),
    ),
    "next_cycle_closed_further_on": Case(
        mix(steps=[P("answer"), P("polish"), P("shorten", next="polish")]),
        "steps.2.next",
        ("cycle polish -> shorten -> polish",),
    ),
    "unreachable_step": Case(
        mix(steps=[P("answer", next="aggregate"), P("extra")]), "steps.1", ("'extra'", "never reached", "'answer'")
    ),
    "unreachable_after_loop": Case(
        mix(steps=[P("answer"), {**LOOP, "next": "aggregate"}, P("extra")]), "steps.2", ("'extra'", "never reached")
    ),
    "invalid_regex": Case(
        mix(gate={"constraints": {"sensitive": {"patterns": [r"\bssn\b", "(unclosed"]}}}),
        "gate.constraints.sensitive.patterns.1",
        ("not a regular expression",),
    ),
    "too_many_patterns": Case(
        mix(gate={"constraints": {"sensitive": {"patterns": ["x"] * 257}}}),
        "gate.constraints.sensitive.patterns",
        ("at most 256",),
    ),
    "delay_not_fake": Case(mix(models=models(gpt={"delay_s": 1})), "models.gpt.delay_s", ("only provider 'fake'",)),
    "literal_api_key": Case(
        mix(models=models(gpt={"api_key": "sk-live-1234567890"})), "models.gpt.api_key", ("${ENV_VAR}",)
    ),
    "json_wrong_provider": Case(
        '{"name": "j", "models": {"gpt": {"provider": "azure", "model": "x"}}, "steps": [{"name": "a"}]}',
        "models.gpt.provider",
        ("'local'", "'openai'", "'fake'"),
        ".json",
    ),
    "yml_undeclared_fallback": Case(
        mix(models=models(smol={"fallbacks": ["gemma"]})), "models.smol.fallbacks.0", ("'gemma'", POOL), ".yml"
    ),
    "misspelt_required_key": Case(
        mix(models=None, modles=models()), "modles", ("unknown field 'modles'", "did you mean 'models'", "steps")
    ),
    "misspelt_proposer_key": Case(
        mix(steps=[P("answer", models=[{"model": "gpt", "role": "r", "instruction": "i"}])]),
        "steps.0.models.0.instruction",
        ("unknown field 'instruction'", "did you mean 'instructions'", "role"),
    ),
    "misspelt_key_of_a_model_named_like_a_field": Case(
        mix(models={"price": {"provider": "fake", "model": "p", "tag": ["x"]}}),
        "models.price.tag",
        ("did you mean 'tags'", "provider"),
    ),
    # LangGraph names the join between two propose steps before_<step>: a step may not take such a name.
    "step_name_clashes_with_join": Case(
        mix(steps=[P("answer"), P("polish"), P("before_polish")]),
        "steps.2.name",
        ("'before_polish' is reserved", "before_*"),
    ),
    "step_name_with_reserved_character": Case(
        mix(steps=[P("answer:v2")]), "steps.0.name", ("'answer:v2' is not a valid name",)
    ),
    # Numbers: finite and within the documented maxima, whichever way a file spells them.
    "infinite_price": Case(
        mix(models=models(gpt={"price": {"input_per_mtok": float("inf")}})),
        "models.gpt.price.input_per_mtok",
        ("must be a finite number >= 0 and <= 10000", "(got inf)"),
    ),
    "nan_quality": Case(
        mix(models=models(smol={"quality": float("nan")})),
        "models.smol.quality",
        ("must be a finite number >= 0 and <= 1", "(got nan)"),
    ),
    "nan_string_budget": Case(
        mix(gate={"objective": {"budget_usd": "nan"}}), "gate.objective.budget_usd", ("finite number >= 0",)
    ),
    "overflowing_exponent": Case(
        mix(models=models(smol={"timeout_s": "1e400"})), "models.smol.timeout_s", ("finite number > 0 and <= 3600",)
    ),
    "json_nan": Case(JSON_MIX.replace('"quality": 0.5', '"quality": NaN'), "models.a.quality", ("finite",), ".json"),
    "json_infinity": Case(
        JSON_MIX.replace('"quality": 0.5', '"latency_s": Infinity'), "models.a.latency_s", ("finite",), ".json"
    ),
    "huge_integer": Case(mix() + "circuit: {failures: " + "9" * 5000 + "}\n", "", ("a number longer than",)),
    "max_rounds_above_cap": Case(
        mix(steps=[P("answer"), J("check", otherwise="answer", stop_when={"max_rounds": 1_000_000_000})]),
        "steps.1.stop_when.max_rounds",
        (f"less than or equal to {MAX_ROUNDS}",),
    ),
    "too_many_steps": Case(
        mix(steps=[P(f"s{i}") for i in range(MAX_STEPS + 1)]), "steps", (f"at most {MAX_STEPS} items",)
    ),
    "too_many_models_in_a_step": Case(
        mix(steps=[P("answer", models=["smol"] * (MAX_MODELS + 1))]),
        "steps.0.models",
        (f"at most {MAX_MODELS} items",),
    ),
    "max_tokens_above_cap": Case(
        mix(models=models(smol={"max_tokens": 10**9})), "models.smol.max_tokens", ("less than or equal to 1000000",)
    ),
    "backoff_above_cap": Case(
        mix(models=models(smol={"backoff_s": 3600})), "models.smol.backoff_s", ("less than or equal to 60",)
    ),
    "cache_size_above_cap": Case(
        mix(gate={"cache": {"size": 10**9}}), "gate.cache.size", ("less than or equal to 100000",)
    ),
    "circuit_failures_above_cap": Case(
        mix(circuit={"failures": 10**6}), "circuit.failures", ("less than or equal to 100",)
    ),
    # score / cost**alpha: a large alpha made a cheap model's cost**alpha 0.0, a ZeroDivisionError in the gate.
    "alpha_above_cap": Case(
        mix(gate={"objective": {"alpha": 60}}), "gate.objective.alpha", ("less than or equal to 10",)
    ),
    # YAML reads yes/no/on/off as booleans, which pydantic would take for 1 and 0.
    "boolean_as_a_number": Case(
        GOOD_YAML.replace("name: answer}", "name: answer}, {kind: judge, name: j, stop_when: {max_rounds: on}}"),
        "steps.1.stop_when.max_rounds",
        ("valid integer", "(got 'true')"),
    ),
    # Keys written twice: YAML and JSON would both keep the last one, silently.
    "duplicate_top_level_key": Case(
        mix() + "models:\n  other: {provider: fake, model: o}\n",
        "models",
        ("key 'models' is written twice in one mapping", "lines 2 and "),
    ),
    "duplicate_key_in_a_flow_mapping": Case(
        GOOD_YAML.replace("model: s}", "model: s, model: t}"),
        "models.s.model",
        ("'model' is written twice", "lines 3 and 3"),
    ),
    "duplicate_key_json": Case(
        JSON_MIX.replace('"steps"', '"models": {"b": {"provider": "fake", "model": "b"}}, "steps"'),
        "models",
        ("key 'models' is written twice",),
        ".json",
    ),
    "duplicate_nested_key_json": Case(
        JSON_MIX.replace('"model": "a"', '"model": "a", "model": "b"'),
        "models.a.model",
        ("'model' is written twice",),
        ".json",
    ),
    # Hostile structure: refused while parsing, before anything is expanded or built.
    "deep_yaml": Case(
        GOOD_YAML + "description: " + "[" * 5000 + "]" * 5000 + "\n",
        "description.0.0.0.0.0.0.0...",
        (f"nested deeper than {MAX_DEPTH} levels (line 5)",),
    ),
    "deep_json": Case(
        '{"name": "j", "description": ' + "[" * 40 + "]" * 40 + "}",
        "description.0.0.0.0.0.0.0...",
        (f"nested deeper than {MAX_DEPTH} levels",),
        ".json",
    ),
    "very_deep_json": Case('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "", ("nested deeper",), ".json"),
    "billion_laughs": Case(
        GOOD_YAML + LAUGHS, "bomb.e.1", (f"more than {MAX_NODES} keys and values once aliases are expanded", "line 10")
    ),
    "recursive_alias": Case(GOOD_YAML + "bomb: &a [x, *a]\n", "bomb.1", ("alias inside the node it refers to",)),
    "file_too_large": Case(GOOD_YAML + "#" * MAX_FILE_BYTES, "", ("larger than 1024 KiB",)),
    "empty_file": Case("", "", ("not an empty file",)),
    # Names: keywords are not model names; step, mix and arm names are ASCII identifiers.
    "model_named_top1": Case(
        mix(models={**GOOD_MODELS, "top1": {"provider": "fake", "model": "t"}}),
        "models.top1",
        ("'top1' is a keyword", "cross: top1", "reserved model names: selected, top1"),
    ),
    "model_named_selected": Case(
        mix(models={"selected": {"provider": "fake", "model": "t"}}),
        "models.selected",
        ("'selected' is a keyword", "models: selected", "reserved model names: selected, top1"),
    ),
    "model_name_with_a_space": Case(
        mix(models={"my model": {"provider": "fake", "model": "t"}}),
        "models.my model",
        ("'my model' is not a valid model name", "no spaces"),
    ),
    "unicode_mix_name": Case(
        mix(name="café"), "name", ("'café' is not a valid name", "ASCII letters, digits, '_' and '-'")
    ),
    "name_with_a_trailing_newline": Case(mix(steps=[P("answer\n")]), "steps.0.name", ("not a valid name",)),
    "overlong_step_name": Case(mix(steps=[P("a" * 65)]), "steps.0.name", ("at most 64 characters",)),
    "empty_model_id": Case(mix(models=models(smol={"model": ""})), "models.smol.model", ("at least 1 character",)),
    "base_url_not_a_url": Case(
        mix(models=models(gpt={"base_url": "localhost:8000/v1"})),
        "models.gpt.base_url",
        ("'localhost:8000/v1' is not a URL", "http://host:port/v1"),
    ),
    # An unset variable without a default: refused with its field now, not a "Connection error" at run time.
    "unset_variable_in_base_url": Case(
        mix(models=models(gpt={"base_url": "${MOAI_T_NEVER_SET}"})),
        "models.gpt.base_url",
        ("${MOAI_T_NEVER_SET} is not set and has no default", "${MOAI_T_NEVER_SET:-...}"),
    ),
    "unset_variable_in_model_id": Case(
        mix(models=models(gpt={"model": "gpt-${MOAI_T_NEVER_SET}"})),
        "models.gpt.model",
        ("${MOAI_T_NEVER_SET} is not set",),
    ),
    "unset_variable_in_a_number": Case(
        mix(models=models(gpt={"quality": "${MOAI_T_NEVER_SET}"})), "models.gpt.quality", ("is not set",)
    ),
    "candidate_listed_twice": Case(
        mix(gate={"candidates": ["smol", "smol"], "top_k": 2}), "gate.candidates.1", ("'smol' is listed twice",)
    ),
    "fallback_listed_twice": Case(
        mix(models=models(gpt={"fallbacks": ["smol", "smol"]})), "models.gpt.fallbacks.1", ("'smol' is listed twice",)
    ),
}


def _load_and_compile(path: Path) -> None:
    spec = load_spec(path)
    build_graph(mix_runtime(spec, str(path))).compile()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_mistake_names_file_field_and_choices(tmp_path: Path, case: Case) -> None:
    path = tmp_path / f"broken{case.suffix}"
    path.write_text(case.text, encoding="utf-8")
    with pytest.raises(MixError) as caught:
        _load_and_compile(path)
    err = caught.value
    assert err.source == str(path)
    assert err.field == case.field, err.message
    for word in case.words:
        assert word in err.message, f"{word!r} not in {err.message!r}"
    where = f"{path}: {case.field}: " if case.field else f"{path}: "
    assert str(err) == where + err.message


def test_all_valid_variants_of_the_cases_load(tmp_path: Path) -> None:
    # The base the table mutates is itself valid: every error above comes from its one mistake.
    path = tmp_path / "good.yaml"
    path.write_text(mix(steps=[P("answer"), LOOP], aggregate={"mode": "synthesize", "model": "top1"}))
    _load_and_compile(path)


def test_nonexistent_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(MixError) as caught:
        load_spec(path)
    assert (caught.value.source, caught.value.field) == (str(path), "")
    assert "no such file" in caught.value.message


def test_unknown_bundled_name_lists_the_bundled_mixes() -> None:
    with pytest.raises(MixError) as caught:
        load_spec("routemoe")
    assert (caught.value.source, caught.value.field) == ("routemoe", "")
    assert "bundled mixes: " + ", ".join(bundled_mixes()) in caught.value.message
    assert {"moa", "route", "routemoa"} <= set(bundled_mixes())


ENV_MIX = """\
name: env
description: ${MOAI_T_UNSET:-}
models:
  gpt:
    provider: openai
    model: ${MOAI_T_MODEL}
    base_url: ${MOAI_T_URL:-http://127.0.0.1:8000/v1}
    api_key: ${MOAI_T_KEY}
    quality: ${MOAI_T_QUALITY:-0.9}
    tags: ["${MOAI_T_TAG:-}", "x-${MOAI_T_MODEL}-y"]
steps: [{kind: propose, name: answer}]
"""


def test_env_references_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MOAI_T_UNSET", "MOAI_T_URL", "MOAI_T_QUALITY", "MOAI_T_TAG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOAI_T_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("MOAI_T_KEY", "sk-secret")
    path = tmp_path / "env.yaml"
    path.write_text(ENV_MIX)
    spec = load_spec(path)
    gpt = spec.models["gpt"]
    assert gpt.model == "gpt-4o-mini"
    assert gpt.api_key == "sk-secret"
    assert gpt.base_url == "http://127.0.0.1:8000/v1"
    assert gpt.quality == 0.9
    assert gpt.tags == ["", "x-gpt-4o-mini-y"]
    assert spec.description == ""


def test_env_value_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOAI_T_MODEL", "m")
    monkeypatch.setenv("MOAI_T_URL", "http://10.0.0.2/v1")
    monkeypatch.setenv("MOAI_T_QUALITY", "0.25")
    path = tmp_path / "env.yaml"
    path.write_text(ENV_MIX)
    gpt = load_spec(path).models["gpt"]
    assert (gpt.base_url, gpt.quality) == ("http://10.0.0.2/v1", 0.25)


def test_unset_key_reference_stays_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOAI_T_KEY", raising=False)
    monkeypatch.setenv("MOAI_T_MODEL", "m")
    path = tmp_path / "env.yaml"
    path.write_text(ENV_MIX)
    assert load_spec(path).models["gpt"].api_key == "${MOAI_T_KEY}"


STEP_NAMES = ("draft", "check", "revise", "polish", "x-y", "_z2", "before_polish")


@st.composite
def _random_steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(STEP_NAMES), min_size=1, max_size=4, unique=True))
    targets = st.sampled_from([None, None, "aggregate", *names, *STEP_NAMES[:2]])
    steps = []
    for i, name in enumerate(names):
        step: dict[str, Any] = {"name": name, "next": draw(targets)}
        if i and draw(st.booleans()):
            step |= {
                "kind": "judge",
                "otherwise": draw(targets),
                "cross": draw(st.sampled_from([None, "top1", "smol"])),
            }
        else:
            step |= {"kind": "propose", "models": draw(st.sampled_from(["selected", ["smol"], ["gpt", "smol"]]))}
        steps.append(step)
    return steps


@settings(max_examples=50, deadline=None)
@given(steps=_random_steps(), mode=st.sampled_from(["best", "last", "synthesize"]))
def test_whatever_loads_compiles(steps: list[dict[str, Any]], mode: str) -> None:
    """A mistake is a MixError at load time: a mix that loads never fails in LangGraph's compiler."""
    aggregate = {"mode": mode, "model": "top1" if mode == "synthesize" else None}
    data = {"name": "random", "models": models(), "steps": steps, "aggregate": aggregate}
    try:
        spec = parse_spec(data, "random.yaml")
    except MixError as err:
        assert err.source == "random.yaml" and err.field.split(".")[0] in {"steps", "aggregate"}
        return
    build_graph(mix_runtime(spec, "random.yaml")).compile().get_graph()
