"""Cross-cutting HTTP: problem+json errors, middleware, auth dependencies, pagination, rate limits."""
