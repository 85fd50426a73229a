"""The store: SQLAlchemy models, engines and migrations."""
