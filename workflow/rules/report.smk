# The report: every deployable's sidecar and bench records -> tables and a summary page.


rule report:
    input:
        sidecars=[d["sidecar"] for d in deployables() if "sidecar" in d],
        records=[r for d in deployables() for r in d.get("records", [])],
    output:
        parquet=REPORT + "/summary.parquet",
        csv=report(REPORT + "/summary.csv", caption="../report/summary.rst", category="Summary"),
        html=report(REPORT + "/summary.html", caption="../report/summary.rst", category="Summary"),
        fastest=report(REPORT + "/fastest.csv", caption="../report/fastest.rst", category="Summary"),
        plot=report(REPORT + "/accuracy_vs_latency.png", caption="../report/accuracy_vs_latency.rst", category="Plots"),
    params:
        deployables=json.dumps(deployables()),
    log:
        LOGS + "/report.log",
    shell:
        "slimlab report --deployables {params.deployables:q} --outdir {REPORT} > {log:q} 2>&1"


REPORT_FILES = rules.report.output
