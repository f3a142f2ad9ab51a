"""Tests for lanthorn.config: file syntax, merging, overrides, validation and defaults."""

import json
from pathlib import Path

import pytest

from lanthorn.config import (
    CONFIG_ENV,
    OPTIONS,
    Config,
    ConfigError,
    default_config_text,
    load_config,
    parse_config_text,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_comments_are_removed_but_strings_with_slashes_survive(tmp_path: Path) -> None:
    file = write(
        tmp_path / "a.json",
        """{
          // line comment with a "quote
          "Name": "http://example.org/*not a comment*/", /* block
          comment */ "DicomAet": "A//B", // trailing
          "OrthancPeers": {"p": ["https://peer:8042/"]}
        }""",
    )
    config = load_config(file, environ={})
    assert config["Name"] == "http://example.org/*not a comment*/"
    assert config["DicomAet"] == "A//B"
    assert config["OrthancPeers"] == {"p": ["https://peer:8042/"]}


def test_escaped_quote_does_not_end_string() -> None:
    parsed = parse_config_text(r'{"Name": "a // \" b", "DicomAet": "c:\\", "Plugins": ["//"]}')
    assert parsed == {"Name": 'a // " b', "DicomAet": "c:\\", "Plugins": ["//"]}


def test_unterminated_block_comment_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"x\.json: unterminated /\* comment at line 2"):
        parse_config_text('{\n /* "Name": "x"\n}', "x.json")


def test_invalid_json_error_names_file_line_and_column(tmp_path: Path) -> None:
    file = write(tmp_path / "bad.json", '{\n  /* two\n  lines */ // fine\n  "HttpPort": 80 80\n}')
    with pytest.raises(ConfigError) as caught:
        load_config(file, environ={})
    assert str(file) in str(caught.value)
    assert "line 4, column 18" in str(caught.value)


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="top level must be a JSON object"):
        parse_config_text("[1, 2]")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.json", environ={})


def test_folder_merges_alphabetically_and_sections_one_level(tmp_path: Path) -> None:
    # Written out of order; "10-" sorts before "2-" because the order is by name, not number.
    write(tmp_path / "2-b.json", '{"HttpPort": 2, "PostgreSQL": {"Port": 2, "Deep": {"y": 2}}}')
    write(tmp_path / "3-c.txt", '{"HttpPort": 3}')
    write(
        tmp_path / "10-a.json",
        '{"HttpPort": 1, "Name": "a", "PostgreSQL": {"Host": "h", "Port": 1, "Deep": {"x": 1}}}',
    )
    config = load_config(tmp_path, environ={})
    assert config.sources == [tmp_path / "10-a.json", tmp_path / "2-b.json"]
    assert config["HttpPort"] == 2
    assert config["Name"] == "a"
    assert config.section("PostgreSQL") == {"Host": "h", "Port": 2, "Deep": {"y": 2}}


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\*.json"):
        load_config(tmp_path, environ={})


def test_null_means_default_even_over_an_earlier_file(tmp_path: Path) -> None:
    write(tmp_path / "1.json", '{"HttpPort": 9000, "StableAge": 5}')
    write(tmp_path / "2.json", '{"HttpPort": null, "IndexDirectory": null}')
    config = load_config(tmp_path, environ={})
    assert config["HttpPort"] == 8042
    assert config["StableAge"] == 5
    assert config["IndexDirectory"] is None
    assert config.user_keys() == {"StableAge"}


def test_env_override_of_an_option_parses_json_values(tmp_path: Path) -> None:
    file = write(tmp_path / "a.json", '{"HttpPort": 1, "DicomAet": "FILE"}')
    environ = {"LANTHORN__HTTP_PORT": "8043", "LANTHORN__DICOM_AET": "ENV", "OTHER": "x"}
    config = load_config(file, environ=environ)
    assert config["HttpPort"] == 8043
    assert config["DicomAet"] == "ENV"
    assert config.user_keys() == {"HttpPort", "DicomAet"}


def test_env_override_of_a_section_keeps_existing_casing(tmp_path: Path) -> None:
    file = write(tmp_path / "a.json", '{"PostgreSQL": {"EnableIndex": false, "Host": "db"}}')
    config = load_config(file, environ={"LANTHORN__POSTGRESQL__ENABLE_INDEX": "true"})
    assert config["PostgreSQL"] == {"EnableIndex": True, "Host": "db"}


