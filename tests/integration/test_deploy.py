"""The Helm chart (charts/sobert) and the kustomize manifests (manifests/): lint, render, install.

Rendering and linting run with both Helm 3 and Helm 4. The install tests use a real
kube-apiserver + etcd (no scheduler, no kubelet: pods never run, which is expected; the test is
that every object is accepted and that the controller's identity has exactly the rights it needs).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from sobert_operator.cluster import DEFAULT_CLUSTER_CONFIG, ClusterConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sobert"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
MANIFESTS = ROOT / "manifests"
HELMS = ["helm3", "helm4"]
VALUES = {"default": [], "ci": ["-f", str(CI_VALUES)]}
STANDARD_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}
NAMESPACE = "sobert-system"
RELEASE = "sobert"
# The chart's fullname for release "sobert" (the release name contains the chart name).
FULLNAME = "sobert"


@pytest.fixture(scope="module")
def tools() -> Path:
    from sobert_testbed import apiserver

    return apiserver.tools_dir()


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory) -> dict[str, str]:
    """Helm's cache/config/data in a scratch dir: nothing read from or written to the user's."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def run(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def helm(tools: Path, env: dict[str, str], version: str, *args: str, check: bool = True):
    return run([str(tools / version), *args], env=env, check=check)


def render(tools, env, version: str, *args: str) -> list[dict]:
    out = helm(tools, env, version, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def kustomize(tools: Path, overlay: str) -> list[dict]:
    out = run([str(tools / "kubectl"), "kustomize", str(MANIFESTS / "overlays" / overlay)]).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    kinds = [doc["kind"] for doc in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {doc["kind"]: doc for doc in docs}


def normalized_rules(role: dict) -> list[tuple]:
    return sorted(
        (tuple(rule["apiGroups"]), tuple(rule["resources"]), tuple(sorted(rule["verbs"]))) for rule in role["rules"]
    )


def wildcards(docs: list[dict]) -> list[str]:
    found = []
    for doc in docs:
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                if any("*" in item for item in rule.get(field, [])):
                    found.append(f"{doc['kind']}/{doc['metadata']['name']}: {field} {rule[field]}")
    return found


# -- lint and render (no cluster) --------------------------------------------------------------


@pytest.mark.parametrize("values", sorted(VALUES))
@pytest.mark.parametrize("version", HELMS)
def test_helm_lint_strict(tools, helm_env, version, values):
    result = helm(tools, helm_env, version, "lint", "--strict", str(CHART), *VALUES[values])
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", sorted(VALUES))
@pytest.mark.parametrize("version", HELMS)
def test_helm_template_renders_labelled_least_privilege_objects(tools, helm_env, version, values):
    docs = render(tools, helm_env, version, *VALUES[values])
    objects = by_kind(docs)
    assert set(objects) == {"ServiceAccount", "ConfigMap", "Role", "RoleBinding", "Deployment"}
    for doc in docs:
        missing = STANDARD_LABELS - set(doc["metadata"].get("labels", {}))
        assert not missing, f"{doc['kind']} lacks {missing}"
        assert doc["metadata"]["namespace"] == NAMESPACE
    assert "ClusterRole" not in objects and "ClusterRoleBinding" not in objects
    assert wildcards(docs) == []

    deployment = objects["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    assert set(pod["metadata"]["labels"]) >= STANDARD_LABELS
    assert len(pod["metadata"]["annotations"]["checksum/config"]) == 64
    spec = pod["spec"]
    assert spec["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = spec["containers"]
    assert container["name"] == "controller"
    assert container["command"] + container["args"] == [
        "kopf",
        "run",
        "--standalone",
        "--namespace=$(POD_NAMESPACE)",
        "--liveness=http://0.0.0.0:8080/healthz",
        "-m",
        "sobert_operator.controller.main",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["SOBERT_CLUSTER_CONFIG"]["value"] == "/etc/sobert/cluster.yaml"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == 8080
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    assert container["imagePullPolicy"] == "IfNotPresent"
    repository, tag = container["image"].rsplit(":", 1)
    assert repository == "ghcr.io/sobert-dev/sobert-controller"
    assert tag not in ("", "latest")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert volumes[mounts["/etc/sobert"]]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]

    cluster = yaml.safe_load(objects["ConfigMap"]["data"]["cluster.yaml"])
    ClusterConfig.model_validate(cluster)
    if values == "default":
        assert cluster == DEFAULT_CLUSTER_CONFIG
        assert tag == "0.1.0"
    else:
        assert cluster["scheduler"] == "volcano" and "a100" in cluster["nodePools"]
        assert tag == "0.1.0-ci"
        assert spec["nodeSelector"] and spec["tolerations"] and spec["affinity"]


@pytest.mark.parametrize("version", HELMS)
def test_config_change_rolls_the_pod_and_bad_values_are_refused(tools, helm_env, version):
    def checksum(*args):
        deployment = by_kind(render(tools, helm_env, version, *args))["Deployment"]
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "cluster.scheduler=kueue")
    for bad in ("image.tag=latest", "cluster.scheduler=slurm", "cluster.pretrainTarget=mpijob", "replicas=2"):
        result = helm(tools, helm_env, version, "template", RELEASE, str(CHART), "--set", bad, check=False)
        assert result.returncode != 0, bad
        assert "schema" in result.stderr, result.stderr


@pytest.mark.parametrize("version", HELMS)
def test_trainjob_target_installs_the_runtime_its_trainjobs_refer_to(tools, helm_env, version):
    """With pretrainTarget trainjob the chart installs the TrainingRuntime the controller's
    TrainJobs name (ClusterConfig's defaults), with the grace period the launcher counts on; a
    ClusterTrainingRuntime of the user's is not shadowed by one of ours. Trainer's webhook admits
    it and the pods get the grace period in tests/integration/test_cluster_e2e.py."""
    from sobert_operator.render.pretrain import TRAINER_CONTAINER, TRAINER_REPLICATED_JOB

    defaults = ClusterConfig.model_validate(DEFAULT_CLUSTER_CONFIG)
    for sets, grace in ((["cluster.pretrainTarget=trainjob"], defaults.termination_grace_seconds),
                        (["cluster.pretrainTarget=trainjob", "cluster.terminationGraceSeconds=90"], 90)):  # fmt: skip
        objects = by_kind(render(tools, helm_env, version, *[f"--set={s}" for s in sets]))
        runtime = objects["TrainingRuntime"]
        assert runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
        assert (runtime["kind"], runtime["metadata"]["name"]) == (
            defaults.training_runtime_kind.value,
            defaults.training_runtime,
        )
        (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
        assert job["name"] == TRAINER_REPLICATED_JOB
        pod = job["template"]["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] == grace
        assert [c["name"] for c in pod["containers"]] == [TRAINER_CONTAINER]
    own = ["--set=cluster.pretrainTarget=trainjob", "--set=cluster.trainingRuntimeKind=ClusterTrainingRuntime"]
    assert "TrainingRuntime" not in by_kind(render(tools, helm_env, version, *own))
    assert "TrainingRuntime" not in by_kind(render(tools, helm_env, version))


def test_kustomize_matches_the_chart(tools, helm_env):
    """Same RBAC rules, container and pod settings, and cluster config as the chart's defaults."""
    chart = by_kind(render(tools, helm_env, "helm3"))
    default = kustomize(tools, "default")
    objects = by_kind(default)
    assert set(objects) == {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
    }
    assert "ClusterRole" not in objects and wildcards(default) == []
    assert normalized_rules(objects["Role"]) == normalized_rules(chart["Role"])
    assert (
        objects["CustomResourceDefinition"]["spec"]
        == yaml.safe_load((CHART / "crds" / "sobertruns.sobert.dev.yaml").read_text())["spec"]
    )
    for doc in default:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    binding = objects["RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "sobert", "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == objects["Role"]["metadata"]["name"]

    def pod(deployment):
        spec = json.loads(json.dumps(deployment["spec"]["template"]["spec"]))
        for volume in spec["volumes"]:
            volume.get("configMap", {}).pop("name", None)  # kustomize's has a content hash
        return spec

    assert pod(objects["Deployment"]) == pod(chart["Deployment"])
    assert objects["Deployment"]["spec"]["strategy"] == chart["Deployment"]["spec"]["strategy"]
    config_volume = next(v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert config_volume["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    assert yaml.safe_load(objects["ConfigMap"]["data"]["cluster.yaml"]) == DEFAULT_CLUSTER_CONFIG

    dev = by_kind(kustomize(tools, "dev"))
    (container,) = dev["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] != objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert not container["image"].endswith(":latest")
    dev_cluster = ClusterConfig.model_validate(yaml.safe_load(dev["ConfigMap"]["data"]["cluster.yaml"]))
    assert dev_cluster.trainer_image != DEFAULT_CLUSTER_CONFIG["trainerImage"]
    assert dev["ConfigMap"]["metadata"]["name"] != objects["ConfigMap"]["metadata"]["name"]  # rolls the pod


# -- on a real API server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    from sobert_testbed import apiserver

    with apiserver.with_upstream_crds(tmp_path_factory.mktemp("kube")) as testbed:
        yield testbed


@pytest.fixture(scope="module")
def install(kube, tools, helm_env):
    """`helm install` once per Helm major version, each into its own namespace."""
    done: dict[str, tuple[str, subprocess.CompletedProcess]] = {}

    def installed(version: str) -> tuple[str, subprocess.CompletedProcess]:
        if version not in done:
            namespace = NAMESPACE if version == "helm3" else f"{NAMESPACE}-{version}"
            result = helm(
                tools,
                helm_env,
                version,
                "install",
                RELEASE,
                str(CHART),
                "--namespace",
                namespace,
                "--create-namespace",
                "--kubeconfig",
                str(kube.kubeconfig),
            )
            done[version] = (namespace, result)
        return done[version]

    return installed


@pytest.mark.parametrize("version", HELMS)
def test_helm_install_creates_the_crd_and_the_controller(kube, install, version):
    namespace, result = install(version)
    assert "STATUS: deployed" in result.stdout
    # NOTES.txt: the S3 secret and how to submit.
    assert "kubectl -n" in result.stdout and "create secret generic sobert-s3" in result.stdout
    assert "sobertctl submit large --backend kubernetes" in result.stdout
    # The CRD comes from the chart's crds/ (the first install creates it; later ones keep it).
    crd = json.loads(kube.kubectl("get", "crd", "sobertruns.sobert.dev", "-o", "json").stdout)
    assert crd["spec"]["names"]["kind"] == "SobertRun"
    for kind in ("deployment", "role", "rolebinding", "serviceaccount", "configmap"):
        name = f"{FULLNAME}-config" if kind == "configmap" else FULLNAME
        obj = json.loads(kube.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    jsonpath = "jsonpath={.data.cluster\\.yaml}"
    cluster = kube.kubectl("get", "configmap", f"{FULLNAME}-config", "-n", namespace, "-o", jsonpath)
    assert yaml.safe_load(cluster.stdout) == DEFAULT_CLUSTER_CONFIG
    assert kube.kubectl("get", "clusterroles", "-l", "app.kubernetes.io/managed-by=Helm", "-o", "name").stdout == ""
    # A SobertRun can be created in the release namespace (the CRD is served).
    run = {
        "apiVersion": "sobert.dev/v1alpha1",
        "kind": "SobertRun",
        "metadata": {"name": "smoke", "namespace": namespace},
        "spec": {"preset": "tiny"},
    }
    kube.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(run))


def test_kustomize_default_overlay_applies(kube, install, tools):
    # The namespace exists already (helm --create-namespace; its Namespace object in the overlay
    # is applied too, but a server-side dry run persists nothing, so the namespaced objects need
    # it to exist). The objects of the helm release have the same names: client-side apply
    # computes a patch against them (kubectl warns that they lack its last-applied annotation),
    # which is what a switch from the chart to kustomize would do; --server-side would instead
    # report field-manager conflicts with helm. The CRD also exists (from helm's crds/).
    install("helm3")
    for overlay in ("default", "dev"):
        result = kube.kubectl("apply", "-k", str(MANIFESTS / "overlays" / overlay), "--dry-run=server")
        applied = result.stdout
        for name in ("deployment.apps/sobert", "role.rbac.authorization.k8s.io/sobert", "serviceaccount/sobert"):
            assert name in applied, applied
        assert "customresourcedefinition.apiextensions.k8s.io/sobertruns.sobert.dev" in applied


SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"


def can_i(kube, *args: str) -> bool:
    result = kube.kubectl("auth", "can-i", *args, f"--as={SERVICE_ACCOUNT}", check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), (args, result.stdout, result.stderr)
    return answer == "yes"


@pytest.mark.parametrize(
    "args",
    [
        ("create", "pytorchjobs.kubeflow.org", "-n", NAMESPACE),
        ("patch", "pytorchjobs.kubeflow.org", "-n", NAMESPACE),
        ("create", "trainjobs.trainer.kubeflow.org", "-n", NAMESPACE),
        ("create", "rayjobs.ray.io", "-n", NAMESPACE),
        ("patch", "sobertruns.sobert.dev", "--subresource=status", "-n", NAMESPACE),
        ("watch", "sobertruns.sobert.dev", "-n", NAMESPACE),
        ("create", "jobs.batch", "-n", NAMESPACE),
        ("delete", "jobs.batch", "-n", NAMESPACE),
        ("create", "configmaps", "-n", NAMESPACE),
        ("get", "secrets", "-n", NAMESPACE),
        ("create", "events", "-n", NAMESPACE),
        ("create", "events.events.k8s.io", "-n", NAMESPACE),
        ("list", "pods", "-n", NAMESPACE),
        ("get", "pods/log", "-n", NAMESPACE),
    ],
)
def test_controller_can(kube, install, args):
    install("helm3")
    assert can_i(kube, *args)


@pytest.mark.parametrize(
    "args",
    [
        ("list", "secrets", "-n", "default"),
        ("get", "secrets", "-n", "default"),
        ("get", "secrets", "--all-namespaces"),
        ("list", "secrets", "-n", NAMESPACE),
        ("watch", "secrets", "-n", NAMESPACE),
        ("create", "pytorchjobs.kubeflow.org", "-n", "default"),
        ("create", "clusterroles"),
        ("create", "roles", "-n", NAMESPACE),
        ("create", "rolebindings", "-n", NAMESPACE),
        ("delete", "nodes"),
        ("*", "*"),
        ("*", "*", "-n", NAMESPACE),
        ("create", "pods", "-n", NAMESPACE),
        ("delete", "pods", "-n", NAMESPACE),
        ("list", "pods", "-n", "default"),
        ("create", "pods/exec", "-n", NAMESPACE),
        ("get", "pods/log", "-n", "default"),
        ("delete", "sobertruns.sobert.dev", "-n", NAMESPACE),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ],
)
def test_controller_cannot(kube, install, args):
    install("helm3")
    assert not can_i(kube, *args)


def test_every_role_rule_is_granted(kube, install):
    """Each verb of each rule of the installed Role, as the ServiceAccount (the binding works)."""
    namespace, _ = install("helm3")
    role = json.loads(kube.kubectl("get", "role", FULLNAME, "-n", namespace, "-o", "json").stdout)
    checks = 0
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, subresource = resource.partition("/")
                target = f"{plural}.{group}" if group else plural
                extra = [f"--subresource={subresource}"] if subresource else []
                for verb in rule["verbs"]:
                    assert can_i(kube, verb, target, *extra, "-n", namespace), (verb, resource)
                    checks += 1
    assert checks >= 30


def test_controller_can_adopt_with_owner_reference_permission_enforcement(kube, install):
    """kopf's `adopt` sets `blockOwnerDeletion: true`; with the OwnerReferencesPermissionEnforcement
    admission plugin (on by default in OpenShift; on in this testbed) the creator then needs
    `update` on the owner's `finalizers` subresource. Created as the controller's ServiceAccount."""
    namespace, _ = install("helm3")
    run_doc = {
        "apiVersion": "sobert.dev/v1alpha1",
        "kind": "SobertRun",
        "metadata": {"name": "adopter", "namespace": namespace},
        "spec": {
            "preset": "tiny",
            "data": {"posts": ["s3://dumps/Posts.xml"]},
            "storage": {"uri": "s3://bucket/sobert"},
        },
    }
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(run_doc))
    owner = json.loads(kube.kubectl("get", "sobertrun", "adopter", "-n", namespace, "-o", "json").stdout)
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "adopter-spec",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"spec.json": "{}"},
    }
    result = kube.kubectl(
        "create", "-f", "-", f"--as=system:serviceaccount:{namespace}:{FULLNAME}", input=json.dumps(child), check=False
    )
    assert result.returncode == 0, result.stderr
