"""Encrypted dataset storage, chunked uploads and sharing.

Installed now so that migrations and URLs have a home; content arrives with its own issue.
"""
