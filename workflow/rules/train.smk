# Source stages (train): the first step of every recipe; they read only the data set.
# A step that fails writes a failed sidecar instead (`slimlab mark-failed`): the steps
# below it are skipped, the report still builds and shows the failure, and the
# `steps_succeeded` check at the end makes the run exit non-zero.


rule train:
    output:
        "results/artifacts/{dataset}/{step}/artifact.json",
    wildcard_constraints:
        dataset=r"[^/]+",
        step=SOURCE_STEP,
    params:
        step=step_json,
    log:
        "results/logs/{dataset}/{step}.log",
    conda:
        "../../environment.yml"
    shell:
        "slimlab run-step --threads {threads} --step {params.step:q} --output {output:q} > {log:q} 2>&1"
        " || slimlab mark-failed --step {params.step:q} --output {output:q} --log {log:q}"
