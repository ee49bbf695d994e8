# Compression stages (prune, quantize, cluster, distill, ...): any registered stage
# applied to the artifact of the step before it. A new stage plugin needs no new rule.
# A failed step leaves a failed sidecar, as in train.smk.


rule compress:
    input:
        "results/artifacts/{parent}/artifact.json",
    output:
        "results/artifacts/{parent}/{step}/artifact.json",
    wildcard_constraints:
        parent=r".+",
        step=COMPRESS_STEP,
    params:
        step=step_json,
    log:
        "results/logs/{parent}/{step}.log",
    conda:
        "../../environment.yml"
    shell:
        "slimlab run-step --threads {threads} --step {params.step:q} --input {input:q} --output {output:q} > {log:q} 2>&1"
        " || slimlab mark-failed --step {params.step:q} --input {input:q} --output {output:q} --log {log:q}"
