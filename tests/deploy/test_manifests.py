"""Offline checks of the deployment files: Dockerfile, docker-compose.yml and deploy/k8s/.

Nothing here needs Docker or a cluster. docker-compose.yml is validated against the vendored
compose-spec schema, every Kubernetes manifest against the schemas kubernetes-validate ships
(strict: unknown fields fail), and the KEDA objects, which no bundled schema covers, by hand.
The kustomization is rendered with `kubectl kustomize` when kubectl is installed; without it,
the same checks run on an in-Python render of the resources the kustomization lists.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.contracts import topology
from shared.crypto import SecretBox
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
K8S_DIR = ROOT / "deploy" / "k8s"

# Service name -> host port docker-compose publishes it on.
APP_SERVICES = {"campaign": 8000, "audience": 8001, "sender": 8002, "bounce": 8003, "tracking": 8004}
COMMON_ENV = {
    "DATABASE_URL": "postgresql://mailer:mailer@postgres:5432/mailer",
    "RABBITMQ_URL": "amqp://guest:guest@rabbitmq:5672/",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
    "LOG_LEVEL": "INFO",
    "ENVIRONMENT": "development",
    "TRACKING_BASE_URL": "http://localhost:8004",
}
SECRET_KEYS = ("DATABASE_URL", "RABBITMQ_URL", "SECRET_KEYS", "TRACKING_SIGNING_KEYS")
PLACEHOLDER = "REPLACE_ME"

# The oldest Kubernetes the base is meant for, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
NAMESPACE = "mailer"
PART_OF = ("app.kubernetes.io/part-of", "mailer")
# API groups of custom resources: no bundled schema, checked by TestKeda instead.
CRD_GROUPS = {"keda.sh"}
CLUSTER_SCOPED_KINDS = {"Namespace"}
SERVE_ARGS = ("--host", "0.0.0.0", "--port", "8000")


def uvicorn_command(service: str) -> list[str]:
    """The command that starts one service, the same in compose and Kubernetes."""
    return ["uvicorn", f"services.{service}.app:create_app", "--factory", *SERVE_ARGS]


def load_docs(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def api_group(doc: dict[str, Any]) -> str:
    api_version: str = doc["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def schema_errors(doc: dict[str, Any], version: str) -> str | None:
    """kubernetes-validate's complaint about a resource, or None when it is valid."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        return f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}"
    return None


# --- docker-compose.yml ---------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    # Shared between tests: read-only (tests that alter it take a deep copy).
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@cache
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    declared = schema["$schema"]
    # jsonschema finds meta-schemas by their exact id ("http://json-schema.org/draft-07/schema#");
    # compose-spec declares "https://json-schema.org/draft-07/schema", so map the draft by name.
    drafts: dict[str, type[jsonschema.protocols.Validator]] = {
        "draft-07": jsonschema.Draft7Validator,
        "draft/2019-09": jsonschema.Draft201909Validator,
        "draft/2020-12": jsonschema.Draft202012Validator,
    }
    matching = [cls for name, cls in drafts.items() if name in declared]
    assert len(matching) == 1, f"unexpected $schema in {COMPOSE_SCHEMA.name}: {declared}"
    validator_class = matching[0]
    validator_class.check_schema(schema)
    return validator_class(schema)


def compose_errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in compose_validator().iter_errors(document)
    ]


