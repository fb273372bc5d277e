"""Side effects against the API server, for any kind, through the kubernetes dynamic client."""

from __future__ import annotations

import contextlib
from typing import Any

from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ApiException, NotFoundError, ResourceNotFoundError


class PrerequisiteMissingError(RuntimeError):
    """A CRD the run needs is not installed (or not at the needed version)."""


class KubeClient:
    def __init__(self, api_client: k8s.ApiClient | None = None):
        self.dynamic = DynamicClient(api_client or k8s.ApiClient())

    def _resource(self, api_version: str, kind: str):
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise PrerequisiteMissingError(f"{kind} ({api_version}) is not served by this cluster") from None

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def create(self, obj: dict[str, Any], namespace: str) -> bool:
        """Create; False if an object of that name already exists (creates are idempotent)."""
        try:
            self._resource(obj["apiVersion"], obj["kind"]).create(body=obj, namespace=namespace)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]) -> None:
        resource = self._resource(api_version, kind)
        resource.status.patch(
            name=name, namespace=namespace, body={"status": status}, content_type="application/merge-patch+json"
        )

    def patch(self, api_version: str, kind: str, name: str, namespace: str, body: dict[str, Any]) -> None:
        self._resource(api_version, kind).patch(
            name=name, namespace=namespace, body=body, content_type="application/merge-patch+json"
        )

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [
            item.to_dict()
            for item in self._resource(api_version, kind).get(namespace=namespace, label_selector=selector).items
        ]

    def delete_labeled(self, api_version: str, kind: str, namespace: str, selector: str) -> int:
        try:
            resource = self._resource(api_version, kind)
        except PrerequisiteMissingError:
            return 0
        items = resource.get(namespace=namespace, label_selector=selector).items
        for item in items:
            with contextlib.suppress(NotFoundError):
                resource.delete(name=item.metadata.name, namespace=namespace, body={"propagationPolicy": "Background"})
        return len(items)

    def require_kind(self, api_version: str, kind: str) -> None:
        self._resource(api_version, kind)

    def refresh_discovery(self) -> None:
        """Forget cached API discovery (it is kept in a file across processes)."""
        self.dynamic.resources.invalidate_cache()
