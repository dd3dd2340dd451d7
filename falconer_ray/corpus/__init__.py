"""The corpus: reading its files into rows with per-row errors (`read`), counting it
cheaply (`count`), sampling it for the teacher (`sample`), and finding repeated ids."""
