"""The application: what the ``fgdepth`` commands do, wiring the engine to the adapters.

``cli`` parses arguments and dispatches (``profile`` resolves every command's default profile,
``auto``); ``train`` runs one tracked training run (resume, signals), ``evaluate`` scores a
logged model, ``study``, ``report`` and ``tune`` build on them.
"""
