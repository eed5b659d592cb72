"""deploy/'s overlays render, validate against Kubernetes' OpenAPI schemas, run lcp's real commands with
real settings, harden every pod, carry no secret values, and ship the repository's policy files."""

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml
from kubernetes import client, config
from pydantic import BaseModel

from cli import app as lcp_app
from settings import Settings
from temporal.constants import TASK_QUEUES
from tests.deploy.render import DEPLOY, OVERLAYS, REPO, Obj, kustomize, name_of, pod_templates, render

KUBERNETES_VERSION = "1.32"  # the kubectl/kustomize these manifests are rendered with
CRDS = {"monitoring.coreos.com/v1": "ServiceMonitor"}  # no schema offline: its fields are checked by name
POLICY_COPIES = {
    "models.yaml": REPO / "policies" / "models.yaml",
    "analysis.yaml": REPO / "policies" / "analysis.yaml",
    "catalogue.yaml": REPO / "chaos" / "catalogue.yaml",
}


@pytest.fixture(params=OVERLAYS)
def objs(request: pytest.FixtureRequest) -> list[Obj]:
    return render(request.param)


def by_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {obj["metadata"]["name"]: obj for obj in objs if obj["kind"] == kind}


def configmap(objs: list[Obj], name: str) -> dict[str, str]:
    """The data of a generated ConfigMap (kustomize appends a hash of its content to the name)."""
    (found,) = [cm for cm_name, cm in by_kind(objs, "ConfigMap").items() if cm_name.rsplit("-", 1)[0] == name]
    data: dict[str, str] = found["data"]
    return data


def test_both_overlays_render_the_whole_application(objs: list[Obj]) -> None:
    deployments = by_kind(objs, "Deployment")
    assert {"lcp-api", *(f"lcp-worker-{queue}" for queue in TASK_QUEUES)} <= set(deployments)
    assert set(by_kind(objs, "Job")) == {"lcp-db-migrate", "lcp-temporal-setup"}
    for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor"):
        assert "lcp-api" in by_kind(objs, kind), kind
    assert set(by_kind(objs, "ServiceAccount")) == {"lcp", "lcp-ops"}
    assert "lcp-ops" in by_kind(objs, "ClusterRole") and by_kind(objs, "RoleBinding")
    assert {"lcp-settings", "lcp-policies", "lcp-ops-kubeconfig"} <= {
        re.sub(r"-[a-z0-9]{10}$", "", name) for name in by_kind(objs, "ConfigMap")
    }
    namespaced = [o for o in objs if o["kind"] not in ("Namespace", "ClusterRole")]
    assert {o["metadata"]["namespace"] for o in namespaced if o["kind"] != "RoleBinding"} == {"lcp"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_openapi_schema(overlay: str) -> None:
    """Strict: an unknown or misspelt field fails, as `kubectl apply --validate=strict` would."""
    checked = 0
    for obj in render(overlay):
        if CRDS.get(obj["apiVersion"]) == obj["kind"]:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(part) for part in err.path)
            pytest.fail(f"{overlay}: {name_of(obj)}: {path}: {err.message}")
        checked += 1
    assert checked >= 25


