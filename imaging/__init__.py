"""DICOM studies: ingest, de-identification, DICOMweb and viewer.

Installed now so that migrations and URLs have a home; content arrives with its own issue.
"""
