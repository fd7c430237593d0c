"""Plotly figure builders, shared by the app, the command-line report and the tests.

``style`` is the one house style (palette, a method's colour and label from the registry, layouts); the other
modules hold one screen's figures each (``sweep``, ``layers``, ``sparsity``) or one paper's figures for the
Methods screen and its check (``id``, ``ispasp``). A new method's figures are a new module here that imports
``style``; nothing else in the package changes.
"""
