"""Whole-slide images: ingest, tile pyramids, viewer and AI.

Installed now so that migrations and URLs have a home; content arrives with its own issue.
"""