def test_env_only_section_is_found_by_section() -> None:
    config = load_config(None, environ={"LANTHORN__POSTGRESQL__ENABLE_INDEX": "true"})
    assert config.section("PostgreSQL") == {"EnableIndex": True}
    assert config.unknown_key_warnings(["PostgreSQL"]) == []


def test_env_override_wrong_type_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"LANTHORN__HTTP_PORT": "abc"})
    assert "environment variable LANTHORN__HTTP_PORT" in str(caught.value)
    assert '"HttpPort" must be an integer' in str(caught.value)


def test_env_override_too_deep_is_an_error() -> None:
    with pytest.raises(ConfigError, match="LANTHORN__A__B__C"):
        load_config(None, environ={"LANTHORN__A__B__C": "1"})


def test_lanthorn_config_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write(tmp_path / "a.json", '{"Name": "from-env-file"}')
    monkeypatch.setenv(CONFIG_ENV, str(file))
    config = load_config(None)
    assert config["Name"] == "from-env-file"
    assert config.sources == [file]


def test_no_path_and_no_variable_gives_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    config = load_config(None, environ={})
    assert config.sources == []
    assert config.user_keys() == set()


def test_variables_are_expanded_in_strings(tmp_path: Path) -> None:
    file = write(
        tmp_path / "a.json",
        '{"StorageDirectory": "${BASE}/data", "PostgreSQL": {"Password": "${PW}"},'
        ' "Plugins": ["${BASE}/p.py"]}',
    )
    config = load_config(file, environ={"BASE": "/srv", "PW": "secret"})
    assert config["StorageDirectory"] == "/srv/data"
    assert config.section("PostgreSQL") == {"Password": "secret"}
    assert config["Plugins"] == ["/srv/p.py"]


def test_undefined_variable_is_an_error(tmp_path: Path) -> None:
    file = write(tmp_path / "a.json", '{"PostgreSQL": {"Password": "${NOPE}"}}')
    with pytest.raises(ConfigError) as caught:
        load_config(file, environ={})
    message = str(caught.value)
    assert "NOPE" in message
    assert str(file) in message
    assert "PostgreSQL.Password" in message


def test_wrong_type_names_key_expected_type_and_file(tmp_path: Path) -> None:
    file = write(tmp_path / "a.json", '{"HttpPort": "abc"}')
    with pytest.raises(ConfigError) as caught:
        load_config(file, environ={})
    message = str(caught.value)
    assert '"HttpPort"' in message
    assert "an integer" in message
    assert str(file) in message


@pytest.mark.parametrize("value", ["true", "false"])
def test_bool_is_rejected_for_an_int_option(tmp_path: Path, value: str) -> None:
    file = write(tmp_path / "a.json", f'{{"DicomPort": {value}}}')
    with pytest.raises(ConfigError, match='"DicomPort" must be an integer, got a boolean'):
        load_config(file, environ={})


def test_unknown_key_warning_suggests_closest_key(tmp_path: Path) -> None:
    file = write(tmp_path / "x.json", '{"HttpPrt": 1, "Zzzzzz": 2}')
    warnings = load_config(file, environ={}).unknown_key_warnings([])
    assert warnings == [
        f'unknown configuration key "HttpPrt" in {file} (did you mean "HttpPort"?)',
        f'unknown configuration key "Zzzzzz" in {file}',
    ]


def test_unknown_key_warning_suggests_a_known_section(tmp_path: Path) -> None:
    file = write(tmp_path / "x.json", '{"PostgreSql": {}, "PostgreSQL": {}}')
    warnings = load_config(file, environ={}).unknown_key_warnings(["Postgres"])
    assert len(warnings) == 2
    assert all('(did you mean "Postgres"?)' in warning for warning in warnings)


def test_known_sections_and_core_options_do_not_warn(tmp_path: Path) -> None:
    file = write(tmp_path / "x.json", '{"PostgreSQL": {}, "HttpPort": 1, "DicomWeb": {}}')
    config = load_config(file, environ={})
    assert config.unknown_key_warnings(["PostgreSQL", "DicomWeb"]) == []


def test_lookup_of_defaults_user_values_and_unknown_keys() -> None:
    config = Config.defaults().with_overrides(Custom=1)
    assert config["HttpPort"] == 8042
    assert config["Custom"] == 1
    assert config.get("HttpPort", 1) == 8042
    assert config.get("Missing", "fallback") == "fallback"
    with pytest.raises(KeyError):
        config["Missing"]


