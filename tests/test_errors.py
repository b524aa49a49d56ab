"""``fgdepth.errors``: one family of user errors, printed as one line; anything else a bug."""

import pytest

from fgdepth.app import cli
from fgdepth.errors import ConfigError, DataError, NotFound, UserError


def test_every_kind_of_bad_input_is_a_user_error():
    from fgdepth.data.disk import OutputRefused
    from fgdepth.engine.checkpoint import CheckpointError
    from fgdepth.tuning import NoTrialCompleted

    for kind in (ConfigError, DataError, NotFound, OutputRefused, CheckpointError,
                 NoTrialCompleted):  # fmt: skip
        assert issubclass(kind, UserError), kind
    assert issubclass(NotFound, FileNotFoundError)  # callers that catch it keep working
    import fgdepth.config
    import fgdepth.data

    assert fgdepth.config.ConfigError is ConfigError and fgdepth.data.DataError is DataError


def _failing_report(exc):
    def run(args):
        raise exc

    return run


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    message = "no such thing\n  (a library's second line)"
    monkeypatch.setattr(cli, "_report", _failing_report(NotFound(message)))
    assert cli.main(["report"]) == 2
    assert capsys.readouterr().err == "fgdepth: no such thing (a library's second line)\n"


def test_anything_else_is_a_bug_and_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(cli, "_report", _failing_report(KeyError("a bug")))
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["report"])


def test_a_usage_error_is_one_line_too(capsys):
    assert cli.main(["train", "--profile", "huge"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fgdepth: argument --profile: invalid choice: 'huge'")
    assert err.endswith("(see: fgdepth train --help)\n") and err.count("\n") == 1


def test_help_describes_the_tool_to_its_user(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert cli.DESCRIPTION in " ".join(out.split())
    assert "dispatch" not in out and "fgdepth.app" not in out
