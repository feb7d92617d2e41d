"""deploy/: the files parse, use only settings that exist, every setting is documented, and the
production image's entrypoint, settings and nginx configuration serve the portal for real.

Docker and Kubernetes do not run here, so the containers' commands run as plain processes: the
same entrypoint script, production settings and nginx configuration, on the test's servers.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, ManagedProcess, free_port

DEPLOY = REPO_ROOT / "deploy"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]+$")


# --- what the code reads, what deploy/ sets, what the operator page documents ----------------------


def variables_read_by_code() -> set[str]:
    """Environment variables read by the portal's Python code, the entrypoint and `./dev`."""
    python = re.compile(
        r"""(?:env\.\w+|environ\.get|environ\.setdefault|environ\.pop|environ)\(?\[?\s*["']([A-Z][A-Z0-9_]+)["']"""
    )
    shell = re.compile(r"\$\{([A-Z][A-Z0-9_]+)")
    names: set[str] = set()
    sources = [*REPO_ROOT.glob("manage.py"), *REPO_ROOT.glob("benchmarks/*.py")]
    for app in ("portal", "metadata", "storage", "pathology", "imaging"):
        sources += [p for p in (REPO_ROOT / app).rglob("*.py") if "tests" not in p.parts]
    for path in sources:
        names |= set(python.findall(path.read_text()))
    for path in (DEPLOY / "entrypoint.sh", REPO_ROOT / "dev"):
        names |= set(shell.findall(path.read_text()))
    return names


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def k8s_documents() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def compose_interpolated() -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", (DEPLOY / "docker-compose.yml").read_text()))


def documented_variables() -> set[str]:
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", OPERATIONS.read_text(), flags=re.M))


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def variables_set_by_deploy() -> dict[str, set[str]]:
    """Every variable deploy/ hands to a portal container, by file."""
    found: dict[str, set[str]] = {"env.example": set(env_example())}
    portal_services = {name: svc for name, svc in compose()["services"].items()
                       if name not in ("postgres", "redis", "nginx")}
    found["docker-compose.yml"] = {k for svc in portal_services.values() for k in svc.get("environment", {})}
    k8s: set[str] = set()
    for doc in k8s_documents():
        if doc["kind"] == "ConfigMap":
            k8s |= set(doc["data"])
        elif doc["kind"] == "Secret":
            k8s |= set(doc.get("stringData", {})) | set(doc.get("data", {}))
        elif doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                k8s |= {e["name"] for e in container.get("env", [])}
    found["k8s"] = k8s
    return found


def test_every_variable_deploy_sets_is_read_by_the_portal():
    known = variables_read_by_code()
    compose_only = compose_interpolated()
    for source, names in variables_set_by_deploy().items():
        assert all(ENV_NAME.match(n) for n in names), source
        unknown = names - known - (compose_only if source == "env.example" else set())
        assert not unknown, f"{source} sets variables nothing reads: {sorted(unknown)}"


def test_every_variable_is_documented_and_every_documented_one_exists():
    read = variables_read_by_code() | compose_interpolated()
    documented = documented_variables()
    assert not read - documented, f"undocumented in docs/operations.md: {sorted(read - documented)}"
    assert not documented - read, f"documented but never read: {sorted(documented - read)}"


def test_the_readme_points_to_the_operator_page():
    assert "docs/operations.md" in (REPO_ROOT / "README.md").read_text()


# --- docker compose --------------------------------------------------------------------------------


def test_compose_stack_has_every_role():
    services = compose()["services"]
    roles = {"nginx", "web", "worker", "gpu-worker", "beat", "dicom", "postgres", "redis", "migrate", "ohif"}
    assert roles <= set(services)
    for role in ("web", "worker", "gpu-worker", "beat", "migrate"):
        service = services[role]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert "portal-data:/var/lib/portal" in service["volumes"], role
        assert service["environment"]["DATABASE_URL"].startswith("postgres://")
        assert service["environment"]["REDIS_URL"].startswith("redis://")
    assert services["web"]["command"] == ["web"]
    assert services["worker"]["environment"]["PORTAL_WORKER_QUEUES"] == "default,tiles,crypto"
    gpu = services["gpu-worker"]
    assert gpu["environment"]["PORTAL_WORKER_QUEUES"] == "gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert gpu["shm_size"] == "4gb"  # the patch loaders' shared memory
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert set(compose()["volumes"]) == {"portal-data", "postgres-data", "redis-data"}
    # OHIF is built from deploy/ohif/ and linked from the study pages (tests/test_ohif.py runs it).
    assert services["ohif"]["build"] == {"context": "./ohif"}
    assert services["web"]["environment"]["PORTAL_OHIF_URL"].endswith(
        ":-/ohif/viewer?StudyInstanceUIDs={study}}")
    nginx_mounts = services["nginx"]["volumes"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx_mounts
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./") and source != "./certs":
                assert (DEPLOY / source).exists(), mount


def test_dockerfile_copies_what_exists_and_uses_the_entrypoint():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    for source in re.findall(r"^COPY (\S+) ", dockerfile, re.M):
        assert (REPO_ROOT / source).exists(), source
    assert 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]' in dockerfile
    assert re.search(r"^USER 10001$", dockerfile, re.M), "the image must not run as root"
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".portal", ".git"} <= set(ignored)
    assert os.access(DEPLOY / "entrypoint.sh", os.X_OK)
    subprocess.run(["sh", "-n", str(DEPLOY / "entrypoint.sh")], check=True)


