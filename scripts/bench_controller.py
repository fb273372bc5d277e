"""Controller benchmark: N SobertRuns submitted at once against the testbed kube-apiserver.

Measures, per run, the time from its create call to the creation of its prepare Job and of its
PyTorchJob, and from its prepare Job's completion to its PyTorchJob (the controller's reaction to
a finished stage), and samples the controller process's memory. The bench plays the Job
controller: each prepare Job is marked Complete as soon as it appears, by as many workers as
kube-controller-manager's Job controller syncs at once (`--concurrent-job-syncs`, default 5 in
kubernetes v1.35 cmd/kube-controller-manager/app/options/jobcontroller.go). The controller runs as a
real `kopf run` subprocess, as in a cluster.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

JOB_CONTROLLER_WORKERS = 5


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_controller(runs: int = 200) -> dict:
    import psutil
    from kubernetes import client, config, watch

    from sobert_api.crd import API_VERSION, KIND, crd_yaml
    from sobert_operator.cluster import DEFAULT_CLUSTER_CONFIG
    from sobert_testbed import apiserver, upstream
    from sobert_testbed.job_status import finished_status

    crds = upstream.workload_crds()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        testbed = apiserver.start(work / "kube")
        controller = None
        try:
            apiserver.install_crds(testbed, crds)
            (work / "crd.yaml").write_text(crd_yaml())
            testbed.kubectl("create", "-f", str(work / "crd.yaml"))
            testbed.kubectl("wait", "--for=condition=Established", "crd/sobertruns.sobert.dev", "--timeout=60s")
            namespace = "bench"
            testbed.kubectl("create", "namespace", namespace)
            testbed.kubectl(
                "create",
                "secret",
                "generic",
                "sobert-s3",
                "-n",
                namespace,
                "--from-literal=AWS_ACCESS_KEY_ID=k",
                "--from-literal=AWS_SECRET_ACCESS_KEY=s",
            )
            # No storage here: the runs' inputs are not read (the control path is what is measured).
            cluster_config = {**DEFAULT_CLUSTER_CONFIG, "check_inputs": False}
            (work / "cluster.yaml").write_text(yaml.safe_dump(cluster_config))
            env = {
                **os.environ,
                "KUBECONFIG": str(testbed.kubeconfig),
                "SOBERT_CLUSTER_CONFIG": str(work / "cluster.yaml"),
            }
            controller = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kopf",
                    "run",
                    "--standalone",
                    f"--namespace={namespace}",
                    "--quiet",
                    "-m",
                    "sobert_operator.controller.main",
                ],
                env=env,
                stdout=open(work / "controller.log", "wb"),  # noqa: SIM115 - the child owns it
                stderr=subprocess.STDOUT,
            )
            config.load_kube_config(str(testbed.kubeconfig))
            batch, custom = client.BatchV1Api(), client.CustomObjectsApi()
            time.sleep(5)  # let the controller start its watches
            process = psutil.Process(controller.pid)
            rss_idle = process.memory_info().rss

            submitted: dict[str, float] = {}
            prepare_seen: dict[str, float] = {}
            prepare_done: dict[str, float] = {}
            pretrain_seen: dict[str, float] = {}
            done = threading.Event()
            peak = [rss_idle]

            def sample_memory():
                while not done.is_set():
                    peak[0] = max(peak[0], process.memory_info().rss)
                    time.sleep(0.2)

            def until_done(fn):
                def wrapped():
                    try:
                        fn()
                    except Exception:  # the testbed going away ends the watches
                        if not done.is_set():
                            raise

                return wrapped

            def complete(name: str) -> None:
                status = finished_status([("Complete", "")])  # as the v1.35 Job controller writes it
                batch.patch_namespaced_job_status(name, namespace, {"status": status})
                prepare_done[name.removesuffix("-prepare")] = time.monotonic()

            @until_done
            def complete_prepare_jobs():
                with ThreadPoolExecutor(JOB_CONTROLLER_WORKERS) as workers:
                    for event in watch.Watch().stream(batch.list_namespaced_job, namespace, timeout_seconds=600):
                        job = event["object"]
                        name = job.metadata.name
                        if event["type"] == "ADDED" and name.endswith("-prepare"):
                            prepare_seen.setdefault(name.removesuffix("-prepare"), time.monotonic())
                            workers.submit(complete, name)
                        if done.is_set():
                            return

            @until_done
            def watch_pytorchjobs():
                stream = watch.Watch().stream(
                    custom.list_namespaced_custom_object,
                    "kubeflow.org",
                    "v1",
                    namespace,
                    "pytorchjobs",
                    timeout_seconds=600,
                )
                for event in stream:
                    if event["type"] == "ADDED":
                        pretrain_seen.setdefault(
                            event["object"]["metadata"]["name"].removesuffix("-pretrain"), time.monotonic()
                        )
                    if len(pretrain_seen) >= runs or done.is_set():
                        return

            threads = [
                threading.Thread(target=f, daemon=True)
                for f in (sample_memory, complete_prepare_jobs, watch_pytorchjobs)
            ]
            for thread in threads:
                thread.start()
            time.sleep(1)

            def submit(index: int):
                name = f"bench-{index:03d}"
                body = {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": name},
                    "spec": {
                        "preset": "base",
                        "data": {"posts": ["s3://dumps/Posts.xml"]},
                        "storage": {"uri": "s3://bucket/sobert"},
                        "parallel": {"procs_per_node": 8},
                    },
                }
                submitted[name] = time.monotonic()
                custom.create_namespaced_custom_object("sobert.dev", "v1alpha1", namespace, "sobertruns", body)

            cpu_before = sum(process.cpu_times()[:2])
            started = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(submit, range(runs)))
            submit_seconds = time.monotonic() - started
            deadline = time.monotonic() + 600
            while len(pretrain_seen) < runs and time.monotonic() < deadline:
                time.sleep(0.5)
            done.set()
            cpu_seconds = sum(process.cpu_times()[:2]) - cpu_before
            to_prepare = [prepare_seen[n] - submitted[n] for n in submitted if n in prepare_seen]
            to_pretrain = [pretrain_seen[n] - submitted[n] for n in submitted if n in pretrain_seen]
            reaction = [pretrain_seen[n] - prepare_done[n] for n in prepare_done if n in pretrain_seen]
            return {
                "runs": runs,
                "submit_seconds": round(submit_seconds, 2),
                "pytorchjobs_created": len(to_pretrain),
                "to_prepare_job_s": {
                    "median": round(statistics.median(to_prepare), 3),
                    "p99": round(_percentile(to_prepare, 0.99), 3),
                },
                "to_pytorchjob_s": {
                    "median": round(statistics.median(to_pretrain), 3),
                    "p99": round(_percentile(to_pretrain, 0.99), 3),
                    "max": round(max(to_pretrain), 3),
                },
                "prepare_done_to_pytorchjob_s": {
                    "median": round(statistics.median(reaction), 3),
                    "p99": round(_percentile(reaction, 0.99), 3),
                },
                "controller_cpu_ms_per_run": round(1000 * cpu_seconds / runs, 1),
                "controller_rss_mib": {"idle": round(rss_idle / 2**20, 1), "peak": round(peak[0] / 2**20, 1)},
            }
        finally:
            if controller is not None:
                controller.kill()
                controller.wait()
            testbed.stop()


if __name__ == "__main__":
    print(json.dumps(bench_controller(int(sys.argv[1]) if len(sys.argv) > 1 else 200), indent=2))
