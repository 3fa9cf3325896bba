"""The demo store: data and loader used by ``mercato serve --demo`` and ``mercato seed --demo``."""