def test_ohif_image_builds_from_what_exists():
    dockerfile = (DEPLOY / "ohif" / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--)(.+) \S+$", dockerfile, re.M):
        for name in source.split():
            assert (DEPLOY / "ohif" / name).exists(), name
    assert re.search(r"^USER 101$", dockerfile, re.M), "the image must not run as root"
    assert os.access(DEPLOY / "ohif" / "build.sh", os.X_OK)
    subprocess.run(["sh", "-n", str(DEPLOY / "ohif" / "build.sh")], check=True)


def test_entrypoint_refuses_unknown_roles():
    result = subprocess.run([str(DEPLOY / "entrypoint.sh"), "dance"], capture_output=True, text=True)
    assert result.returncode == 64 and "unknown role 'dance'" in result.stderr


# --- Kubernetes ------------------------------------------------------------------------------------


def by_kind_and_name() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents() if d["kind"] != "Kustomization"}


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_each_role_is_a_deployment_with_probes_and_the_data_volume():
    docs = by_kind_and_name()
    web = docs[("Deployment", "portal-web")]["spec"]["template"]["spec"]
    container = web["containers"][0]
    assert container["args"] == ["web"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    service = docs[("Service", "portal-web")]
    web_selector = docs[("Deployment", "portal-web")]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == web_selector
    for name in ("portal-worker", "portal-gpu-worker"):
        spec = docs[("Deployment", name)]["spec"]["template"]["spec"]
        worker = spec["containers"][0]
        assert worker["args"] == ["worker"]
        assert worker["livenessProbe"]["exec"]["command"] == ["python", "manage.py", "probe_worker"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if v["name"] == "data"}
        assert claims == {"portal-data"}
    gpu_spec = docs[("Deployment", "portal-gpu-worker")]["spec"]["template"]["spec"]
    gpu = gpu_spec["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    # the patch loaders' shared memory: memory-backed, larger than a container's 64 MB
    (shm,) = [v for v in gpu_spec["volumes"] if v["name"] == "shm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "shm", "mountPath": "/dev/shm"} in gpu["volumeMounts"]
    assert {"name": "PORTAL_WORKER_QUEUES", "value": "gpu"} in gpu["env"]
    beat = docs[("Deployment", "portal-beat")]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert docs[("PersistentVolumeClaim", "portal-data")]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert docs[("Job", "portal-migrate")]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    ingress = docs[("Ingress", "portal")]["spec"]
    routes = {p["path"]: p["backend"]["service"] for p in ingress["rules"][0]["http"]["paths"]}
    assert routes["/"]["name"] == "portal-web" and routes["/ohif"]["name"] == "portal-ohif"
    ohif = docs[("Deployment", "portal-ohif")]["spec"]["template"]["spec"]["containers"][0]
    assert ohif["image"] == "research-portal-ohif" and ohif["ports"][0]["containerPort"] == 8080
    assert docs[("Service", "portal-ohif")]["spec"]["ports"][0]["port"] == 8080
    assert docs[("ConfigMap", "portal-config")]["data"]["PORTAL_OHIF_URL"].startswith("/ohif/viewer?")
    for (kind, name), doc in docs.items():
        if kind in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            if name == "portal-ohif":  # static files only: no portal settings or secrets
                assert all("envFrom" not in c for c in pod["containers"])
                continue
            for container in pod["containers"]:
                refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
                assert refs == {"portal-config", "portal-secrets"}, name
            if kind == "Deployment":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), name


# --- the production configuration, running ---------------------------------------------------------


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def self_signed_certificate(directory: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "fullchain.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def nginx_config(tmp: Path, web_port: int, http_port: int, https_port: int, ohif_port: int = 0,
                 extra_sites: tuple[Path, ...] = ()) -> Path:
    """deploy/nginx.conf with the container addresses replaced by this machine's (the OHIF
    container's by `ohif_port`, or a port where nothing listens), plus `extra_sites`."""
    site = (DEPLOY / "nginx.conf").read_text()
    replacements = {
        "server web:8000;": f"server 127.0.0.1:{web_port};",
        "server ohif:8080;": f"server 127.0.0.1:{ohif_port or free_port()};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "/etc/nginx/certs/": f"{tmp}/",
    }
    for old, new in replacements.items():
        assert old in site, old
        site = site.replace(old, new)
    site = "\n".join(line for line in site.splitlines() if "listen [::]" not in line)
    (tmp / "site.conf").write_text(site)
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = tmp / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\npid {tmp}/nginx.pid;\nerror_log stderr warn;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include /etc/nginx/mime.types;\n"
        "  default_type application/octet-stream;\n"
        + "".join(f"  {kind}_temp_path {tmp}/{kind};\n"
                  for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + "".join(f"  include {path};\n" for path in (tmp / "site.conf", *extra_sites))
        + "}\n"
    )
    return main


def wait_http(session, url: str, timeout: float = 60, status: int = 200, **kwargs):
    import requests

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = session.get(url, timeout=3, **kwargs)
            if last.status_code == status:
                return last
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer {status}: {last}")


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_production_roles_behind_nginx(service_env, service_logs, tmp_path):
    """The image's roles (web, worker, beat, manage) with production settings behind deploy/nginx.conf:
    HTTPS, websockets through the proxy, a job from the API to the worker, beat starting a scrub."""
    import requests
    from django.conf import settings
    from django.db import connection
    from websockets.sync.client import connect

    from portal.embedded import EmbeddedRedis, load_config
    from portal.models import Job, JobState
    from portal.services.datastore import store_bytes
    from tests.helpers import bearer, receive_updates, user_with_token

    if NGINX is None:
        pytest.fail("Debian's nginx is needed for this test (./dev test installs it as root)")
    redis_server = EmbeddedRedis(load_config(tmp_path / "redis"))
    redis_server.start()
    db = settings.DATABASES["default"]
    web_port, http_port, https_port = free_port(), free_port(), free_port()
    env = {
        **service_env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DJANGO_SETTINGS_MODULE": "portal.settings.production",
        "DJANGO_SECRET_KEY": "production-test-" + "x" * 48,
        "DJANGO_ALLOWED_HOSTS": "localhost",
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://localhost:{https_port}",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": redis_server.config.redis_url,
        "PORTAL_STATE_DIR": str(tmp_path / "state"),
        "PORTAL_STATIC_ROOT": str(tmp_path / "static"),
        "PORTAL_PORT": str(web_port),
        "PORTAL_WEB_WORKERS": "1",
        "PORTAL_WORKER_QUEUES": "default",
        "PORTAL_WORKER_NAME": "prod-worker",
        "PORTAL_WORKER_CONCURRENCY": "1",
        "PORTAL_WORKER_HEARTBEAT_INTERVAL": "1",
        "PORTAL_SCRUB_INTERVAL_HOURS": "0.001",  # every 3.6 seconds
    }
    env.pop("PORTAL_TEST_DATABASE_NAME", None)
    entrypoint = str(DEPLOY / "entrypoint.sh")
    subprocess.run([entrypoint, "manage", "collectstatic", "--noinput", "-v0"], env=env, check=True,
                   cwd=REPO_ROOT)
    (tmp_path / "state").mkdir()
    self_signed_certificate(tmp_path)
    processes = [
        ManagedProcess("prod-web", [entrypoint, "web"], env, service_logs).start(),
        ManagedProcess("prod-worker", [entrypoint, "worker"], env, service_logs).start(),
        ManagedProcess("nginx", [NGINX, "-c", str(nginx_config(tmp_path, web_port, http_port, https_port))],
                       env, service_logs).start(),
    ]
    base = f"https://localhost:{https_port}"
    web = requests.Session()
    web.trust_env = False  # no CA bundle or proxy from the environment: trust just this server
    web.verify = str(tmp_path / "fullchain.pem")
    try:
        # Probes answer over plain HTTP and for the pod's address, not only through the proxy.
        assert wait_http(requests, f"http://127.0.0.1:{web_port}/healthz").json() == {"status": "ok"}
        ready = wait_http(web, f"{base}/readyz").json()
        assert ready["checks"]["workers"]["queues"] == ["default"]
        # Plain HTTP is redirected to HTTPS, by nginx and (without the proxy header) by Django.
        redirect = requests.get(f"http://localhost:{http_port}/jobs/", allow_redirects=False, timeout=5)
        assert redirect.status_code == 301 and redirect.headers["Location"].startswith("https://")
        direct = requests.get(f"http://127.0.0.1:{web_port}/accounts/login/", allow_redirects=False,
                              headers={"Host": "localhost"}, timeout=5)
        assert direct.status_code == 301 and direct.headers["Location"].startswith("https://")

        # Pages over HTTPS, with HSTS, secure cookies and hashed static files from whitenoise.
        login = web.get(f"{base}/accounts/login/", timeout=5)
        assert login.status_code == 200
        assert "max-age=31536000" in login.headers["Strict-Transport-Security"]
        assert all(cookie.secure for cookie in web.cookies)
        stylesheet = re.search(r'href="(/static/portal/portal\.[0-9a-f]{12}\.css)"', login.text)
        assert stylesheet, "static files are not served hashed"
        assert web.get(base + stylesheet.group(1), timeout=5).status_code == 200
        response = web.post(f"{base}/accounts/login/", timeout=5, allow_redirects=False, data={
            "username": "nobody", "password": "wrong",
            "csrfmiddlewaretoken": web.cookies["csrftoken"],
        }, headers={"Referer": f"{base}/accounts/login/", "Origin": base})
        assert response.status_code == 200 and "enter a correct username and password" in response.text

        # A job through the API and its progress over a websocket, both through nginx.
        for index in range(4):
            store_bytes(f"prod/{index}.bin", os.urandom(256 * 1024))
        _, secret = user_with_token("operator", staff=True, scopes=("read", "write", "admin"))
        context = ssl.create_default_context(cafile=str(tmp_path / "fullchain.pem"))
        with connect(f"wss://localhost:{https_port}/ws/jobs/", additional_headers=bearer(secret),
                     ssl=context, open_timeout=10) as socket:
            created = web.post(f"{base}/api/v1/jobs/", json={"kind": "portal.scrub"},
                               headers=bearer(secret), timeout=5)
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            updates = receive_updates(socket, job_id, timeout=30)
        assert updates[-1]["state"] == "succeeded" and updates[-1]["progress"] == 1.0
        assert [u["sequence"] for u in updates] == sorted(u["sequence"] for u in updates)

        # The web server reuses database connections (a pool) instead of opening one per request.
        def sessions_opened() -> int:
            with connection.cursor() as cursor:
                cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
                return cursor.fetchone()[0]

        web.get(f"{base}/api/v1/me/", headers=bearer(secret), timeout=5)
        before = sessions_opened()
        for _ in range(10):
            assert web.get(f"{base}/api/v1/me/", headers=bearer(secret), timeout=5).status_code == 200
        assert sessions_opened() - before <= 1

        # Beat starts the scheduled integrity scrub; the worker runs it.
        beat = ManagedProcess("prod-beat", [entrypoint, "beat"], env, service_logs).start()
        processes.append(beat)
        deadline = time.monotonic() + 60
        while not Job.objects.filter(kind="portal.scrub", created_by=None, state=JobState.SUCCEEDED).exists():
            assert time.monotonic() < deadline, beat.output()
            time.sleep(0.5)
        scheduled = Job.objects.filter(kind="portal.scrub", created_by=None, state=JobState.SUCCEEDED).first()
        assert scheduled.params == {"rate_limit_mb_s": 200.0}
        assert scheduled.result["verified"] == 4

        # The worker liveness probe of the Kubernetes manifests.
        probe = subprocess.run([entrypoint, "manage", "probe_worker"], env=env, cwd=REPO_ROOT,
                               capture_output=True, text=True)
        assert probe.returncode == 0, probe.stderr
        assert "prod-worker@" in probe.stdout and "queues default" in probe.stdout
        elsewhere = subprocess.run([entrypoint, "manage", "probe_worker", "--host", "elsewhere"], env=env,
                                   cwd=REPO_ROOT, capture_output=True, text=True)
        assert elsewhere.returncode == 1
        assert "no heartbeat from a worker on elsewhere" in elsewhere.stderr
    finally:
        for process in reversed(processes):
            process.stop()
        redis_server.stop()
