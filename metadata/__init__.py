"""Projects, samples and their metadata as an append-only event timeline.

Installed now so that migrations and URLs have a home; content arrives with its own issue.
"""
