"""`manage.py add_root_key`: public keys only; new datasets are wrapped for the key."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from storage import crypto
from storage.models import KeyWrap, RootKey
from storage.tests.helpers import upload

pytestmark = pytest.mark.django_db


def test_add_root_key(keyed, api, private_keys, tmp_path):
    upload(api("owner"), b"x" * 1000)
    public = tmp_path / "root.pub"
    public.write_text(crypto.public_key_pem(private_keys["stranger"].public_key()))
    out = io.StringIO()
    call_command("add_root_key", "recovery-2026", str(public), stdout=out)
    assert "registered" in out.getvalue() and "1 existing dataset(s) are not wrapped" in out.getvalue()
    key = RootKey.objects.get(name="recovery-2026")
    upload(api("owner"), b"y" * 1000)
    assert KeyWrap.objects.filter(root_key=key).count() == 1  # the new dataset only
    with pytest.raises(CommandError, match="registered already"):
        call_command("add_root_key", "again", str(public), stdout=io.StringIO())
    private = tmp_path / "root.pem"
    private.write_text(crypto.private_key_pem(private_keys["stranger"]))
    with pytest.raises(CommandError, match="That is a private key"):
        call_command("add_root_key", "oops", str(private), stdout=io.StringIO())
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("add_root_key", "missing", str(tmp_path / "nope.pem"), stdout=io.StringIO())
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(CommandError, match="Not a usable public key"):
        call_command("add_root_key", "garbage", str(garbage), stdout=io.StringIO())
