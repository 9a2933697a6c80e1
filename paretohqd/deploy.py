"""Scheduler files made from a run's plan (`paretohqd plan CONFIG --slurm / --k8s / --skypilot`):
every wave of units (`paretohqd.units`) becomes one array of tasks, each task running
`paretohqd run CONFIG --wave WAVE --unit-index I` with I its index in the array, and the waves run
one after another. The run folder (`runs_dir`) must be on storage every task sees.

- Slurm: a script that submits one job array per wave, each after the one before succeeded
  (`sbatch --dependency=afterok`), `$SLURM_ARRAY_TASK_ID` the index.
- Kubernetes: one Indexed Job per wave (`completionMode: Indexed`, `$JOB_COMPLETION_INDEX`) and a
  script that applies them in order, each once the one before completed.
- SkyPilot: one managed-jobs pipeline (`sky jobs launch`), a task per wave on as many nodes as
  the wave has units, `$SKYPILOT_NODE_RANK` the index.

The files are text made here from the plan's data (no scheduler is imported or run).
"""

from __future__ import annotations

import math
import re
import shlex

import yaml


def unit_command(run_args: list[str], wave: str, index_var: str) -> str:
    """The shell command of one array task: `paretohqd` + `run_args` (`run CONFIG --set ...`) + the
    wave and the index, read from the scheduler's variable `index_var` when the task starts.

    Examples:
        >>> print(unit_command(["run", "my config.yaml"], "stage1", "SLURM_ARRAY_TASK_ID"))
        paretohqd run 'my config.yaml' --wave stage1 --unit-index "$SLURM_ARRAY_TASK_ID"
    """
    return shlex.join(["paretohqd", *run_args, "--wave", wave, "--unit-index"]) + f' "${index_var}"'


def _gpus(units: list[dict]) -> int:
    """Whole GPUs each task of a wave asks for: `num_gpus` of its units' resources (None = 1 where
    there are GPUs, so 1; a fraction also takes a whole one here: a scheduler hands out whole GPUs)."""
    wants = [u["resources"]["num_gpus"] for u in units]
    return max(1 if g is None else math.ceil(g) for g in wants)


def _cpus(units: list[dict]) -> int:
    return max(1, *(math.ceil(u["resources"]["num_cpus"]) for u in units))


def _minutes(units: list[dict]) -> int:
    """A wave's time limit: twice its slowest unit's estimate, plus 15 minutes for loading."""
    return math.ceil(2 * max(u["estimated_device_s"] for u in units) / 60) + 15


def _by_wave(p: dict) -> list[tuple[str, list[dict]]]:
    units = {u["id"]: u for u in p["units"]}
    return [(wave, [units[i] for i in ids]) for wave, ids in p["waves"].items()]


