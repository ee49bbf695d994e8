# The report: every deployable's sidecar and bench records -> tables and a summary page.
# The list of deployables goes to the report through a file (a long list would overflow
# a command line). If the run fails (a device was down), onerror still writes the
# report from what was measured, with the failures as rows.


rule deployables:
    output:
        REPORT + "/deployables.json",
    params:
        deployables=deployables(),
    run:
        from slimlab.atomic import write_json

        write_json(output[0], params.deployables)


rule report:
    input:
        deployables=REPORT + "/deployables.json",
        sidecars=[d["sidecar"] for d in deployables() if "sidecar" in d],
        records=[r for d in deployables() for r in d.get("records", [])],
    output:
        parquet=REPORT + "/summary.parquet",
        csv=report(REPORT + "/summary.csv", caption="../report/summary.rst", category="Summary"),
        html=report(REPORT + "/summary.html", caption="../report/summary.rst", category="Summary"),
        fastest=report(REPORT + "/fastest.csv", caption="../report/fastest.rst", category="Summary"),
        plot=report(REPORT + "/accuracy_vs_latency.png", caption="../report/accuracy_vs_latency.rst", category="Plots"),
    params:
        outdir=REPORT,
    log:
        LOGS + "/report.log",
    conda:
        "../../environment.yml"
    shell:
        "slimlab report --deployables {input.deployables:q} --outdir {params.outdir:q} > {log:q} 2>&1"


# Fails the run, after the report is written, if a recipe step failed: cron and CI notice.
rule steps_succeeded:
    input:
        REPORT + "/summary.parquet",
    output:
        touch(REPORT + "/.steps_succeeded"),
    conda:
        "../../environment.yml"
    shell:
        "slimlab failures --summary {input:q}"


onerror:
    if os.path.isfile(REPORT + "/deployables.json"):
        shell(f"slimlab report --deployables {REPORT}/deployables.json --outdir {REPORT} || true")


REPORT_FILES = [*rules.report.output, *rules.steps_succeeded.output]