def test_with_overrides_replaces_whole_keys_and_leaves_original_alone() -> None:
    base = Config.defaults().with_overrides(PostgreSQL={"Host": "a", "Port": 1}, HttpPort=1)
    changed = base.with_overrides(PostgreSQL={"Host": "b"}, HttpPort=None)
    assert changed.section("PostgreSQL") == {"Host": "b"}
    assert changed["HttpPort"] == 8042
    assert base.section("PostgreSQL") == {"Host": "a", "Port": 1}
    assert base["HttpPort"] == 1


def test_with_overrides_checks_types() -> None:
    with pytest.raises(ConfigError, match="with_overrides"):
        Config.defaults().with_overrides(HttpPort="80")


def test_values_handed_out_are_copies() -> None:
    config = Config.defaults().with_overrides(Plugins=["a.py"], PostgreSQL={"Host": "db"})
    config["DicomModalities"]["pacs"] = ["PACS", "host", 104]
    config["Plugins"].append("b.py")
    config.section("PostgreSQL")["Host"] = "other"
    assert config["DicomModalities"] == {}
    assert config["Plugins"] == ["a.py"]
    assert config.section("PostgreSQL") == {"Host": "db"}
    assert next(o for o in OPTIONS if o.key == "DicomModalities").default == {}


def test_section_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    file = write(tmp_path / "a.json", '{"PostgreSQL": true}')
    with pytest.raises(ConfigError, match=r'a\.json: "PostgreSQL" must be an object'):
        load_config(file, environ={}).section("PostgreSQL")


def test_missing_section_is_empty() -> None:
    assert Config.defaults().section("PostgreSQL") == {}


def test_default_config_text_round_trips_to_the_defaults() -> None:
    parsed = parse_config_text(default_config_text())
    assert parsed == {option.key: option.default for option in OPTIONS}
    assert list(parsed) == [option.key for option in OPTIONS]


def test_default_config_text_documents_every_option() -> None:
    lines = default_config_text().splitlines()
    for option in OPTIONS:
        prefix = f"  {json.dumps(option.key)}: "
        index = next(i for i, line in enumerate(lines) if line.startswith(prefix))
        assert lines[index - 1] == f"  // {option.help}"


def test_defaults_table_is_consistent() -> None:
    keys = [option.key for option in OPTIONS]
    assert len(keys) == len(set(keys))
    assert all(option.help and "\n" not in option.help for option in OPTIONS)
    # with_overrides type-checks, so this fails if a default does not match its own type.
    Config.defaults().with_overrides(**{option.key: option.default for option in OPTIONS})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Name", "Lanthorn"),
        ("DicomAet", "LANTHORN"),
        ("DicomPort", 4242),
        ("HttpPort", 8042),
        ("RemoteAccessAllowed", False),
        ("StableAge", 60),
        ("StorageAccessOnFind", "Always"),
        ("DefaultEncoding", "Latin1"),
        ("HttpThreadsCount", 50),
        ("ConcurrentJobs", 2),
    ],
)
def test_some_defaults_match_orthanc(key: str, value: object) -> None:
    assert Config.defaults()[key] == value


def test_docs_option_table_matches_options() -> None:
    docs = Path(__file__).parents[1] / "docs" / "configuration.md"
    rows = [
        line for line in docs.read_text(encoding="utf-8").splitlines() if line.startswith("| `")
    ]
    expected = [f"| `{o.key}` | `{json.dumps(o.default)}` | {o.help} |" for o in OPTIONS]
    assert rows == expected


def test_orthanc_only_options_give_one_notice_not_a_warning_each(tmp_path: Path) -> None:
    path = tmp_path / "orthanc.json"
    path.write_text('{"SslMinimumProtocolVersion": 4, "ZipLoaderThreads": 0, "HttpPrt": 1}')
    warnings = load_config(path).unknown_key_warnings([])
    assert len(warnings) == 2
    assert '"HttpPrt"' in warnings[0] and "HttpPort" in warnings[0]
    assert warnings[1].endswith("ignored: SslMinimumProtocolVersion, ZipLoaderThreads")


def test_an_implemented_option_is_no_longer_listed_as_orthanc_only() -> None:
    from lanthorn.config import OPTIONS, ORTHANC_ONLY_OPTIONS

    assert not ORTHANC_ONLY_OPTIONS & {option.key for option in OPTIONS}