def dns_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label: lower case letters, digits and `-`, 63 at most).

    Examples:
        >>> dns_name("My_Run-stage2-generate")
        'my-run-stage2-generate'
    """
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")


def slurm_script(p: dict, run_args: list[str]) -> str:
    """A bash script that submits the run to Slurm: one job array per wave, chained by afterok."""
    name = p["run"].rstrip("/").split("/")[-1]
    lines = ["#!/bin/bash",
             f"# The run {p['run']} ({p['method']}) as Slurm job arrays, one per wave, each wave after the one",
             "# before succeeded. Made by `paretohqd plan CONFIG --slurm FILE`; submit with `bash FILE`.",
             "# Every task runs one unit: `paretohqd run CONFIG --wave WAVE --unit-index $SLURM_ARRAY_TASK_ID`.",
             "# runs_dir must be on storage every node sees. Site options (partition, account, ...): SBATCH_ARGS.",
             f"# Time limits: twice the estimate ({p['costs']} costs) + 15 min; adjust to your hardware.",
             "set -euo pipefail",
             'SBATCH_ARGS=${SBATCH_ARGS:-}',
             "mkdir -p slurm-logs",
             'after=""',
             "submit() {  # WAVE TASKS MINUTES SBATCH-OPTIONS COMMAND",
             '  local id',
             '  # shellcheck disable=SC2086  # SBATCH_ARGS and the options are word lists',
             '  id=$(sbatch --parsable --job-name="$NAME-$1" --array="0-$(($2 - 1))" --time="$3" $4 $SBATCH_ARGS \\',
             '       ${after:+--dependency=afterok:$after} --output="slurm-logs/%x-%a.out" --wrap="$5")',
             '  after=${id%%;*}  # (--parsable prints JOBID or JOBID;CLUSTER)',
             '  echo "wave $1: job $after, $2 task(s)"',
             "}",
             f"NAME={shlex.quote(name)}"]
    for wave, units in _by_wave(p):
        gpus = _gpus(units) if any(u["resources"]["executor"] for u in units) else 0
        opts = f"--cpus-per-task={_cpus(units)}" + (f" --gres=gpu:{gpus}" if gpus else "")
        cmd = unit_command(run_args, wave, "SLURM_ARRAY_TASK_ID")
        lines.append(f"submit {shlex.quote(wave)} {len(units)} {_minutes(units)} {shlex.quote(opts)} {shlex.quote(cmd)}")
    return "\n".join(lines) + "\n"


def k8s_jobs(p: dict, run_args: list[str], *, image: str = "paretohqd:latest", claim: str = "paretohqd-runs",
             workdir: str = "/work") -> dict[str, str]:
    """Kubernetes files: `NN-WAVE.yaml`, one Indexed Job per wave, and `submit.sh`, which applies them
    in order, each once the one before completed. The volume `claim` (ReadWriteMany) is mounted at
    `workdir`, where the tasks start: the config, data and runs_dir (relative to it) live there."""
    name = dns_name(p["run"].rstrip("/").split("/")[-1])
    files: dict[str, str] = {}
    script = ["#!/bin/bash", f"# The run {p['run']} on Kubernetes: one Indexed Job per wave, in order.",
              "# Made by `paretohqd plan CONFIG --k8s DIR`; run `bash DIR/submit.sh` from DIR.", "set -euo pipefail"]
    for n, (wave, units) in enumerate(_by_wave(p)):
        job = dns_name(f"{name}-{wave}")
        gpus = _gpus(units) if any(u["resources"]["executor"] for u in units) else 0
        container = {"name": "unit", "image": image, "workingDir": workdir,
                     "command": ["sh", "-c", "exec " + unit_command(run_args, wave, "JOB_COMPLETION_INDEX")],
                     "resources": {"requests": {"cpu": str(_cpus(units))},
                                   "limits": {"nvidia.com/gpu": gpus} if gpus else {}},
                     "volumeMounts": [{"name": "work", "mountPath": workdir}]}
        spec = {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job, "labels": {"app": "paretohqd", "run": name, "wave": dns_name(wave)}},
                "spec": {"completionMode": "Indexed", "completions": len(units), "parallelism": len(units),
                         "backoffLimit": 3 * len(units),
                         "template": {"spec": {"restartPolicy": "Never", "containers": [container],
                                               "volumes": [{"name": "work",
                                                            "persistentVolumeClaim": {"claimName": claim}}]}}}}
        file = f"{n:02d}-{dns_name(wave)}.yaml"
        files[file] = f"# wave {wave}: {len(units)} unit(s), made by `paretohqd plan CONFIG --k8s DIR`\n" + yaml.safe_dump(spec, sort_keys=False)
        script += [f"kubectl apply -f {file}",
                   f"kubectl wait --for=condition=complete --timeout={_minutes(units)}m job/{job}"]
    files["submit.sh"] = "\n".join(script) + "\n"
    return files


def skypilot_yaml(p: dict, run_args: list[str], *, accelerator: str = "H100", bucket: str = "paretohqd-runs",
                  workdir: str = "~/sky_workdir") -> str:
    """A SkyPilot managed-jobs pipeline: a task per wave, in order, on one node per unit (spot, with
    recovery), `$SKYPILOT_NODE_RANK` the unit's index. The bucket is mounted at runs_dir (relative
    to `workdir`, where the tasks start) so that every node and every recovered task sees the run."""
    runs = p["run"].rsplit("/", 1)[0] if "/" in p["run"] else "."
    mount = runs if runs.startswith(("/", "~")) else f"{workdir}/{runs}"
    docs = [{"name": dns_name(p["run"].rstrip("/").split("/")[-1])}]
    for wave, units in _by_wave(p):
        gpus = _gpus(units) if any(u["resources"]["executor"] for u in units) else 0
        resources = {"cpus": f"{_cpus(units)}+", "use_spot": True, "job_recovery": {"max_restarts_on_errors": 3}}
        if gpus:
            resources["accelerators"] = f"{accelerator}:{gpus}"
        docs.append({"name": dns_name(wave), "num_nodes": len(units), "resources": resources, "workdir": ".",
                     "file_mounts": {mount: {"name": bucket, "mode": "MOUNT"}},
                     "run": unit_command(run_args, wave, "SKYPILOT_NODE_RANK") + "\n"})
    head = (f"# The run {p['run']} as a SkyPilot managed-jobs pipeline: one task per wave, in order, one node per\n"
            "# unit. Made by `paretohqd plan CONFIG --skypilot FILE`; launch with `sky jobs launch FILE`.\n")
    return head + yaml.safe_dump_all(docs, sort_keys=False)
