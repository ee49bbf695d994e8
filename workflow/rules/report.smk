# The report: every deployable's sidecar and bench records -> tables, a summary page and a plot
# (slimlab/report/). `slimlab report show` prints the summary in a terminal.
# The list of deployables goes to the report through a file (a long list would overflow
# a command line). If the run fails (a device was down), onerror still writes the
# report from what was measured, with the failures as rows.
# The three rules below are local rules: with a cluster executor (profiles/slurm) they run
# on the lab host, beside the bench jobs, and are never submitted. They are seconds of
# pandas; a cluster job would only add queueing to the end of every run.


localrules:
    deployables,
    report,
    steps_succeeded,


rule deployables:
    output:
        "results/report/deployables.json",
    params:
        deployables=deployables(),
    log:
        "results/logs/deployables.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/deployables.py"


rule report:
    input:
        deployables="results/report/deployables.json",
        sidecars=[d[key] for d in deployables()["deployables"] for key in ("sidecar", "budget_source") if key in d],
        records=[r for d in deployables()["deployables"] for r in d.get("records", [])],
    output:
        parquet="results/report/summary.parquet",
        csv=report("results/report/summary.csv", caption="../report/summary.rst", category="Summary"),
        html=report("results/report/summary.html", caption="../report/summary.rst", category="Summary"),
        fastest=report("results/report/fastest.csv", caption="../report/fastest.rst", category="Summary"),
        plot=report("results/report/accuracy_vs_latency.png", caption="../report/accuracy_vs_latency.rst", category="Plots"),
    params:
        outdir=lambda wildcards, output: os.path.dirname(output.parquet),
    log:
        "results/logs/report.log",
    conda:
        "../../environment.yml"
    shell:
        "slimlab report build --deployables {input.deployables:q} --outdir {params.outdir:q} > {log:q} 2>&1"


# Fails the run, after the report is written, if a recipe step failed: cron and CI notice.
rule steps_succeeded:
    input:
        "results/report/summary.parquet",
    output:
        touch("results/report/.steps_succeeded"),
    log:
        "results/logs/steps_succeeded.log",
    conda:
        "../../environment.yml"
    shell:
        "slimlab failures --summary {input:q} > {log:q} 2>&1"


onerror:
    if os.path.isfile(rules.deployables.output[0]):
        shell("slimlab report build --deployables {rules.deployables.output[0]:q} --outdir results/report || true")


REPORT_FILES = [*rules.report.output, *rules.steps_succeeded.output]


# The run ends by naming every model outside its quality budget (the log holds nothing else on success).
onsuccess:
    if os.path.isfile(rules.steps_succeeded.log[0]):
        shell("cat {rules.steps_succeeded.log[0]:q} >&2")
