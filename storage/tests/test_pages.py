"""The storage pages for every role: datasets list and page, upload page, keys page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from metadata.tests.conftest import project, template  # noqa: F401 - fixtures: a project with members
from storage import crypto
from storage.models import Dataset, DatasetState, Grant, GrantLevel, KeyState, UserKey
from storage.tests.helpers import upload

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "stranger", "reader", "writer", "owner", "admin")


@pytest.fixture
def dataset(keyed, api, people):
    """An available dataset of the owner; the reader may read it, the writer change it."""
    mnemonic = upload(api("owner"), b"some clinical data " * 5000, name="cohort.csv")
    found = Dataset.objects.get(mnemonic=mnemonic)
    found.description = "Blood counts of the 2024 cohort"
    found.save(update_fields=["description"])
    Grant.objects.create(
        dataset=found, user=people["reader"], level=GrantLevel.READ, granted_by=people["owner"]
    )
    Grant.objects.create(
        dataset=found, user=people["writer"], level=GrantLevel.WRITE, granted_by=people["owner"]
    )
    return found


def detail_url(dataset) -> str:
    return reverse("storage:dataset-detail", args=[dataset.mnemonic])


@pytest.mark.parametrize("role", ROLES)
def test_dataset_page_per_role(role, dataset, web):
    response = web(role).get(detail_url(dataset))
    if role == "anonymous":
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        return
    if role == "stranger":
        assert response.status_code == 404
        return
    assert response.status_code == 200
    html = response.content.decode()
    assert "Blood counts of the 2024 cohort" in html and dataset.mnemonic in html
    assert 'data-grant="reader"' in html  # who has access
    assert "Upload finished" in html  # history
    can_read = role in ("reader", "writer", "owner")
    can_write = role in ("writer", "owner")
    assert ('id="download-button"' in html) == can_read
    assert ('id="share-form"' in html) == can_write
    assert ('id="delete-form"' in html) == can_write
    assert ('name="action" value="details"' in html) == can_write
    assert ("Take away access" in html) == can_write
    if role == "admin":
        assert "You can see this dataset's description but not its data" in html


@pytest.mark.parametrize("role", ROLES)
def test_dataset_list_per_role(role, dataset, web):
    response = web(role).get(reverse("storage:dataset-list"))
    if role == "anonymous":
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        return
    assert response.status_code == 200
    html = response.content.decode()
    assert (f'data-dataset="{dataset.mnemonic}"' in html) == (role != "stranger")
    if role == "admin":
        assert "Description only" in html


def test_list_search_filters_and_query_count(dataset, api, web, django_assert_max_num_queries):
    other = upload(api("owner"), b"other bytes" * 100, name="scan.tiff")
    client = web("owner")
    url = reverse("storage:dataset-list")
    html = client.get(url, {"q": "cohort"}).content.decode()
    assert dataset.mnemonic in html and other not in html
    html = client.get(url, {"q": dataset.mnemonic[:8]}).content.decode()
    assert dataset.mnemonic in html
    assert other not in client.get(url, {"access": "write", "q": "cohort"}).content.decode()
    reader_html = web("reader").get(url, {"access": "mine"}).content.decode()
    assert dataset.mnemonic not in reader_html
    assert dataset.mnemonic in web("reader").get(url, {"access": "read"}).content.decode()
    assert dataset.mnemonic not in web("reader").get(url, {"access": "write"}).content.decode()
    assert dataset.mnemonic not in client.get(url, {"state": "deleted"}).content.decode()
    for n in range(5):
        upload(api("owner"), bytes([n]) * 1000, name=f"more-{n}.bin")
    with django_assert_max_num_queries(12):
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("role", ("reader", "admin", "writer"))
def test_delete_and_restore_need_write_access(role, dataset, web):
    client = web(role)
    response = client.post(detail_url(dataset), {"action": "delete"}, follow=True)
    dataset.refresh_from_db()
    if role == "writer":
        assert dataset.state == DatasetState.DELETED
        assert "is in the recycle bin" in response.content.decode()
        client.post(detail_url(dataset), {"action": "restore"})
        dataset.refresh_from_db()
        assert dataset.state == DatasetState.AVAILABLE
    elif role == "admin":  # admins see the dataset but hold no grant: refused with a message
        assert dataset.state == DatasetState.AVAILABLE
        assert "You have no write access" in response.content.decode()
    else:  # readers may not delete: the dataset is hidden from them for that action
        assert response.status_code == 404 and dataset.state == DatasetState.AVAILABLE


def test_stranger_cannot_act_on_a_dataset(dataset, web):
    for action in ("delete", "restore", "details", "revoke"):
        assert web("stranger").post(detail_url(dataset), {"action": action}).status_code == 404
    assert web("anonymous").post(detail_url(dataset), {"action": "delete"}).status_code == 302


def test_revoke_from_the_page(dataset, web, people):
    response = web("owner").post(
        detail_url(dataset), {"action": "revoke", "user": str(people["reader"].pk)}, follow=True
    )
    assert "reader no longer has access" in response.content.decode()
    assert not Grant.objects.filter(dataset=dataset, user=people["reader"]).exists()
    refused = web("writer").post(
        detail_url(dataset), {"action": "revoke", "user": str(people["owner"].pk)}, follow=True
    )
    assert "access cannot be revoked" in refused.content.decode()
    assert web("reader").get(detail_url(dataset)).status_code == 404


def test_edit_details(dataset, web, project):  # noqa: F811 - the imported fixture
    response = web("writer").post(
        detail_url(dataset),
        {"action": "details", "name": "Cohort 2024", "description": "New text", "project": str(project.pk)},
        follow=True,
    )
    assert "The details were saved." in response.content.decode()
    dataset.refresh_from_db()
    assert (dataset.name, dataset.description, dataset.project) == ("Cohort 2024", "New text", project)
    assert "Details changed" in response.content.decode()
    blank = web("owner").post(detail_url(dataset), {"action": "details", "name": ""})
    assert blank.status_code == 400 and "This field is required" in blank.content.decode()
    # The reader cannot change it (the dataset is hidden from them for changing).
    assert web("reader").post(detail_url(dataset), {"action": "details", "name": "x"}).status_code == 404


@pytest.mark.parametrize("role", ROLES)
def test_upload_page(role, keyed, web, people):
    response = web(role).get(reverse("storage:dataset-upload"))
    if role == "anonymous":
        assert response.status_code == 302
        return
    assert response.status_code == 200
    assert 'id="dropzone"' in response.content.decode()


def test_upload_page_without_a_key_says_what_to_do(people, web):
    html = web("owner").get(reverse("storage:dataset-upload")).content.decode()
    assert 'id="dropzone"' not in html and "You need a key before you can upload" in html
    UserKey.objects.create(user=people["owner"], name="laptop", public_key="x", fingerprint="0" * 64)
    html = web("owner").get(reverse("storage:dataset-upload")).content.decode()
    assert "waiting for a portal administrator to activate it" in html


# --- keys -------------------------------------------------------------------------------------------


def pem_of(private_key) -> str:
    return crypto.public_key_pem(private_key.public_key())


@pytest.mark.parametrize("role", ROLES)
def test_keys_page_per_role(role, keyed, web, people):
    response = web(role).get(reverse("storage:key-list"))
    if role == "anonymous":
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        return
    html = response.content.decode()
    assert response.status_code == 200
    assert f"{role}&#x27;s laptop" in html or f"{role}'s laptop" in html
    others = [r for r in ("stranger", "reader", "writer", "owner") if r != role]
    assert not any(f"{other}&#x27;s laptop" in html for other in others)
    assert ('id="pending"' in html) == (role == "admin")


def test_register_a_public_key_made_elsewhere(people, web, user_key, small_rsa_key, settings):
    settings.STORAGE_KEYS_NEED_ACTIVATION = True
    client = web("reader")
    url = reverse("storage:key-list")
    response = client.post(
        url, {"action": "register", "name": "cluster", "public_key": pem_of(user_key)}, follow=True
    )
    assert "must activate it" in response.content.decode()
    key = UserKey.objects.get(user=people["reader"])
    assert key.state == KeyState.PENDING and key.name == "cluster"
    again = client.post(url, {"action": "register", "name": "again", "public_key": pem_of(user_key)})
    assert again.status_code == 400 and "You registered this key already" in again.content.decode()
    small = client.post(url, {"action": "register", "name": "small", "public_key": pem_of(small_rsa_key)})
    assert small.status_code == 400 and "4096" in small.content.decode()
    private = client.post(
        url, {"action": "register", "name": "oops", "public_key": crypto.private_key_pem(user_key)}
    )
    assert private.status_code == 400 and "This is a private key" in private.content.decode()
    empty = client.post(url, {"action": "register", "name": "", "public_key": ""})
    assert empty.status_code == 400 and UserKey.objects.filter(user=people["reader"]).count() == 1


def test_activation_and_revocation(people, web, user_key, settings):
    settings.STORAGE_KEYS_NEED_ACTIVATION = True
    url = reverse("storage:key-list")
    web("reader").post(url, {"action": "register", "name": "laptop", "public_key": pem_of(user_key)})
    key = UserKey.objects.get(user=people["reader"])
    # The owner of the key cannot activate it; a stranger cannot even find it.
    assert web("reader").post(url, {"action": "activate", "key": str(key.pk)}).status_code == 403
    assert web("stranger").post(url, {"action": "activate", "key": str(key.pk)}).status_code == 404
    assert web("stranger").post(url, {"action": "revoke", "key": str(key.pk)}).status_code == 404
    admin_page = web("admin").get(url).content.decode()
    assert f'data-pending="{key.pk}"' in admin_page
    done = web("admin").post(url, {"action": "activate", "key": str(key.pk)}, follow=True)
    assert "is active" in done.content.decode()
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE
    revoked = web("reader").post(url, {"action": "revoke", "key": str(key.pk)}, follow=True)
    assert "is revoked" in revoked.content.decode()
    key.refresh_from_db()
    assert key.state == KeyState.REVOKED
    twice = web("reader").post(url, {"action": "revoke", "key": str(key.pk)}, follow=True)
    assert "revoked already" in twice.content.decode()


def test_nav_links(people, web):
    html = web("reader").get(reverse("storage:dataset-list")).content.decode()
    assert 'href="/datasets/" aria-current="page">Datasets' in html and 'href="/keys/"' in html
