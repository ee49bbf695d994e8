# Deployment conversions (convert.<format>): appended to a recipe for each format it
# is not already in.
#
# A converter that fails does not stop the run: the job then writes a *failed* sidecar
# holding the converter's one-line message (`slimlab mark-failed`). The report
# shows that (artifact, format) as convert_failed; bench jobs skip it.


rule convert:
    input:
        ARTIFACTS + "/{parent}/artifact.json",
    output:
        ARTIFACTS + "/{parent}/{step}/artifact.json",
    wildcard_constraints:
        parent=r".+",
        step=CONVERT_STEP,
    params:
        step=step_json,
    threads: 4
    log:
        LOGS + "/{parent}/{step}.log",
    shell:
        "slimlab run-step --threads {threads} --step {params.step:q} --input {input:q} --output {output:q} > {log:q} 2>&1"
        " || slimlab mark-failed --step {params.step:q} --input {input:q} --output {output:q} --log {log:q}"
