# Benchmarks: one rule per device, so each carries a resource named after its device
# (device_<name> = 1): one device never runs two benchmarks at once, while different
# devices run in parallel. Across concurrent runs and checkouts each job also holds a
# per-user lock named after the physical device (slimlab/lab/lock.py).
# A job whose device is offline, times out or whose tool fails exits non-zero
# (keep-going lets the other devices finish), leaves no record, and writes
# threads-<n>.failed.json with the reason and its tag; the next run retries it.
# Records sit under their option set ({options}, a name from bench.option_sets);
# bench_settings hands the runner that set's name and options.
# Every bench rule is a local rule: with a cluster executor (profiles/slurm) it still runs
# in the snakemake process on the lab host, the machine that reaches the devices. So the
# device_<name> resource and the per-user device locks keep holding there; a cluster
# node could reach neither the devices nor the locks.

for _device in DEVICES.values():
    if _device.resource not in workflow.global_resources:
        workflow.register_resource(_device.resource, 1)

    rule:
        name:
            f"bench_{_device.resource}"
        # Runs on the lab host, never submitted to a cluster (see the top of this file).
        localrule: True
        input:
            "results/artifacts/{artifact}/artifact.json",
        output:
            f"results/bench/{_device.name}/{{artifact}}/{{options}}/threads-{{threads}}.json",
        wildcard_constraints:
            artifact=r".+",
            options=OPTION_SET,
            threads=r"\d+",
        params:
            device=_device.name,
            inventory=config["lab"]["inventory"],
            settings=bench_settings,
        resources:
            **{_device.resource: 1},
        # Not a tuning knob: a benchmark on this host holds every core, so no training job skews it.
        threads: workflow.cores if registry.transports()[_device.transport].runs_on_host else 1
        log:
            f"results/logs/bench/{_device.name}/{{artifact}}/{{options}}/threads-{{threads}}.log",
        conda:
            "../../environment.yml"
        shell:
            "slimlab bench --inventory {params.inventory:q} --device {params.device:q}"
            " --artifact {input:q} --threads {wildcards.threads} --settings {params.settings:q}"
            " --output {output:q} > {log:q} 2>&1"
