"""Every storage endpoint for each role: anonymous, stranger, reader, writer, owner, admin.

The owner uploaded the dataset and shared it with the writer (write) and the reader (read); the
stranger and the portal admin hold no grant. Admins see every dataset's description, but data
(chunks, wraps, content) and acting on it (sharing, deleting) need a grant.
"""

from __future__ import annotations

import pytest

from portal.models import AuditEvent
from storage import crypto
from storage.models import Dataset, DatasetState, KeyWrap, UserKey
from storage.tests.helpers import CHUNK, key_header, pieces, put, start

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]
DATA = bytes(range(256)) * (CHUNK // 128)  # two chunks


@pytest.fixture
def shared(team_dataset):
    dataset, key = team_dataset(DATA)
    return dataset.mnemonic, key


def expect(role: str, table: dict[str, int], response) -> None:
    assert response.status_code == table[role], f"{role}: {response.status_code} {response.content[:200]}"


def statuses(anonymous, stranger, reader, writer, owner, admin) -> dict[str, int]:
    return dict(zip(ROLES, (anonymous, stranger, reader, writer, owner, admin), strict=True))


READ_DESCRIPTION = statuses(401, 404, 200, 200, 200, 200)
READ_DATA = statuses(401, 404, 200, 200, 200, 403)
WRITE_DATA = statuses(401, 404, 403, 200, 200, 403)


@pytest.mark.parametrize("role", ROLES)
def test_reading(role, shared, api, people):
    mnemonic, key = shared
    client = api(role)
    base = f"/api/v1/datasets/{mnemonic}/"
    expect(role, READ_DESCRIPTION, client.get(base))
    expect(role, READ_DESCRIPTION, client.get(f"{base}grants/"))
    expect(role, READ_DATA, client.get(f"{base}chunks/"))
    expect(role, READ_DATA, client.get(f"{base}chunks/0/"))
    expect(role, READ_DATA, client.get(f"{base}wraps/"))
    expect(role, READ_DATA, client.get(f"{base}content/", headers=key_header(key)))
    listed = client.get("/api/v1/datasets/")
    if role == "anonymous":
        assert listed.status_code == 401
    else:
        found = [d["mnemonic"] for d in listed.json()["results"]]
        assert found == ([] if role == "stranger" else [mnemonic])
        if role != "stranger":
            expected = {"reader": "read", "admin": None}.get(role, "write")
            assert listed.json()["results"][0]["access"] == expected


@pytest.mark.parametrize("role", ROLES)
def test_wraps_hold_only_the_callers_keys(role, shared, api, people):
    mnemonic, _ = shared
    if READ_DATA[role] != 200:
        return
    wraps = api(role).get(f"/api/v1/datasets/{mnemonic}/wraps/").json()
    assert {w["key_id"] for w in wraps} == set(
        UserKey.objects.filter(user=people[role]).values_list("pk", flat=True)
    )


@pytest.mark.parametrize("role", ROLES)
def test_changing_and_sharing(role, shared, api, people):
    mnemonic, key = shared
    client = api(role)
    base = f"/api/v1/datasets/{mnemonic}/"
    patched = client.patch(base, {"description": "RNA"}, format="json")
    expect(role, statuses(401, 404, 403, 200, 200, 200), patched)
    changed = AuditEvent.objects.filter(action="storage.dataset_changed").first()
    assert (changed is not None) == (patched.status_code == 200)
    if changed:
        assert changed.details["fields"] == ["description"] and changed.actor == people[role]
    share = client.post(
        f"{base}grants/", {"user": "stranger", "level": "read", "key": key.hex()}, format="json"
    )
    expect(role, statuses(401, 404, 403, 201, 201, 403), share)
    revoke = client.delete(f"{base}grants/{people['reader'].pk}/")
    expect(role, statuses(401, 404, 403, 204, 204, 403), revoke)
    # Upload endpoints of a finished dataset: refused as a conflict for those who may write.
    conflict = statuses(401, 404, 403, 409, 409, 403)
    expect(role, conflict, put(client, mnemonic, 0, pieces(DATA)[0]))
    expect(role, conflict, client.post(f"{base}finish/", {}, format="json"))
    expect(role, conflict, client.post(f"{base}key/", {"key": key.hex()}, format="json"))


@pytest.mark.parametrize("role", ROLES)
def test_deleting_and_restoring(role, shared, api):
    mnemonic, _ = shared
    client = api(role)
    base = f"/api/v1/datasets/{mnemonic}/"
    expect(role, statuses(401, 404, 403, 204, 204, 403), client.delete(base))
    if Dataset.objects.get(mnemonic=mnemonic).state != DatasetState.DELETED:
        api("owner").delete(base)
    expect(role, statuses(401, 404, 403, 200, 200, 403), client.post(f"{base}restore/"))


@pytest.mark.parametrize("role", ROLES)
def test_uploading_into_someone_elses_unfinished_upload(role, keyed, api):
    mnemonic = start(api("owner"), DATA).json()["mnemonic"]
    response = put(api(role), mnemonic, 0, pieces(DATA)[0])
    # Only the owner holds a grant on an unfinished upload.
    expect(role, statuses(401, 404, 404, 404, 200, 403), response)


@pytest.mark.parametrize("role", ROLES)
def test_starting_uploads_and_duplicates(role, shared, api):
    mnemonic, _ = shared
    client = api(role)
    response = start(client, DATA)
    expect(role, statuses(401, 201, 201, 201, 201, 201), response)
    if response.status_code == 201:
        seen = [d["mnemonic"] for d in response.json()["duplicates"]]
        assert seen == ([] if role == "stranger" else [mnemonic])  # admins see every description


@pytest.mark.parametrize("role", ROLES)
def test_keys(role, keyed, api, people, private_keys):
    client = api(role)
    owners_key = UserKey.objects.get(user=people["owner"])
    listed = client.get("/api/v1/keys/")
    if role == "anonymous":
        assert listed.status_code == 401
    else:
        users = {k["user"] for k in listed.json()["results"]}
        assert users == (
            {people[r].username for r in ROLES if r != "anonymous"}
            if role == "admin"
            else {people[role].username}
        )
    new = crypto.public_key_pem(private_keys["root"].public_key())
    expect(
        role,
        statuses(401, 201, 201, 201, 201, 201),
        client.post("/api/v1/keys/", {"name": "new", "public_key": new}, format="json"),
    )
    expect(role, statuses(401, 404, 404, 404, 200, 200), client.get(f"/api/v1/keys/{owners_key.pk}/"))
    expect(
        role, statuses(401, 404, 404, 404, 403, 409), client.post(f"/api/v1/keys/{owners_key.pk}/activate/")
    )
    expect(role, statuses(401, 404, 404, 404, 200, 200), client.post(f"/api/v1/keys/{owners_key.pk}/revoke/"))


@pytest.mark.parametrize("role", ROLES)
def test_root_keys_are_for_admins(role, keyed, api, private_keys):
    client = api(role)
    expect(role, statuses(401, 403, 403, 403, 403, 200), client.get("/api/v1/root-keys/"))
    pem = crypto.public_key_pem(private_keys["stranger"].public_key())
    response = client.post("/api/v1/root-keys/", {"name": "spare", "public_key": pem}, format="json")
    expect(role, statuses(401, 403, 403, 403, 403, 201), response)


def test_revoking_a_key_removes_its_wraps_and_new_keys_wait_for_activation(shared, api, people, private_keys):
    mnemonic, _ = shared
    reader_key = UserKey.objects.get(user=people["reader"])
    assert KeyWrap.objects.filter(user_key=reader_key).exists()
    assert api("reader").post(f"/api/v1/keys/{reader_key.pk}/revoke/").status_code == 200
    assert not KeyWrap.objects.filter(user_key=reader_key).exists()
    assert api("reader").get(f"/api/v1/datasets/{mnemonic}/wraps/").json() == []
    pem = crypto.public_key_pem(private_keys["root"].public_key())
    registered = api("reader").post("/api/v1/keys/", {"name": "new laptop", "public_key": pem}, format="json")
    assert registered.status_code == 201 and registered.json()["state"] == "pending"
    again = api("reader").post("/api/v1/keys/", {"name": "again", "public_key": pem}, format="json")
    assert again.status_code == 409
    activated = api("admin").post(f"/api/v1/keys/{registered.json()['id']}/activate/")
    assert activated.status_code == 200 and activated.json()["state"] == "active"


def test_bad_keys_and_bodies_get_clear_errors(keyed, api, small_rsa_key):
    owner = api("owner")
    small = crypto.public_key_pem(small_rsa_key.public_key())
    for body in ({"name": "x", "public_key": "not a key"}, {"name": "x", "public_key": small}, {"name": "x"}):
        response = owner.post("/api/v1/keys/", body, format="json")
        assert response.status_code == 400 and response.json()["detail"], body
    mnemonic = start(owner, DATA).json()["mnemonic"]
    too_big = owner.put(
        f"/api/v1/datasets/{mnemonic}/chunks/0/",
        b"x" * (CHUNK + 1),
        content_type="application/octet-stream",
        headers={"X-Content-SHA256": "0" * 64},
    )
    assert too_big.status_code == 413
    for body in (
        {"file_name": "a/b.txt", "size": 1},
        {"file_name": "x", "size": -1},
        {"file_name": "x", "size": 10, "chunk_size": 10},
        {"file_name": "x", "size": 10, "project": 999999},
    ):
        response = owner.post("/api/v1/datasets/", body, format="json")
        assert response.status_code == 400 and response.json()["detail"], body
    junk = owner.get("/api/v1/datasets/", {"state": "bogus", "project": "²"})
    assert junk.status_code == 400
    assert owner.get("/api/v1/datasets/duplicates/", {"first_chunk_sha256": "zz"}).status_code == 400


@pytest.mark.parametrize("role", ROLES)
def test_metadata_link_cells_name_datasets_only_for_those_who_see_them(role, shared, api):
    mnemonic, _ = shared
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    response = api(role).get(f"/api/v1/links/dataset/?ids={dataset.pk},987654")
    if role == "anonymous":
        assert response.status_code == 401
        return
    found, missing = response.json()["results"]
    assert missing == {"id": 987654, "found": False}
    if role == "stranger":
        assert found == {"id": dataset.pk, "found": False}
    else:
        assert found["found"] and found["url"] == f"/datasets/{mnemonic}/" and found["state"] == "Available"
        assert found["object"] == "storage.dataset" and mnemonic in found["label"]
