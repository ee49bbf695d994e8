# Source stages (train): the first step of every recipe; they read only the data set.


rule train:
    output:
        ARTIFACTS + "/{dataset}/{step}/artifact.json",
    wildcard_constraints:
        dataset=r"[^/]+",
        step=SOURCE_STEP,
    params:
        step=step_json,
    threads: 4
    log:
        LOGS + "/{dataset}/{step}.log",
    shell:
        "slimlab run-step --threads {threads} --step {params.step:q} --output {output:q} > {log:q} 2>&1"