def test_a_misspelt_field_is_what_the_schema_check_catches() -> None:
    """The check above can fail: a typo in a securityContext is refused."""
    deployment = by_kind(render("prod"), "Deployment")["lcp-api"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_service_monitor_scrapes_the_api_metrics_port_with_the_token_secret(objs: list[Obj]) -> None:
    """No schema of the Prometheus Operator's CRD is at hand offline (kubernetes-validate has Kubernetes'
    own kinds only; the one Python package with models of it loads a broken pytest plugin), so the fields
    are checked here by name, as the CRD (monitoring.coreos.com/v1) defines them, and against the API's
    Service and Deployment."""
    monitor = by_kind(objs, "ServiceMonitor")["lcp-api"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    service = by_kind(objs, "Service")["lcp-api"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "bearerTokenSecret"}
    assert all(re.fullmatch(r"[0-9]+(ms|s|m|h)", endpoint[key]) for key in ("interval", "scrapeTimeout"))
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["bearerTokenSecret"] == {"name": "lcp-metrics-token", "key": "token", "optional": True}
    api = pod_templates(objs)["Deployment lcp/lcp-api"]["containers"][0]
    token = next(env for env in api["env"] if env["name"] == "LCP_METRICS__TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {
        "name": "lcp-metrics-token",
        "key": "token",
        "optional": True,
    }


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every command path of a (Typer's) click group: ("db", "upgrade"), ("worker",), ..."""
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        found.add((*prefix, name))
        if hasattr(command, "commands"):
            found |= _commands(command, (*prefix, name))
    return found


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_every_container_runs_a_real_lcp_command_with_real_options(objs: list[Obj]) -> None:
    root = typer.main.get_command(lcp_app)
    commands = _commands(root)
    queues: set[str] = set()
    for name, pod in pod_templates(objs).items():
        (container,) = pod["containers"]
        args = container["args"]
        words = tuple(arg for arg in args if not arg.startswith("-"))
        path = next((words[:n] for n in (2, 1) if words[:n] in commands), None)
        assert path is not None, f"{name}: `lcp {' '.join(args)}` is no lcp command"
        command = root
        for word in path:
            assert isinstance(command, typer.core.TyperGroup)
            command = command.commands[word]
        assert {arg for arg in args if arg.startswith("-")} <= _options(command), name
        if path == ("worker",):
            queues.add(args[args.index("--queue") + 1])
    assert queues == set(TASK_QUEUES)


def _field_path(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether LCP_A__B names a settings field (pydantic-settings ignores unknown names silently)."""
    head, *rest = parts
    fields = {name: info for name, info in model.model_fields.items()}
    aliases = {
        str(choice).lower(): name
        for name, info in fields.items()
        for choice in getattr(info.validation_alias, "choices", ())
    }
    name = head if head in fields else aliases.get(f"lcp_{head}") or aliases.get(head)
    if name is None:
        return False
    if not rest:
        return True
    annotation = fields[name].annotation
    return (
        isinstance(annotation, type) and issubclass(annotation, BaseModel) and _field_path(annotation, rest)
    )


def _environment(objs: list[Obj]) -> dict[str, dict[str, Any]]:
    """Per container: the env var names it gets, literal values and where secrets come from."""
    settings = configmap(objs, "lcp-settings")
    out: dict[str, dict[str, Any]] = {}
    for name, pod in pod_templates(objs).items():
        env: dict[str, Any] = {}
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"].startswith("lcp-settings-"), name
                env.update(settings)
            for var in container.get("env", []):
                env[var["name"]] = var.get("value", var.get("valueFrom"))
        out[name] = env
    return out


def test_every_setting_is_one_lcp_reads_and_the_whole_set_is_valid(objs: list[Obj]) -> None:
    for name, env in _environment(objs).items():
        for var in env:
            if var == "DATABASE_URL":
                continue
            assert var.startswith("LCP_"), f"{name}: {var}"
            parts = var.removeprefix("LCP_").lower().split("__")
            assert _field_path(Settings, parts), f"{name}: {var} is no setting in settings/__init__.py"
        literal = {k: v for k, v in env.items() if isinstance(v, str)}
        # The Secrets' values are the deployer's: stand-ins of the right shape.
        literal["DATABASE_URL"] = "postgresql://lcp@postgres/lcp"
        settings = Settings(_env_file=None, **_nested(literal))  # type: ignore[call-arg]
        if "LCP_TEMPORAL__NAMESPACE" in env:  # every pod but dev's simulator, which needs no settings
            assert settings.temporal.namespace == "lcp"
            assert settings.models_file == Path("/etc/lcp/policies/models.yaml")


def test_a_misspelt_setting_is_what_the_settings_check_catches() -> None:
    """pydantic-settings ignores an unknown LCP_ name: the check above must not."""
    assert _field_path(Settings, ["temporal", "address"]) and _field_path(Settings, ["database_url"])
    assert not _field_path(Settings, ["temporal", "adress"])
    assert not _field_path(Settings, ["rollout", "kubeconfig", "path"])
    assert not _field_path(Settings, ["metrics_token"])


def _nested(env: dict[str, str]) -> dict[str, Any]:
    """Env vars as pydantic-settings would read them, as init arguments (the test's environment stays out)."""
    out: dict[str, Any] = {}
    for var, value in env.items():
        if var == "DATABASE_URL":
            out["database_url"] = value
            continue
        *groups, leaf = var.removeprefix("LCP_").lower().split("__")
        target = out
        for group in groups:
            target = target.setdefault(group, {})
        target[leaf] = yaml.safe_load(value) if value.startswith(("[", "{")) else value
    return out


def test_files_the_settings_name_are_mounted(objs: list[Obj]) -> None:
    settings, policies = configmap(objs, "lcp-settings"), configmap(objs, "lcp-policies")
    policy_files = {v for k, v in settings.items() if k.endswith("_FILE")}
    assert policy_files == {f"/etc/lcp/policies/{file}" for file in policies}
    readers = {n: pod for n, pod in pod_templates(objs).items() if re.search(r"lcp-(api|worker-)", n)}
    assert len(readers) == 1 + len(TASK_QUEUES)
    for name, pod in readers.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/etc/lcp/policies"]["configMap"]["name"].startswith("lcp-policies-"), name
        if name.endswith("lcp-worker-ops"):
            assert settings["LCP_ROLLOUT__KUBECONFIG"] == "/etc/lcp/kube/kubeconfig"
            kube = mounts["/etc/lcp/kube"]["configMap"]["name"]
            assert kube.startswith("lcp-ops-kubeconfig-") and "kubeconfig" in configmap(
                objs, "lcp-ops-kubeconfig"
            )
            assert pod["serviceAccountName"] == "lcp-ops" and pod["automountServiceAccountToken"] is True


@pytest.mark.parametrize("copy", sorted(POLICY_COPIES))
def test_the_policy_files_in_deploy_are_the_repositorys(copy: str) -> None:
    """kustomize reads no file outside its folder, so deploy/base/policies holds copies: keep them equal."""
    original = POLICY_COPIES[copy]
    assert (DEPLOY / "base" / "policies" / copy).read_text() == original.read_text(), (
        f"deploy/base/policies/{copy} differs from {original.relative_to(REPO)}: "
        f"cp {original.relative_to(REPO)} deploy/base/policies/{copy}"
    )


def test_every_pod_is_hardened(objs: list[Obj]) -> None:
    for name, pod in pod_templates(objs).items():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        wants_token = name.endswith("lcp-worker-ops")
        assert pod["automountServiceAccountToken"] is wants_token, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert {"requests", "limits"} <= set(container["resources"]), name
            assert container["resources"]["limits"]["memory"], name
            # The read-only root: /tmp (LCP_HOME, HOME, MPLCONFIGDIR in the image) is a volume.
            tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
            volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
            assert "emptyDir" in volume, name


def test_the_api_is_probed_scaled_and_kept_available(objs: list[Obj]) -> None:
    api = by_kind(objs, "Deployment")["lcp-api"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    hpa = by_kind(objs, "HorizontalPodAutoscaler")["lcp-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "lcp-api"
    assert "replicas" not in api["spec"]  # the HPA owns the count: `kubectl apply` must not reset it
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation is of the request
    selector = api["spec"]["selector"]["matchLabels"]
    assert by_kind(objs, "PodDisruptionBudget")["lcp-api"]["spec"]["selector"]["matchLabels"] == selector
    assert by_kind(objs, "Service")["lcp-api"]["spec"]["selector"] == selector


def test_only_the_api_takes_ingress(objs: list[Obj]) -> None:
    policies = by_kind(objs, "NetworkPolicy")
    deny = policies["lcp-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    takes_ingress = {
        tuple(p["spec"]["podSelector"].get("matchLabels", {}).values())
        or tuple(p["spec"]["podSelector"]["matchExpressions"][0]["values"])
        for p in policies.values()
        if p["spec"].get("ingress")
    }
    sim = {("sim",)} if "lcp-sim" in by_kind(objs, "Deployment") else set()  # dev's simulator only
    assert takes_ingress == {("api",)} | sim


def _egress_to(objs: list[Obj], component: str) -> set[str]:
    """What a component may reach, as `namespace:<name>`, `ip:<cidr>`, `pods:<component>` per policy."""
    reach: set[str] = set()
    for policy in by_kind(objs, "NetworkPolicy").values():
        spec = policy["spec"]
        selector = spec["podSelector"]
        if selector:
            chosen = selector.get("matchLabels", {}).get("app.kubernetes.io/component")
            values = {chosen} if chosen else set(selector["matchExpressions"][0]["values"])
            if component not in values:
                continue
        for rule in spec.get("egress", []):
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    reach.add(f"ip:{peer['ipBlock']['cidr']}")
                elif "namespaceSelector" in peer:
                    reach.add(
                        f"namespace:{peer['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name']}"
                    )
                else:
                    reach.add(f"pods:{peer['podSelector']['matchLabels']['app.kubernetes.io/component']}")
    return reach


def test_workers_reach_only_their_engines() -> None:
    objs = render("prod")
    common = {"namespace:kube-system", "namespace:temporal"}
    assert _egress_to(objs, "worker-forecasting") == common | {"namespace:monitoring"}
    assert _egress_to(objs, "worker-conversations") == common | {
        "namespace:postgres",
        "namespace:inference",
        "ip:0.0.0.0/0",  # HTTPS only, private ranges excepted: external endpoints and tools
    }
    assert _egress_to(objs, "worker-ops") == common | {
        "namespace:postgres",
        "namespace:monitoring",
        "namespace:apps",
        "ip:0.0.0.0/0",  # the Kubernetes API, ports 443 and 6443 only
    }
    assert _egress_to(objs, "db-migrate") == {"namespace:kube-system", "namespace:postgres"}


SECRETISH = re.compile(
    r"(password|passwd|secret|token|api_?key|private_?key|credentials?|database_url)$", re.I
)
CREDENTIAL_VALUE = re.compile(r"://[^/@\s:]+:[^/@\s]+@|-----BEGIN|^(sk|ghp|xox[bp])[-_][A-Za-z0-9]{8,}")


def _strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _strings(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, str) else []


def test_the_manifests_carry_no_secret_values(objs: list[Obj]) -> None:
    for obj in objs:
        name = name_of(obj)
        if obj["kind"] == "Secret":
            assert not obj.get("data") and not obj.get("stringData"), f"{name} holds secret values"
        for path, value in _strings(obj):
            assert not CREDENTIAL_VALUE.search(value), f"{name} {path} looks like a credential"
    for name, env in _environment(objs).items():
        for var, value in env.items():
            if SECRETISH.search(var):
                assert isinstance(value, dict) and "secretKeyRef" in value, (
                    f"{name}: {var} must come from a Secret (valueFrom.secretKeyRef), not a literal"
                )
    assert not [var for var in configmap(objs, "lcp-settings") if SECRETISH.search(var)]


def test_the_models_policy_names_endpoint_keys_only_by_variable(objs: list[Obj]) -> None:
    """An endpoint's api_key in the shipped models policy is a ${VAR} (from a Secret), never the key."""
    policy = yaml.safe_load(configmap(objs, "lcp-policies")["models.yaml"])
    entries = [*policy["models"], *(m["canary"] for m in policy["models"] if m.get("canary"))]
    for entry in entries:
        key = entry.get("api_key")
        assert key is None or re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*(:-)?\}", key), (
            f"{entry.get('name', 'a canary')}: api_key {key!r}"
        )


def test_the_secret_check_finds_a_literal_credential() -> None:
    objs = render("prod")
    api = by_kind(objs, "Deployment")["lcp-api"]["spec"]["template"]["spec"]["containers"][0]
    api["env"][0] = {"name": "DATABASE_URL", "value": "postgresql://lcp:hunter2@db/lcp"}
    with pytest.raises(AssertionError, match="credential"):
        test_the_manifests_carry_no_secret_values(objs)
    objs = render("prod")
    by_kind(objs, "Deployment")["lcp-api"]["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "LCP_METRICS__TOKEN", "value": "abc"}
    )
    with pytest.raises(AssertionError, match="must come from a Secret"):
        test_the_manifests_carry_no_secret_values(objs)


def test_the_ops_kubeconfig_is_the_in_cluster_service_account(objs: list[Obj], tmp_path: Path) -> None:
    """The official client loads it (as workers/main.py does) and sends the mounted token to the API
    server the cluster's DNS names."""
    kubeconfig = yaml.safe_load(configmap(objs, "lcp-ops-kubeconfig")["kubeconfig"])
    mounted = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    (tmp_path / "token").write_text("the-service-account-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    text = yaml.safe_dump(kubeconfig).replace(str(mounted), str(tmp_path))
    (tmp_path / "kubeconfig").write_text(text)
    api = config.new_client_from_config(config_file=str(tmp_path / "kubeconfig"))
    try:
        assert api.configuration.host == "https://kubernetes.default.svc"
        assert api.configuration.get_api_key_with_prefix("BearerToken") == "Bearer the-service-account-token"
        assert api.configuration.ssl_ca_cert == str(tmp_path / "ca.crt")
        assert isinstance(api, client.ApiClient)
    finally:
        api.close()


def test_the_mtls_component_gives_every_temporal_client_its_certificates(tmp_path: Path) -> None:
    here = tmp_path / "overlay"
    here.mkdir()

    def relative(path: Path) -> Path:
        return Path(*[".."] * len(here.parts[1:]), *path.parts[1:])

    (here / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(relative(DEPLOY / "overlays" / "prod"))],
                "components": [str(relative(DEPLOY / "components" / "temporal-mtls"))],
            }
        )
    )
    objs = kustomize(here)
    for name, pod in pod_templates(objs).items():
        env = {var["name"]: var.get("value") for var in pod["containers"][0].get("env", [])}
        if name.endswith("lcp-db-migrate"):
            assert "LCP_TEMPORAL__TLS_CERT" not in env
            continue
        assert env["LCP_TEMPORAL__TLS_CERT"] == "/etc/lcp/temporal-tls/tls.crt", name
        secret = next(v for v in pod["volumes"] if v["name"] == "temporal-tls")["secret"]
        assert secret["secretName"] == "lcp-temporal-tls", name
    for obj in objs:
        if CRDS.get(obj["apiVersion"]) != obj["kind"]:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
