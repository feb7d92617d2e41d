"""Fixtures for the imaging tests: the metadata app's people and project, pydicom's test files."""

from __future__ import annotations

import pytest

from metadata.tests.conftest import api, people, project, samples, template, web  # noqa: F401


def dicom_file(name: str):
    from pathlib import Path

    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    return settings.PORTAL_DATA_DIR
