"""What a user can get wrong: one family of exceptions, each message one line for the user.

The ``fgdepth`` command prints a ``UserError`` as ``fgdepth: MESSAGE`` and exits with status 2;
any other exception is a bug and keeps its traceback. Raise the most specific kind:

- ``ConfigError``: an experiment, option or setting that cannot run;
- ``DataError``: a dataset, image or file of data that cannot be used as it is;
- ``NotFound``: something named (a file, run, model or experiment) that does not exist; also a
  ``FileNotFoundError``.

Other parts of fgdepth subclass these (a checkpoint that cannot be read is a ``DataError``).
This module imports nothing: every layer may raise its errors.
"""

from __future__ import annotations


class UserError(ValueError):
    """Input that cannot be used as it is; the message is one line for the user."""


class ConfigError(UserError):
    """A configuration that cannot run; the message is one line for the user."""


class DataError(UserError):
    """A dataset that cannot be used as it is; the message is meant for the user."""


class NotFound(UserError, FileNotFoundError):
    """Something the user named does not exist (a file, a run, a model, an experiment)."""
