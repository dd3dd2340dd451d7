"""The corpus: reading its files into rows with per-row errors (`read`), counting it
cheaply (`count`), sampling it for the teacher (`sample`), and finding repeated ids;
files in object stores are read through `remote`."""


class CorpusError(ValueError):
    """The corpus path or options cannot be read; the message says what to fix."""
