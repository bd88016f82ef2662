"""The OPC UA source (``source.py``); its configuration and field lessons are in README.md."""
