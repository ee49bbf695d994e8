# Benchmarks: one rule per device, so each carries a resource named after its device
# (device_<name> = 1): one device never runs two benchmarks at once, while
# different devices run in parallel. Across concurrent snakemake runs, each job
# also holds results/lab/locks/<device>.lock while it measures (slimlab/lab/lock.py).
# A job whose device is offline, times out or whose tool fails exits non-zero
# (keep-going lets the other devices finish), leaves no record, and writes
# threads-<n>.failed.json with the reason and its tag; the next run retries it.
# Records sit under their option set ({options}, a name from bench.option_sets);
# bench_settings hands the runner that set's options.

for _device in DEVICES.values():
    _resource = "device_" + re.sub(r"\W", "_", _device["name"])
    if _resource not in workflow.global_resources:
        workflow.register_resource(_resource, 1)

    rule:
        name:
            f"bench_{_resource}"
        input:
            ARTIFACTS + "/{artifact}/artifact.json",
        output:
            f"{BENCH}/{_device['name']}/{{artifact}}/{{options}}/threads-{{threads}}.json",
        wildcard_constraints:
            artifact=r".+",
            options=OPTION_SET,
            threads=r"\d+",
        params:
            device=_device["name"],
            inventory=config["lab"]["inventory"],
            settings=bench_settings,
        resources:
            **{_resource: 1},
        # A local device is this host: hold every core so no training job skews the timings.
        threads: workflow.cores if _device["transport"] == "local" else 1
        log:
            f"{LOGS}/bench/{_device['name']}/{{artifact}}/{{options}}/threads-{{threads}}.log",
        shell:
            "slimlab bench --inventory {params.inventory:q} --device {params.device:q}"
            " --artifact {input:q} --threads {wildcards.threads} --settings {params.settings:q}"
            " --output {output:q} > {log:q} 2>&1"
