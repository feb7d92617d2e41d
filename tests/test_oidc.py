"""OpenID Connect sign-in end to end, against a real provider running beside the portal.

The provider is a second portal process with its own database, acting as an OpenID provider
through django-oauth-toolkit (PORTAL_OIDC_IDP_KEY_FILE). The portal under test runs with
OIDC_ENABLED and signs users in through it: browser redirects, login form at the provider,
authorization code with PKCE, ID token signature check (JWKS), userinfo, account creation.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from conftest import REPO_ROOT, free_port, start_asgi_server
from portal.models import AuditEvent, User

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

CLIENT_ID = "portal-under-test"
CLIENT_SECRET = "s3cret-for-the-test-client"
IDP_DB = "portal_idp_test"


def _admin_url() -> str:
    return settings.DATABASE_URL.rsplit("/", 1)[0] + "/postgres"


@pytest.fixture(scope="module")
def identity_provider(service_env, service_logs, tmp_path_factory):
    """A second portal acting as OpenID provider, with user alice (group portal-admins)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path_factory.mktemp("idp") / "oidc.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{IDP_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{IDP_DB}"')
    env = {**service_env, "PORTAL_TEST_DATABASE_NAME": IDP_DB,
           "PORTAL_OIDC_IDP_KEY_FILE": str(key_file)}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=REPO_ROOT,
                   env=env, check=True)
    portal_port = free_port()
    setup = textwrap.dedent(f"""
        import django; django.setup()
        from django.contrib.auth.models import Group
        from oauth2_provider.models import Application
        from portal.models import User
        alice = User.objects.create_user("alice", password="alice-pw-123", email="alice@hospital.org",
                                         first_name="Alice", last_name="Liddell")
        alice.groups.add(Group.objects.create(name="portal-admins"))
        User.objects.create_user("bob", password="bob-pw-123", email="bob@hospital.org")
        Application.objects.create(
            name="portal", client_id="{CLIENT_ID}", client_secret="{CLIENT_SECRET}",
            client_type="confidential", authorization_grant_type="authorization-code",
            redirect_uris="http://127.0.0.1:{portal_port}/oidc/callback/", algorithm="RS256",
            skip_authorization=True)
    """)
    subprocess.run([sys.executable, "-c", setup], cwd=REPO_ROOT, env={**env, "DJANGO_SETTINGS_MODULE":
                   "portal.settings.test"}, check=True)
    server, _ = start_asgi_server(env, service_logs, name="idp")
    idp = f"http://localhost:{server.proc.args[server.proc.args.index('--port') + 1]}"
    yield {"url": idp, "portal_port": portal_port}
    server.stop()
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{IDP_DB}" WITH (FORCE)')


@pytest.fixture(scope="module")
def oidc_portal(identity_provider, service_env, service_logs):
    idp = identity_provider["url"]
    env = {
        **service_env,
        "OIDC_ENABLED": "true",
        "OIDC_PROVIDER_NAME": "Hospital login",
        "OIDC_RP_CLIENT_ID": CLIENT_ID,
        "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{idp}/o/authorize/",
        "OIDC_OP_TOKEN_ENDPOINT": f"{idp}/o/token/",
        "OIDC_OP_USER_ENDPOINT": f"{idp}/o/userinfo/",
        "OIDC_OP_JWKS_ENDPOINT": f"{idp}/o/.well-known/jwks.json",
        "OIDC_STAFF_CLAIM": "groups",
        "OIDC_STAFF_VALUES": "portal-admins",
    }
    server, url = start_asgi_server(env, service_logs, name="oidc-portal",
                                    port=identity_provider["portal_port"])
    yield url
    server.stop()


def sign_in(portal: str, username: str, password: str) -> requests.Response:
    """What a browser does: follow redirects, fill in the provider's login form."""
    browser = requests.Session()
    login_page = browser.get(f"{portal}/accounts/login/")
    assert "Sign in with Hospital login" in login_page.text
    start = browser.get(f"{portal}/oidc/authenticate/?next=/profile/")
    assert urlparse(start.url).netloc.startswith("localhost"), "not sent to the provider"
    query = parse_qs(urlparse(start.history[0].headers["Location"]).query)
    assert query["code_challenge_method"] == ["S256"], "PKCE must be used"
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', start.text).group(1)
    return browser.post(start.url, data={
        "csrfmiddlewaretoken": csrf, "username": username, "password": password,
        "next": parse_qs(urlparse(start.url).query)["next"][0],
    })


def test_first_sign_in_creates_a_staff_account_from_claims(oidc_portal):
    final = sign_in(oidc_portal, "alice", "alice-pw-123")
    assert final.status_code == 200
    assert final.url == f"{oidc_portal}/profile/"
    assert "Alice Liddell" in final.text and "Hospital login" in final.text

    user = User.objects.get(email="alice@hospital.org")
    assert user.username == "alice" and user.oidc_subject
    assert user.is_staff, "group portal-admins makes staff"
    assert not user.has_usable_password()
    assert AuditEvent.objects.filter(action="auth.user_created", actor=user).count() == 1
    login = AuditEvent.objects.get(action="auth.login", actor=user)
    assert login.details["method"] == "oidc"

    again = sign_in(oidc_portal, "alice", "alice-pw-123")
    assert again.url == f"{oidc_portal}/profile/"
    assert User.objects.filter(email="alice@hospital.org").count() == 1
    assert AuditEvent.objects.filter(action="auth.login", actor=user).count() == 2


def test_users_without_the_staff_claim_are_not_staff(oidc_portal):
    final = sign_in(oidc_portal, "bob", "bob-pw-123")
    assert final.url == f"{oidc_portal}/profile/"
    assert User.objects.get(email="bob@hospital.org").is_staff is False


def test_local_sign_in_still_works_beside_oidc(oidc_portal):
    User.objects.create_user("localuser", password="local-pw-123")
    browser = requests.Session()
    page = browser.get(f"{oidc_portal}/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    final = browser.post(f"{oidc_portal}/accounts/login/", data={
        "csrfmiddlewaretoken": csrf, "username": "localuser", "password": "local-pw-123"})
    assert final.url == f"{oidc_portal}/"
    assert AuditEvent.objects.get(action="auth.login").details["method"] == "password"


def test_a_refused_sign_in_is_audited(oidc_portal):
    browser = requests.Session()
    start = browser.get(f"{oidc_portal}/oidc/authenticate/", allow_redirects=False)
    state = parse_qs(urlparse(start.headers["Location"]).query)["state"][0]
    denied = browser.get(f"{oidc_portal}/oidc/callback/?error=access_denied&state={state}")
    assert denied.status_code == 200 and "/accounts/login/" in denied.url
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.details == {"method": "oidc", "reason": "access_denied"}
