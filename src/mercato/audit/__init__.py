"""Audit log: who changed what, from where, under which request."""
