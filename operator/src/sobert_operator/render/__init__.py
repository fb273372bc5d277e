"""Pure renderers: validated spec + cluster config -> plain Kubernetes manifests (dicts)."""
