"""Nodes write only under their own output folder; a server-sent name with a path in it is refused."""

from __future__ import annotations

import stat

import pytest
from flwr.app import Context, Message, RecordDict

from clients.node_output import check_bare_name, node_file, node_output_dir, with_output_dir
from protocol.pate import StudentSettings

BAD_NAMES = ["../evil", "..", ".", "a/b", "/etc/passwd", "a\\b", "", ".hidden", "x" * 129, "na me", "é"]


def context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=7, node_config=dict(node_config), state=RecordDict(), run_config={})


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_with_a_path_or_odd_characters_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ValueError, match="student.model_name must be a bare file name") as caught:
        check_bare_name(name, "student.model_name")
    assert repr(name) in str(caught.value)


@pytest.mark.parametrize("name", ["../evil", "a/b", "/abs"])
def test_the_student_settings_refuse_a_path_at_the_node_before_training(name: str) -> None:
    # from_record builds StudentSettings at the node, so this check runs there before any work
    with pytest.raises(ValueError, match=r"StudentSettings.model_name=.*must be empty or a bare file name"):
        StudentSettings(model_name=name)


def test_files_go_under_the_configured_folder_created_owner_only(tmp_path) -> None:
    target = tmp_path / "site" / "out"
    path = node_file(context({"output-dir": str(target)}), "student_model", "student.model_name")
    assert path == target.resolve() / "student_model"
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_without_a_configured_folder_a_node_writes_under_its_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert node_output_dir(context({})) == tmp_path.resolve() / "privkit-output"
    with pytest.raises(ValueError, match="node_config 'output-dir' must be a non-empty path, got ''"):
        node_output_dir(context({"output-dir": ""}))


def test_the_simulation_folder_applies_only_where_the_node_sets_none(tmp_path) -> None:
    seen = []

    def handler(msg: Message, ctx: Context) -> Message:
        seen.append(ctx.node_config["output-dir"])
        return msg

    wrapped = with_output_dir(handler, tmp_path / "run")
    wrapped(None, context({}))  # type: ignore[arg-type]
    wrapped(None, context({"output-dir": "/site/own"}))  # type: ignore[arg-type]
    assert seen == [str((tmp_path / "run").resolve()), "/site/own"]
