"""One module per cause: format, corruption, version (and safety), hardware,
architecture, training (optimizer), preprocessing. Each exposes ``check(ctx)``."""