def interpolated(value: str) -> str:
    """A compose value with `${VAR:-default}` replaced by its default, as with an empty .env."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


class TestComposeSchema:
    def test_file_is_valid_against_the_compose_spec(self) -> None:
        assert compose_errors(compose()) == []

    def test_the_validator_rejects_an_unknown_service_key(self) -> None:
        # Guards the test above: a schema that accepted anything would pass it too.
        broken = copy.deepcopy(compose())
        broken["services"]["campaign"]["healthchek"] = {"test": ["CMD", "true"]}
        assert any("healthchek" in error for error in compose_errors(broken))

    def test_every_variable_has_a_default(self) -> None:
        # `docker compose up` must work on a fresh clone, with no .env file.
        references = re.findall(r"\$\{([^}]*)\}", COMPOSE_FILE.read_text())
        assert references, "expected ${VAR:-default} references (SECRET_KEYS, TRACKING_SIGNING_KEYS)"
        for reference in references:
            assert re.fullmatch(r"[A-Z0-9_]+:-.+", reference), f"${{{reference}}} has no default"


class TestComposeServices:
    def test_app_services_and_migrate_share_one_image_built_here(self) -> None:
        services = compose()["services"]
        reference = services["campaign"]
        for name in [*APP_SERVICES, "migrate"]:
            assert services[name]["image"] == reference["image"], name
            assert services[name]["build"] == reference["build"], name
        build = reference["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (context / dockerfile).resolve() == DOCKERFILE

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_app_service_runs_its_app_and_publishes_its_port(self, name: str) -> None:
        service = compose()["services"][name]
        assert service["command"] == uvicorn_command(name)
        assert f"{APP_SERVICES[name]}:8000" in service["ports"]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_app_service_waits_for_migrations_and_the_broker(self, name: str) -> None:
        depends_on = compose()["services"][name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["rabbitmq"]["condition"] == "service_healthy"

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_app_service_health_is_its_readiness_probe(self, name: str) -> None:
        healthcheck = compose()["services"][name]["healthcheck"]
        assert not healthcheck.get("disable", False)
        test = " ".join(healthcheck["test"]) if isinstance(healthcheck["test"], list) else healthcheck["test"]
        assert "/readyz" in test
        assert ":8000/" in test

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_app_service_environment(self, name: str) -> None:
        environment = compose()["services"][name]["environment"]
        for key, value in COMMON_ENV.items():
            assert environment[key] == value, key
        assert interpolated(environment["TRACKING_SIGNING_KEYS"])
        if name == "campaign":
            assert environment["AUDIENCE_URL"] == "http://audience:8000"

    def test_default_secret_key_is_a_fernet_key(self) -> None:
        default = interpolated(compose()["services"]["campaign"]["environment"]["SECRET_KEYS"])
        assert len(base64.urlsafe_b64decode(default)) == 32
        SecretBox(default).encrypt("smtp password")

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_environment_is_accepted_by_the_service_settings(self, name: str) -> None:
        environment = {
            key: interpolated(str(value)) for key, value in compose()["services"][name]["environment"].items()
        }
        settings = ServiceSettings.model_validate(environment)
        assert settings.ENVIRONMENT == "development"

    def test_migrate_is_a_one_shot_after_postgres(self) -> None:
        migrate = compose()["services"]["migrate"]
        assert migrate["command"] == ["python", "-m", "services.migrate"]
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert migrate.get("restart", "no") == "no"
        assert "healthcheck" not in migrate

    def test_infrastructure(self) -> None:
        services = compose()["services"]
        postgres = services["postgres"]
        assert postgres["image"] == "postgres:15"
        assert {
            postgres["environment"][key] for key in ("POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD")
        } == {"mailer"}
        assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
        assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])

        rabbitmq = services["rabbitmq"]
        # Pinned: the queue semantics the design relies on were checked on 3.10.
        assert rabbitmq["image"] == "rabbitmq:3.10-management"
        assert rabbitmq["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]

        mailpit = services["mailpit"]
        assert mailpit["image"].startswith("axllent/mailpit")
        assert {"1025:1025", "8025:8025"} <= set(mailpit["ports"])

        jaeger = services["jaeger"]
        assert jaeger["image"].startswith("jaegertracing/all-in-one:")
        assert str(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"]).lower() == "true"
        assert {"16686:16686", "4318:4318"} <= {port.split()[0] for port in jaeger["ports"]}

    def test_dependencies_exist_and_can_be_healthy(self) -> None:
        services = compose()["services"]
        for name, service in services.items():
            for dependency, condition in service.get("depends_on", {}).items():
                assert dependency in services, f"{name} depends on unknown {dependency}"
                if condition["condition"] == "service_healthy":
                    assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"

    def test_header_tells_where_sending_accounts_point(self) -> None:
        header = COMPOSE_FILE.read_text().split("\nname:")[0]
        assert "mailpit" in header
        assert "1025" in header
        assert "TLS" in header

    def test_sender_stop_grace_matches_kubernetes(self) -> None:
        deployment = load_docs(K8S_DIR / "sender" / "deployment.yaml")[0]
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert compose()["services"]["sender"]["stop_grace_period"] == f"{grace}s"


# --- Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


class TestDockerfile:
    def test_base_image(self) -> None:
        assert dockerfile_instructions()[0] == ("FROM", "python:3.11-slim")

    def test_installs_the_project_and_copies_the_packages(self) -> None:
        instructions = dockerfile_instructions()
        copied = {arguments.split()[0] for keyword, arguments in instructions if keyword == "COPY"}
        assert {"pyproject.toml", "shared/", "services/", "devtools/"} <= copied
        runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
        assert re.search(r"pip install (--no-deps )?\.", runs)

    def test_runs_as_the_numeric_non_root_user_kubernetes_expects(self) -> None:
        users = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "USER"]
        assert users, "no USER instruction: the image would run as root"
        uid = users[-1].split(":")[0]
        # runAsNonRoot can only be verified against a numeric USER.
        assert uid.isdigit()
        assert int(uid) != 0
        for path in source_manifests():
            for doc in load_docs(path):
                if doc["kind"] in {"Deployment", "Job"}:
                    assert doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)

    def test_default_command_starts_a_service(self) -> None:
        commands = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "CMD"]
        assert json.loads(commands[-1]) == uvicorn_command("campaign")


# --- deploy/k8s ---------------------------------------------------------------------------


def source_manifests() -> list[Path]:
    """Every manifest file under deploy/k8s (the kustomization itself is not a resource)."""
    return sorted(path for path in K8S_DIR.rglob("*.yaml") if path.name != "kustomization.yaml")


@cache
def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return loaded


def resolve_resources(directory: Path) -> list[Path]:
    """The files a kustomization's `resources:` pull in, following nested kustomizations."""
    config = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files: list[Path] = []
    for entry in config.get("resources", []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory / 'kustomization.yaml'} lists missing {entry}"
        files.extend(resolve_resources(target) if target.is_dir() else [target])
    return files


