"""One Settings for serve, chat and the app: flags over RIPOSTE_* variables over defaults; blocklists; errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.__main__ import build_parser, main, settings_from
from server.engine import EngineConfig
from server.settings import Settings


def parsed(*argv: str) -> Settings:
    return settings_from(build_parser().parse_args(list(argv)))


def test_flags_beat_the_environment_which_beats_the_defaults(monkeypatch, tmp_path):
    assert parsed("serve").port == 8000 and parsed("chat").budget_ms == 1000
    monkeypatch.setenv("RIPOSTE_PORT", "8123")
    monkeypatch.setenv("RIPOSTE_BUDGET_MS", "250")
    monkeypatch.setenv("RIPOSTE_MODEL_DIR", str(tmp_path))
    assert parsed("serve").port == 8123  # documented, and now honoured
    assert parsed("chat").budget_ms == 250 and parsed("chat").model_dir == tmp_path  # chat reads them too
    assert parsed("serve", "--port", "9000").port == 9000 and parsed("chat", "--budget-ms", "400").budget_ms == 400
    assert parsed("chat").engine_config().echo_run == 4
    monkeypatch.setenv("RIPOSTE_ECHO_RUN", "0")
    assert parsed("serve").engine_config().echo_run == 0
    assert parsed("chat", "--echo-run", "3").engine_config().echo_run == 3
    assert parsed("chat").engine_config().mirror_share == 0.5
    monkeypatch.setenv("RIPOSTE_MIRROR_SHARE", "0")
    assert parsed("serve").engine_config().mirror_share == 0
    assert parsed("chat", "--mirror-share", "0.7").engine_config().mirror_share == 0.7
    assert parsed("chat").engine_config().seed_replies == "never"
    monkeypatch.setenv("RIPOSTE_SEED_REPLIES", "statements")
    assert parsed("serve").engine_config().seed_replies == "statements"
    assert parsed("chat", "--seed-replies", "always").engine_config().seed_replies == "always"
    assert parsed("chat").engine_config().order_within_length is EngineConfig.order_within_length
    monkeypatch.setenv("RIPOSTE_ORDER_WITHIN_LENGTH", "true")
    assert parsed("serve").engine_config().order_within_length is True
    assert parsed("chat", "--no-order-within-length").engine_config().order_within_length is False  # the flag wins
    assert parsed("chat").engine_config().max_sentences == EngineConfig.max_sentences == 1
    monkeypatch.setenv("RIPOSTE_MAX_SENTENCES", "0")
    assert parsed("serve").engine_config().max_sentences == 0
    assert parsed("chat", "--max-sentences", "2").engine_config().max_sentences == 2
    monkeypatch.setenv("RIPOSTE_ORDER_WITHIN_LENGTH", "false")
    assert parsed("serve", "--order-within-length").engine_config().order_within_length is True


def test_the_command_line_builds_by_default_and_no_build_turns_it_off(monkeypatch):
    assert parsed("serve").build and not parsed("serve", "--no-build").build
    assert not Settings().build  # a bare app builds nothing unless told
    monkeypatch.setenv("RIPOSTE_BUILD", "false")
    assert not parsed("chat").build


def test_serve_hands_workers_the_same_settings(monkeypatch, tmp_path):
    words = tmp_path / "block.txt"
    words.write_text("# words and regexes\nzork\nre:fo{2,}\n\n")
    settings = parsed("serve", "--blocklist-file", str(words), "--blocklist-word", "dogs", "--blocklist-regex",
                      "a{1,3}b", "--cors-origin", "http://ui.example", "--log-level", "DEBUG", "--workers", "2")
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    worker = Settings()
    assert worker == settings
    config = worker.engine_config()
    assert config.blocklist_words == ("dogs", "zork") and config.blocklist_regexes == ("a{1,3}b", "fo{2,}")
    assert worker.log_level == "debug" and worker.cors_origins == ["http://ui.example"]


def test_environment_lists_and_the_api_key(monkeypatch):
    monkeypatch.setenv("RIPOSTE_BLOCKLIST_WORDS", "dogs, cats")
    monkeypatch.setenv("RIPOSTE_BLOCKLIST_REGEXES", "x{1,2}")  # one regex, commas and all
    monkeypatch.setenv("RIPOSTE_API_KEY", "")
    settings = Settings()
    assert settings.blocklist_words == ["dogs", "cats"] and settings.blocklist_regexes == ["x{1,2}"]
    assert settings.api_key is None  # empty means none, not the empty key
    monkeypatch.setenv("RIPOSTE_API_KEY", "s3cret-key")
    assert Settings().api_key.get_secret_value() == "s3cret-key" and "s3cret" not in repr(Settings())


@pytest.mark.parametrize(("argv", "needle"), [
    (["serve", "--budget-ms", "5"], "budget_ms"),
    (["serve", "--port", "70000"], "port"),
    (["chat", "--echo-run", "-1"], "echo_run"),
    (["chat", "--mirror-share", "1.5"], "mirror_share"),
    (["chat", "--max-sentences", "-1"], "max_sentences"),
    (["chat", "--seed-replies", "sometimes"], "seed-replies"),
    (["chat", "--blocklist-file", "/no/such/file"], "blocklist_file"),
    (["chat", "--blocklist-regex", "("], "does not compile"),
])
def test_bad_settings_exit_2_naming_the_setting(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and needle in capsys.readouterr().err


def test_bad_environment_is_named_too(monkeypatch):
    monkeypatch.setenv("RIPOSTE_BUDGET_MS", "lots")
    with pytest.raises(ValidationError, match="budget_ms"):
        Settings()


def test_a_regex_that_looks_like_json_is_still_one_regex(monkeypatch):
    monkeypatch.setenv("RIPOSTE_BLOCKLIST_REGEXES", "[0-9]{3}-[0-9]{4}")
    assert Settings().blocklist_regexes == ["[0-9]{3}-[0-9]{4}"]
    monkeypatch.setenv("RIPOSTE_BLOCKLIST_REGEXES", '["a+", "b{1,2}"]')
    assert Settings().blocklist_regexes == ["a+", "b{1,2}"]


@pytest.mark.parametrize("key", ["sécret", "two words", "   ", "tab\tkey"])
def test_an_api_key_a_header_cannot_carry_is_refused(key):
    with pytest.raises(ValidationError, match="API key"):
        Settings(api_key=key)


def test_a_dotenv_file_counts_as_the_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RIPOSTE_BUILD=false\nRIPOSTE_REQUIRE_RERANKER=true\nRIPOSTE_PORT=8765\n")
    settings = parsed("serve")
    assert (settings.build, settings.require_reranker, settings.port) == (False, True, 8765)
    assert parsed("serve", "--port", "9001").port == 9001 and parsed("serve", "--log-level", "WARN").log_level == "warning"
