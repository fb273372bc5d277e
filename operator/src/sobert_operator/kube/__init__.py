"""Kubernetes-side pure logic: reading job states, planning what to create."""
