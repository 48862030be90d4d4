"""Credentials: the encrypted vault, credential requests, delivery to agents."""
