"""`provider: langchain`: any chat model init_chat_model builds, checked when the mix loads and when it is built."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest
from langchain.chat_models.base import _BUILTIN_PROVIDERS
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from moai.api import load_mix
from moai.cli import main
from moai.errors import MixError, ProviderError
from moai.mix_instructions import load_spec
from moai.mix_instructions.check import LANGCHAIN_PROVIDERS, langchain_providers
from moai.mix_instructions.schema import ModelSpec
from moai.providers import check_chat_model, make_chat_model

MIX = """\
name: lc
models:
  claude: {{provider: langchain, model: "{model}"}}
steps: [{{kind: propose, name: answer}}]
"""


def _mix(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "lc.yaml"
    path.write_text(MIX.format(model=model), encoding="utf-8")
    return path


@pytest.fixture
def without_anthropic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make langchain-anthropic absent, whether or not this machine has it."""
    find_spec: Callable[..., ModuleSpec | None] = importlib.util.find_spec

    def hidden(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "langchain_anthropic" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", hidden)


def test_the_factory_passes_each_setting_under_the_name_the_class_takes() -> None:
    spec = ModelSpec(
        provider="langchain",
        model="openai:smollm2",
        base_url="http://127.0.0.1:8080/v1",
        api_key="secret",
        max_tokens=77,
        temperature=0.3,
        timeout_s=9,
    )
    model = make_chat_model("smol", spec)
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "smollm2"
    assert model.openai_api_base == "http://127.0.0.1:8080/v1"
    assert isinstance(model.openai_api_key, SecretStr) and model.openai_api_key.get_secret_value() == "secret"
    assert (model.max_tokens, model.temperature, model.request_timeout) == (77, 0.3, 9)
    assert model.max_retries == 0  # the runtime retries, with its backoff


def test_a_model_from_a_mix_file_reads_its_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _mix(tmp_path, 'openai:gpt-4o-mini", api_key: "${LC_TEST_KEY}')
    spec = load_spec(path)
    with pytest.raises(ProviderError, match=r"^models\.claude: api_key \$\{LC_TEST_KEY\} refers to an environment"):
        make_chat_model("claude", spec.models["claude"])
    monkeypatch.setenv("LC_TEST_KEY", "from-env")
    model = make_chat_model("claude", load_spec(path).models["claude"])
    assert isinstance(model, ChatOpenAI)
    assert isinstance(model.openai_api_key, SecretStr) and model.openai_api_key.get_secret_value() == "from-env"


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "anthropic:", "antropic:claude-3-5-haiku", ":x"])
def test_a_model_without_a_known_provider_prefix_is_refused_naming_the_field_and_the_choices(
    tmp_path: Path, model: str
) -> None:
    with pytest.raises(MixError) as caught:
        load_spec(_mix(tmp_path, model))
    assert caught.value.field == "models.claude.model"
    assert f"'{model}' is not '<provider>:<model>' with a provider init_chat_model knows" in caught.value.message
    assert caught.value.message.endswith(f"valid providers: {', '.join(langchain_providers())}")


def test_the_static_prefix_list_matches_the_installed_langchain() -> None:
    # Where langchain is absent the static list is used: it must not drift from langchain's own.
    assert tuple(sorted(LANGCHAIN_PROVIDERS)) == langchain_providers() == tuple(sorted(_BUILTIN_PROVIDERS))


def test_without_langchain_the_static_list_is_used_and_the_build_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "langchain.chat_models.base", None)  # import raises ImportError
    assert langchain_providers() == LANGCHAIN_PROVIDERS
    spec = ModelSpec(provider="langchain", model="openai:gpt-4o-mini")
    with pytest.raises(ProviderError) as caught:
        check_chat_model("gpt", spec, "mix.yaml")
    assert str(caught.value) == (
        "mix.yaml: models.gpt: provider 'langchain' needs the package langchain: pip install 'mixture-of-ai[langchain]'"
    )


@pytest.mark.usefixtures("without_anthropic")
def test_a_missing_integration_package_is_named_when_the_mix_is_built(tmp_path: Path) -> None:
    path = _mix(tmp_path, "anthropic:claude-3-5-haiku-latest")
    load_spec(path)  # the file itself is valid: the package is this machine's business
    with pytest.raises(ProviderError) as caught:
        load_mix(path)
    assert str(caught.value) == (
        f"{path}: models.claude: provider 'anthropic' needs the package langchain-anthropic: "
        "pip install langchain-anthropic"
    )


@pytest.mark.usefixtures("without_anthropic")
@pytest.mark.parametrize("command", [["validate"], ["run", "--json"]], ids=["validate", "run"])
def test_validate_and_run_exit_2_with_one_line_naming_the_package(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _mix(tmp_path, "anthropic:claude-3-5-haiku-latest")
    argv = [command[0], str(path), *(["What is 2+2?", *command[1:]] if command[0] == "run" else [])]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: {path}: models.claude: provider 'anthropic' needs the package langchain-anthropic: "
        "pip install langchain-anthropic\n"
    )


def test_an_installed_integration_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _mix(tmp_path, "openai:gpt-4o-mini")
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"ok: {path} (lc: 1 models, 1 steps)\n"
