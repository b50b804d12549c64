"""The toolkit's version, in a module of its own: every layer records it (manifests, reports, graph metadata), and
importing it from here rather than from the package `__init__` (which names the public API's modules) keeps
those imports free of cycles. pyproject.toml reads it from here too (`[tool.setuptools.dynamic]`)."""

__version__ = "0.1.0"
