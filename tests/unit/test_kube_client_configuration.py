"""The API client's configuration: the proxy is read from the environment once, not on each
request (the config loaders assign the host before every request, and the host setter looked the
proxy up again: 10% of the controller's time with 200 runs at once)."""

from __future__ import annotations

from kubernetes import client as k8s
from kubernetes.client import configuration as k8s_configuration

from sobert_operator.kube.client import client_configuration


def test_the_proxy_comes_from_the_environment_once_not_on_each_request(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    default = k8s.Configuration()
    default.host = "https://10.0.0.1:443"  # what the loaders set
    default.api_key = {"authorization": "Bearer token"}
    default.refresh_api_key_hook = lambda configuration: setattr(configuration, "host", "https://10.0.0.1:443")
    monkeypatch.setattr(k8s.Configuration, "_default", default)
    configuration = client_configuration(connections=20)
    assert configuration.proxy == "http://proxy.example:3128"
    assert configuration.connection_pool_maxsize == 20

    looked_up = []
    real = k8s_configuration.getproxies
    monkeypatch.setattr(k8s_configuration, "getproxies", lambda: looked_up.append(1) or real())
    for _ in range(3):
        configuration.auth_settings()  # what each request does first (`update_params_for_auth`)
    assert looked_up == []
    assert configuration.host == "https://10.0.0.1:443"
    assert configuration.proxy == "http://proxy.example:3128"
