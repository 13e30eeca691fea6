"""Why the experiment refuses to run: the errors its checks raise.

Every refusal happens before a run trains (or, for a run folder, before anything in it is
touched), carries one message that says what is wrong and what to do, and is a ``ValueError``, so
a caller from Python catches it like any other bad argument. The command lines (``hf-carto`` and
the recipes) print the message alone and exit with status 2.
"""

from __future__ import annotations

__all__ = ["ExperimentError", "InputDataError", "RunFolderError", "SettingsError"]


class ExperimentError(ValueError):
    """A run of the experiment that cannot work, refused with a message saying why."""


class SettingsError(ExperimentError):
    """The arguments or the preset ask for something that cannot work (a value out of range, two
    options that exclude each other, an unknown preset, a tokenizer the run cannot use)."""


class RunFolderError(ExperimentError):
    """The output folder cannot be used: it holds a run with other settings, files no run of this
    experiment wrote, or another live run holds it."""


class InputDataError(ExperimentError):
    """What the run reads cannot serve it: a file that is empty, unreadable or without usable
    text, too little held-out text for the evaluation sets, or a Hub source out of reach."""
