"""The Modbus TCP source: ``source.py`` polls, ``registers.py`` plans reads and decodes registers,
``client.py`` is the only caller of pymodbus. Configuration and field lessons: README.md."""
