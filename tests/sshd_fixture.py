"""Placeholder plugin module: the real-sshd fixture for the ssh tier lands here."""
