"""`sobertctl submit PRESET|-f spec.yaml --backend local`: run the whole pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

from sobertctl.specs import add_spec_arguments, spec_from_args

DEFAULT_STORAGE = ".sobert"


def register(sub) -> None:
    parser = sub.add_parser("submit", help="Run prepare -> pretrain -> convert for a preset or spec file.")
    add_spec_arguments(parser)
    parser.add_argument(
        "--backend",
        choices=["local", "kubernetes"],
        default="local",
        help="local: run here (torchrun on CPU/GPUs); kubernetes: create a SobertRun in the kube context.",
    )
    parser.add_argument("--node-pool", help="Node pool for pretraining (kubernetes backend).")
    parser.add_argument("--queue", help="Kueue LocalQueue / Volcano queue (kubernetes backend).")
    parser.add_argument("-n", "--namespace", help="Namespace (kubernetes backend; default: the context's).")
    parser.add_argument("--context", help="kube context (kubernetes backend; default: current).")
    parser.add_argument(
        "--cluster-config", type=Path, help="Cluster config YAML for --dry-run renders (default: the chart's defaults)."
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(DEFAULT_STORAGE) / "work", help="Local scratch for stage processes."
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Validate and print the spec and commands; run nothing (and read no input: a submit checks them).",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.backend == "kubernetes":
        args.sets = [*args.sets, "backend=kubernetes"]
        for flag, path in (("node_pool", "placement.node_pool"), ("queue", "placement.queue")):
            if getattr(args, flag):
                args.sets.append(f"{path}={getattr(args, flag)}")
        return submit_kubernetes(args, spec_from_args(args))
    from sobert_operator.launch import LOCAL_GRACE_SECONDS, LaunchTarget, convert_command, pretrain_command

    spec = spec_from_args(args, default_storage=DEFAULT_STORAGE)
    if args.dry_run:
        print(spec.model_dump_json(indent=2))
        pretrain = pretrain_command(
            spec,
            "spec.json",
            "<dataset-id>",
            str(args.workdir),
            target=LaunchTarget.local,
            grace_seconds=LOCAL_GRACE_SECONDS,
        )
        print("# pretrain: " + " ".join(pretrain))
        print("# convert:  " + " ".join(convert_command("spec.json", "<dataset-id>")))
        return 0
    from sobert_operator.local_executor import LocalExecutor

    check_layers_or_refuse(spec)
    check_inputs_or_refuse(spec)
    check_budget(spec)
    print(
        f"run {spec.name}: preset {spec.preset or '-'}, {spec.model.parameter_count():,} parameters, "
        f"{spec.train_iters:,} steps x {spec.train.global_batch_size} x {spec.model.seq_length} tokens, "
        f"{spec.parallel.world_size} process(es) "
        f"(TP {spec.parallel.tensor_parallel} x DP {spec.parallel.data_parallel})",
        flush=True,
    )
    executor = LocalExecutor(spec, args.workdir, emit=lambda line: print(line, flush=True))
    summary = executor.run().as_dict()
    print(f"\nrun {spec.name} complete")
    width = max(len(k) for k in summary["artifacts"])
    for name, uri in summary["artifacts"].items():
        print(f"  {name.upper():<{width}}  {uri}")
    total = sum(summary["stage_seconds"].values())
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in summary["stage_seconds"].items()) or "nothing left to do"
    print(f"  TIME  {timings} (total {total:.1f}s)")
    if summary["finetune"]:
        print("\n" + results_table(summary["finetune"]))
    print(f"\nload it:  MegatronBertForMaskedLM.from_pretrained({summary['artifacts']['hf_model']!r})")
    return 0


def check_layers_or_refuse(spec) -> None:
    """`model.transformer_impl: te` on the embedded backend needs what TE needs on this machine: a
    GPU and TransformerEngine in this environment. Refused here, before anything runs, instead of
    by the trainer after data preparation (a cluster's pods run the trainer image, which has TE)."""
    import importlib.util

    from sobert_api.loading import SpecError
    from sobert_api.spec import TransformerImpl
    from sobert_operator.cost.local_gpus import gpu_names

    if spec.model.transformer_impl is not TransformerImpl.te:
        return
    missing = [
        what
        for what, present in (
            ("a GPU (nvidia-smi lists none)", gpu_names()),
            ("TransformerEngine (transformer_engine is not installed)", importlib.util.find_spec("transformer_engine")),
        )
        if not present
    ]
    if missing:
        raise SpecError(
            f"model.transformer_impl: te needs {' and '.join(missing)} on this machine; "
            "set model.transformer_impl=local, or leave it unset to use TE where it can run"
        )


def check_inputs_or_refuse(spec, credentials: tuple[str, str] | None = None) -> None:
    """Refuse a run whose inputs are missing, unreadable or (task files) do not parse, before
    anything runs or is created (`sobert_operator.input_check`)."""
    from sobert_api.loading import SpecError
    from sobert_operator.input_check import InputsUnreachable, check_inputs

    try:
        problems = check_inputs(spec, credentials)
    except InputsUnreachable as exc:
        raise SpecError(f"inputs: cannot be checked: {exc}") from exc
    if problems:
        raise SpecError("inputs:\n  " + "\n  ".join(problems))


def check_budget(spec, cluster=None) -> None:
    """Refuse a run whose forecast exceeds its budget (unless --over-budget); say what it will cost."""
    from sobert_api.loading import SpecError
    from sobert_operator.cost.catalog import load_catalog
    from sobert_operator.cost.devices import budget_problem, forecast_for
    from sobert_operator.cost.forecast import Measured
    from sobert_operator.cost.measured import posts_bytes
    from sobert_operator.cost.money import usd

    forecast = forecast_for(spec, load_catalog(), cluster, measured=Measured(posts_bytes=posts_bytes(spec)))
    problem = budget_problem(spec, forecast)
    if problem:
        raise SpecError(f"budget: {problem}")
    budget = f" of a {usd(spec.budget.usd)} budget" if spec.budget.usd is not None else ""
    over = " (over budget: submitted with --over-budget)" if spec.budget.allow_over_forecast and budget else ""
    print(f"forecast: {usd(forecast.usd)} ({usd(forecast.usd_low)}-{usd(forecast.usd_high)}){budget}{over}")


def submit_kubernetes(args: argparse.Namespace, spec) -> int:
    """Create a SobertRun (or, with --dry-run, print every manifest the run will create)."""
    from sobert_api.dataset import dataset_id
    from sobert_operator.cluster import default_cluster_config, load_cluster_config
    from sobert_operator.preflight import preflight
    from sobertctl.kube import run_object
    from sobertctl.output import plain_yaml_all

    cluster = load_cluster_config(args.cluster_config) if args.cluster_config else default_cluster_config()
    problems = preflight(spec, cluster)
    if problems:
        raise ValueError("preflight: " + "; ".join(problems))
    check_budget(spec, cluster)
    run = run_object(spec)
    if args.dry_run:
        # Only here: the renderers import the Training Operator SDK (about 3 s), which a submit
        # does not need (the controller renders).
        from sobert_operator.kube.plan import render_all

        documents = [run, *render_all(spec, cluster, dataset_id(spec))]
        print(plain_yaml_all(documents), end="")
        return 0
    from sobertctl.kube import connect

    client, namespace = connect(args.context)
    namespace = args.namespace or namespace
    _check_inputs_with_the_runs_secret(spec, cluster, client, namespace)
    if not client.create(run, namespace):
        raise ValueError(f"SobertRun {namespace}/{spec.name} already exists (sobertctl status {spec.name})")
    print(f"sobertrun {spec.name} created in namespace {namespace}")
    print(
        f"  {spec.model.parameter_count():,} parameters, {spec.train_iters:,} steps, "
        f"{spec.parallel.nodes} node(s) x {spec.parallel.procs_per_node} GPU(s)"
    )
    print("\nnext:")
    ns = f" -n {namespace}"
    print(f"  sobertctl status {spec.name}{ns}        # phase, stage, step, loss")
    print(f"  sobertctl logs {spec.name}{ns} -f       # current stage's logs")
    print(f"  sobertctl cancel {spec.name}{ns}        # stop and delete its jobs")
    return 0


def _check_inputs_with_the_runs_secret(spec, cluster, client, namespace: str) -> None:
    """The inputs checked with the keys in the run's storage Secret, as its pods will read them.
    When this user may not read that Secret (or it is not there yet), the check is left to the
    controller, which reads it before the run's first stage."""
    from kubernetes.client.exceptions import ApiException

    from sobert_operator.kube.progress import storage_credentials
    from sobert_operator.render.common import storage_secret_name

    secret_name = storage_secret_name(spec, cluster)
    try:
        credentials = storage_credentials(client.get("v1", "Secret", secret_name, namespace))
    except ApiException as exc:
        credentials, why = None, f"cannot read Secret {namespace}/{secret_name} ({exc.reason})"
    else:
        why = f"Secret {namespace}/{secret_name} has no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if credentials is None:
        print(f"inputs: not checked here: {why}; the controller checks them before the first stage")
        return
    check_inputs_or_refuse(spec, credentials)


def results_table(results: dict[str, dict]) -> str:
    """The finetune results of a run as a Markdown table (readable in a terminal too)."""
    lines = [
        "| task | metric | score | accuracy | train | validation | best epoch |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task, r in results.items():
        accuracy = f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "-"
        lines.append(
            f"| {task} | {r['metric']} | {r['score']:.4f} | {accuracy} | {r['train_examples']} | "
            f"{r['validation_examples']} | {r['best_epoch']} |"
        )
    return "\n".join(lines)
