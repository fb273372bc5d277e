"""Side effects against the API server, for any kind, through the kubernetes dynamic client."""

from __future__ import annotations

import contextlib
from typing import Any

from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ApiException, NotFoundError, ResourceNotFoundError


def _as_sent(_client: DynamicClient, data: dict[str, Any]) -> dict[str, Any]:
    """The response as the API server sent it (plain dicts), not the dynamic client's
    `ResourceInstance`, which rebuilds every field as an object and `to_dict` back again."""
    return data


def _release(response) -> None:
    """Hand an unneeded response's connection back to the pool. With `serialize=False` the
    dynamic client returns the response unread (it asks for it with `preload_content=False`;
    `meta_request`, kubernetes/dynamic/client.py, kubernetes 37.0.1): left so, its connection is
    never reused, and the next call opens a new TLS connection."""
    response.drain_conn()
    response.release_conn()


def client_configuration(connections: int | None = None) -> k8s.Configuration:
    """A copy of the default configuration (what `load_kube_config` or `load_incluster_config`
    set), with `connections` kept open and the proxy pinned to the one the environment gives now.

    Both loaders assign the host again before every request (their `refresh_api_key_hook`,
    `_set_config` in kubernetes 37.0.1 `config/kube_config.py` and `config/incluster_config.py`),
    and while the proxy is taken from the environment every assignment looks it up again (the
    `Configuration.host` setter calls `urllib.request.getproxies`, which walks `os.environ`): 10%
    of the controller's time with 200 runs at once (py-spy), and more in a pod, whose environment
    holds every Service of its namespace. Setting the proxy, to the same value, ends that."""
    configuration = k8s.Configuration.get_default_copy()
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    configuration.proxy = configuration.proxy
    return configuration


class PrerequisiteMissingError(RuntimeError):
    """A CRD the run needs is not installed (or not at the needed version)."""


class KubeClient:
    def __init__(self, api_client: k8s.ApiClient | None = None, connections: int | None = None):
        """`connections`: how many connections to the API server to keep open, one per thread that
        calls at once (the client's default is 5 per CPU; a thread beyond it opens a new TLS
        connection on each call)."""
        if api_client is None:
            api_client = k8s.ApiClient(client_configuration(connections))
        self.dynamic = DynamicClient(api_client)
        self.core = k8s.CoreV1Api(self.dynamic.client)

    def _resource(self, api_version: str, kind: str):
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise PrerequisiteMissingError(f"{kind} ({api_version}) is not served by this cluster") from None

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace, serializer=_as_sent)
        except NotFoundError:
            return None

    def create(self, obj: dict[str, Any], namespace: str) -> bool:
        """Create; False if an object of that name already exists (creates are idempotent). Under
        strict field validation, as kubectl creates: a field the kind's schema does not have is
        refused (400), not silently pruned (KEP-2885, GA in Kubernetes v1.27)."""
        try:
            response = self._resource(obj["apiVersion"], obj["kind"]).create(
                body=obj, namespace=namespace, query_params=[("fieldValidation", "Strict")], serialize=False
            )
            _release(response)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]) -> None:
        resource = self._resource(api_version, kind)
        response = resource.status.patch(
            name=name,
            namespace=namespace,
            body={"status": status},
            content_type="application/merge-patch+json",
            serialize=False,
        )
        _release(response)

    def patch(self, api_version: str, kind: str, name: str, namespace: str, body: dict[str, Any]) -> None:
        response = self._resource(api_version, kind).patch(
            name=name, namespace=namespace, body=body, content_type="application/merge-patch+json", serialize=False
        )
        _release(response)

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        found = self._resource(api_version, kind).get(namespace=namespace, label_selector=selector, serializer=_as_sent)
        return found["items"]

    def log_tail(self, pod: str, namespace: str, container: str, lines: int, previous: bool = False) -> str:
        """A container's last `lines` log lines (`previous`: of its terminated instance before a
        restart), at most 16 KiB."""
        return self.core.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=lines, limit_bytes=16 * 1024, previous=previous
        )

    def delete_labeled(
        self, api_version: str, kind: str, namespace: str, selector: str, owner_uid: str | None = None
    ) -> int:
        """Delete the objects `selector` matches (those owned by `owner_uid` only, when given);
        how many there were."""
        try:
            resource = self._resource(api_version, kind)
        except PrerequisiteMissingError:
            return 0
        items = [
            item
            for item in resource.get(namespace=namespace, label_selector=selector).items
            if owner_uid is None or any(ref.uid == owner_uid for ref in item.metadata.ownerReferences or ())
        ]
        for item in items:
            with contextlib.suppress(NotFoundError):
                resource.delete(name=item.metadata.name, namespace=namespace, body={"propagationPolicy": "Background"})
        return len(items)

    def require_kind(self, api_version: str, kind: str) -> None:
        self._resource(api_version, kind)

    def refresh_discovery(self) -> None:
        """Forget cached API discovery (it is kept in a file across processes)."""
        self.dynamic.resources.invalidate_cache()
