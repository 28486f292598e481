"""Command-line tools built on the public API only (``import scaproust``).

``scaproust-cat`` (``python -m scaproust cat``): a nanocat/nngcat-compatible command line
(docs/CLI.md); ``python -m scaproust diagram``: one machine's diagram.
"""
