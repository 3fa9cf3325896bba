"""Cross-cutting services with swappable backends: clock and ids, cache, jobs, email, metrics, logging."""
