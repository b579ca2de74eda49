"""`lw` argument handling in process (the subprocess tests are in test_server_process.py)."""

import json

import pytest

from backend import cli


def test_jobs_run_inline_in_process(workspace, capsys):
    assert cli.main(["jobs", "run", "sleep", "--params", '{"seconds": 0, "steps": 3}',
                     "--workspace", str(workspace)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["artifacts"] == [] and "step 3/3" in err


def test_unknown_kind_lists_the_known_ones_and_exits_2(workspace, capsys):
    assert cli.main(["jobs", "run", "teleport", "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lw: error: unknown job kind 'teleport'") and "sleep" in err


@pytest.mark.parametrize("params,reason", [("{nope", "not valid JSON"), ('{"seconds": -1}', "seconds"),
                                           ('{"colour": 1}', "colour")])
def test_bad_params_are_an_error_with_exit_2(workspace, capsys, params, reason):
    assert cli.main(["jobs", "run", "sleep", "--params", params, "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lw: error:") and reason in err and "Traceback" not in err


def test_workspace_defaults_to_lw_workspace_env(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LW_WORKSPACE", str(tmp_path / "from-env"))
    assert cli.main(["jobs", "run", "sleep", "--params", '{"seconds": 0, "steps": 1}']) == 0
    assert json.loads(capsys.readouterr().out)["workspace"] == str((tmp_path / "from-env").resolve())


def test_help_lists_serve_and_jobs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "jobs" in out


def test_serve_refuses_a_parent_pid_that_does_not_exist(workspace, capsys):
    assert cli.main(["serve", "--parent-pid", "999999999", "--workspace", str(workspace)]) == 2
    assert "--parent-pid 999999999" in capsys.readouterr().err
