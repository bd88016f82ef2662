"""Input files: hand-written YAML read with the line of every key, and what is wrong with
it said as ``file:line: key.path: message``.

The mapping and the master data are files a person writes by hand; this package is the
one place that reads such a file and reports its problems, and it knows nothing about
machines or materials (which keys exist is a schema's business, which references must
resolve a loader's). The data model, in the order a file goes through it:

- ``read.YamlDoc``: one parsed file. ``tree`` is ruamel.yaml's round-trip tree, which
  knows the line of every key; ``data`` is the same content as plain Python data
  (``${NAME}`` expanded, names such as ``0010`` kept as text, numbers as ``Decimal``),
  which is what pydantic validates. A ``Loc`` (pydantic's tuple of keys and indices)
  leads through both, so ``doc.error(loc, message)`` puts any problem at its line.
- ``validate.Loaded``: a file validated against a pydantic model: its document, the
  model (the whole file, or what is valid once the broken entries are left out, so that
  reference checks still run) and every problem found, in reading order.
- ``errors.FileError``: one problem at one line under a dotted key path;
  ``errors.InputFileError``: the exception carrying all of a file's problems.
- ``messages``: pydantic's errors in plain words (``expected a whole number, got
  'abc'``), with secrets never shown, and the words the loaders' own checks share.

Modules here import in one direction: errors ← messages ← read ← validate.
"""