def source_doc(folder: str, filename: str, kind: str, name: str | None = None) -> dict[str, Any]:
    docs = [
        doc
        for doc in load_docs(K8S_DIR / folder / filename)
        if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    assert len(docs) == 1, f"expected one {kind} {name or ''} in {folder}/{filename}"
    return docs[0]


def app_secret() -> dict[str, Any]:
    """The Secret every pod reads its credentials from."""
    return source_doc(".", "secret.yaml", "Secret", "mailer-secrets")


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores, bytes)."""
    text = str(value)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match, f"not a quantity: {value!r}"
    number, suffix = match.groups()
    assert suffix in suffixes or suffix == "", f"unexpected unit in {value!r}"
    return float(number) * suffixes.get(suffix, 1)


class TestKubernetesSchemas:
    @pytest.mark.parametrize("version", K8S_VERSIONS)
    @pytest.mark.parametrize("path", source_manifests(), ids=lambda path: str(path.relative_to(K8S_DIR)))
    def test_manifest_is_valid(self, path: Path, version: str) -> None:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
        errors = [schema_errors(doc, version) for doc in docs if api_group(doc) not in CRD_GROUPS]
        assert [error for error in errors if error] == []

    def test_strict_validation_rejects_an_unknown_field(self) -> None:
        # Guards the test above: a typo in a field name must not pass as valid.
        deployment = copy.deepcopy(source_doc("campaign", "deployment.yaml", "Deployment"))
        pod_spec(deployment)["containers"][0]["livenesProbe"] = {
            "httpGet": {"path": "/healthz", "port": 8000}
        }
        assert schema_errors(deployment, K8S_VERSIONS[0]) is not None


class TestKustomization:
    def test_base_settings(self) -> None:
        config = kustomization()
        assert config["namespace"] == NAMESPACE
        labels = config.get("labels", [])
        common = config.get("commonLabels", {})
        assert any(entry["pairs"].get(PART_OF[0]) == PART_OF[1] for entry in labels) or (
            common.get(PART_OF[0]) == PART_OF[1]
        )

    def test_lists_every_manifest_exactly_once(self) -> None:
        listed = resolve_resources(K8S_DIR)
        assert len(listed) == len(set(listed)), "a resource is listed twice"
        assert sorted(listed) == source_manifests(), "a manifest is missing from kustomization.yaml"

    def test_configuration_covers_what_compose_sets(self) -> None:
        # Every setting the compose file gives the services must reach the pods too.
        generated = {
            literal.split("=", 1)[0]
            for generator in kustomization()["configMapGenerator"]
            for literal in generator.get("literals", [])
        }
        secret = app_secret()
        assert set(SECRET_KEYS) <= set(secret["stringData"])
        compose_keys = set(compose()["services"]["campaign"]["environment"])
        assert compose_keys <= generated | set(secret["stringData"])

    def test_secrets_hold_only_placeholders(self) -> None:
        secrets = [doc for doc in load_docs(K8S_DIR / "secret.yaml") if doc["kind"] == "Secret"]
        assert secrets
        for secret in secrets:
            for key, value in secret["stringData"].items():
                assert PLACEHOLDER in value, f"{secret['metadata']['name']}.{key} is not a placeholder"

    def test_configuration_is_accepted_by_the_service_settings(self) -> None:
        values = {
            key: value
            for generator in kustomization()["configMapGenerator"]
            for key, value in (literal.split("=", 1) for literal in generator.get("literals", []))
        }
        values.update(app_secret()["stringData"])
        settings = ServiceSettings.model_validate(values)
        assert settings.ENVIRONMENT == "production"


def render_with_kubectl(kubectl: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "deprecated" not in result.stderr.lower(), result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_in_python() -> list[dict[str, Any]]:
    """What `kubectl kustomize` would produce for this base, minus the ConfigMap name hash."""
    config = kustomization()
    label_sets = list(config.get("labels", []))
    if "commonLabels" in config:
        label_sets.append(
            {"pairs": config["commonLabels"], "includeSelectors": True, "includeTemplates": True}
        )
    docs = [copy.deepcopy(doc) for path in resolve_resources(K8S_DIR) for doc in load_docs(path)]
    for generator in config.get("configMapGenerator", []):
        data = dict(literal.split("=", 1) for literal in generator.get("literals", []))
        docs.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    for doc in docs:
        metadata = doc["metadata"]
        if doc["kind"] not in CLUSTER_SCOPED_KINDS:
            metadata["namespace"] = config["namespace"]
        for label_set in label_sets:
            metadata.setdefault("labels", {}).update(label_set["pairs"])
            if doc["kind"] in {"Deployment", "Job"} and label_set.get("includeTemplates"):
                doc["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(
                    label_set["pairs"]
                )
    return docs


@cache
def rendered() -> tuple[str, tuple[dict[str, Any], ...]]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        return "kubectl", tuple(render_with_kubectl(kubectl))
    return "in-python", tuple(render_in_python())


def rendered_of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered()[1] if doc["kind"] == kind]


def rendered_names(kind: str) -> set[str]:
    return {doc["metadata"]["name"] for doc in rendered_of_kind(kind)}


class TestRenderedKustomization:
    def test_renders_every_source_object(self) -> None:
        source = {
            (doc["kind"], doc["metadata"]["name"]) for path in source_manifests() for doc in load_docs(path)
        }
        output = {(doc["kind"], doc["metadata"]["name"]) for doc in rendered()[1]}
        assert source <= output
        generated = {generator["name"] for generator in kustomization()["configMapGenerator"]}
        for name in generated:
            # kubectl appends a content hash to generated names; the in-Python render does not.
            assert any(re.fullmatch(rf"{name}(-[a-z0-9]+)?", other) for other in rendered_names("ConfigMap"))

    @pytest.mark.parametrize("version", K8S_VERSIONS)
    def test_rendered_objects_are_valid(self, version: str) -> None:
        errors = [schema_errors(doc, version) for doc in rendered()[1] if api_group(doc) not in CRD_GROUPS]
        assert [error for error in errors if error] == []

    def test_everything_lands_in_the_namespace_with_the_part_of_label(self) -> None:
        assert rendered_names("Namespace") == {NAMESPACE}
        for doc in rendered()[1]:
            metadata = doc["metadata"]
            if doc["kind"] not in CLUSTER_SCOPED_KINDS:
                assert metadata.get("namespace") == NAMESPACE, metadata["name"]
            assert metadata["labels"].get(PART_OF[0]) == PART_OF[1], metadata["name"]
            if doc["kind"] in {"Deployment", "Job"}:
                assert doc["spec"]["template"]["metadata"]["labels"].get(PART_OF[0]) == PART_OF[1]

    def test_env_references_resolve(self) -> None:
        for doc in [*rendered_of_kind("Deployment"), *rendered_of_kind("Job")]:
            for container in pod_spec(doc)["containers"]:
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in rendered_names("ConfigMap")
                    if "secretRef" in source:
                        assert source["secretRef"]["name"] in rendered_names("Secret")

    def test_services_select_one_deployment_and_a_named_port(self) -> None:
        deployments = rendered_of_kind("Deployment")
        for service in rendered_of_kind("Service"):
            selector = service["spec"]["selector"]
            selected = [
                deployment
                for deployment in deployments
                if selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert len(selected) == 1, service["metadata"]["name"]
            port_names = {
                port.get("name")
                for container in pod_spec(selected[0])["containers"]
                for port in container["ports"]
            }
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in port_names | {8000}

    def test_selectors_match_their_templates(self) -> None:
        for deployment in rendered_of_kind("Deployment"):
            match_labels = deployment["spec"]["selector"]["matchLabels"]
            assert match_labels.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    def test_keda_references_resolve(self) -> None:
        for scaled_object in rendered_of_kind("ScaledObject"):
            assert scaled_object["spec"]["scaleTargetRef"]["name"] in rendered_names("Deployment")
            for trigger in scaled_object["spec"]["triggers"]:
                assert trigger["authenticationRef"]["name"] in rendered_names("TriggerAuthentication")
        secrets = {doc["metadata"]["name"]: doc for doc in rendered_of_kind("Secret")}
        for authentication in rendered_of_kind("TriggerAuthentication"):
            for ref in authentication["spec"]["secretTargetRef"]:
                secret = secrets[ref["name"]]
                assert ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}


class TestDeployments:
    def test_one_folder_per_service(self) -> None:
        folders = {path.parent.name for path in K8S_DIR.glob("*/deployment.yaml")}
        assert folders == set(APP_SERVICES)
        for name in APP_SERVICES:
            assert (K8S_DIR / name / "service.yaml").is_file()

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_deployment(self, name: str) -> None:
        deployment = source_doc(name, "deployment.yaml", "Deployment")
        assert deployment["metadata"]["name"] == name
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        assert container["image"] == "mailer:latest"
        assert container["command"] == uvicorn_command(name)
        assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in container["ports"]
        assert {"configMapRef": {"name": "mailer-config"}} in container["envFrom"]
        assert {"secretRef": {"name": "mailer-secrets"}} in container["envFrom"]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_probes(self, name: str) -> None:
        (container,) = pod_spec(source_doc(name, "deployment.yaml", "Deployment"))["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in {"http", 8000}

    @pytest.mark.parametrize("name", [*APP_SERVICES, "migrate"])
    def test_resources_and_security(self, name: str) -> None:
        doc = (
            source_doc("migrate", "job.yaml", "Job")
            if name == "migrate"
            else source_doc(name, "deployment.yaml", "Deployment")
        )
        spec = pod_spec(doc)
        for container in spec["containers"]:
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{name} {resource}: request {request} > limit {limit}"
            security = container.get("securityContext", {})
            assert spec["securityContext"].get("runAsNonRoot") or security.get("runAsNonRoot")
            assert security.get("allowPrivilegeEscalation") is False

    def test_sender_has_time_to_drain_and_leaves_replicas_to_keda(self) -> None:
        sender = source_doc("sender", "deployment.yaml", "Deployment")
        assert pod_spec(sender)["terminationGracePeriodSeconds"] == 60
        # A fixed count would be reset on every apply, fighting the autoscaler.
        assert "replicas" not in sender["spec"]

    @pytest.mark.parametrize("name", APP_SERVICES)
    def test_service(self, name: str) -> None:
        service = source_doc(name, "service.yaml", "Service")
        assert service["metadata"]["name"] == name
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
        (port,) = service["spec"]["ports"]
        assert (port["name"], port["port"], port["targetPort"]) in {("http", 80, "http"), ("http", 80, 8000)}
        deployment = source_doc(name, "deployment.yaml", "Deployment")
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


class TestMigrationJob:
    def test_job(self) -> None:
        job = source_doc("migrate", "job.yaml", "Job")
        assert job["spec"]["backoffLimit"] > 0
        assert job["spec"]["ttlSecondsAfterFinished"] > 0
        spec = pod_spec(job)
        assert spec["restartPolicy"] in {"Never", "OnFailure"}
        (container,) = spec["containers"]
        assert container["command"] == ["python", "-m", "services.migrate"]
        assert container["image"] == "mailer:latest"
        assert {"configMapRef": {"name": "mailer-config"}} in container["envFrom"]
        assert {"secretRef": {"name": "mailer-secrets"}} in container["envFrom"]


class TestKeda:
    @staticmethod
    def scaled_object() -> dict[str, Any]:
        return source_doc("sender", "scaledobject.yaml", "ScaledObject")

    @staticmethod
    def trigger_authentication() -> dict[str, Any]:
        return source_doc("sender", "triggerauthentication.yaml", "TriggerAuthentication")

    def test_scaled_object_targets_the_sender_deployment(self) -> None:
        scaled_object = self.scaled_object()
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        target = scaled_object["spec"]["scaleTargetRef"]
        assert target["name"] == source_doc("sender", "deployment.yaml", "Deployment")["metadata"]["name"]
        assert target.get("kind", "Deployment") == "Deployment"
        assert target.get("apiVersion", "apps/v1") == "apps/v1"
        assert scaled_object["spec"]["minReplicaCount"] == 1
        assert scaled_object["spec"]["maxReplicaCount"] == 10

    def test_trigger_sums_the_account_queues_through_the_management_api(self) -> None:
        (trigger,) = self.scaled_object()["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        metadata = trigger["metadata"]
        # KEDA's trigger metadata is a map of strings: a bare number or boolean is refused.
        assert all(isinstance(value, str) for value in metadata.values()), metadata
        assert metadata["mode"] == "QueueLength"
        assert metadata["value"] == "1000"
        # useRegex works only over the management API (http), not AMQP.
        assert metadata["useRegex"] == "true"
        assert metadata["protocol"] == "http"
        assert metadata["operation"] == "sum"
        assert "host" not in metadata, "the URL carries credentials: it belongs in the TriggerAuthentication"
        assert trigger["authenticationRef"]["name"] == self.trigger_authentication()["metadata"]["name"]

    def test_queue_pattern_matches_exactly_the_account_queues(self) -> None:
        (trigger,) = self.scaled_object()["spec"]["triggers"]
        pattern = re.compile(trigger["metadata"]["queueName"])
        for account_id in (1, 42, 1234567):
            assert pattern.search(topology.account_queue(account_id).name)
        others = [
            *(queue.name for queue in topology.EVENT_QUEUES),
            topology.DEAD_LETTER_QUEUE.name,
            *(topology.retry_queue(delay).name for delay in topology.RETRY_DELAYS_SECONDS),
        ]
        assert [name for name in others if pattern.search(name)] == []

    def test_trigger_authentication_reads_the_management_url_secret(self) -> None:
        authentication = self.trigger_authentication()
        assert authentication["apiVersion"] == "keda.sh/v1alpha1"
        (ref,) = authentication["spec"]["secretTargetRef"]
        assert ref["parameter"] == "host"
        assert ref["key"] == "RABBITMQ_MANAGEMENT_URL"
        secrets = {doc["metadata"]["name"]: doc for doc in load_docs(K8S_DIR / "secret.yaml")}
        management_url = secrets[ref["name"]]["stringData"][ref["key"]]
        assert management_url.startswith(("http://", "https://"))
        assert ":15672/" in management_url
