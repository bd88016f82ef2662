"""``python -m gateway.cli``: the same as the ``gateway`` command."""

from gateway.cli.main import app

app(prog_name="gateway")
