# slimlab: train -> compress -> convert -> bench -> report.
# Rules are generic over stages; recipes in config/config.yaml decide the DAG.
from snakemake.utils import min_version

from slimlab.workflow import strict_configfile

min_version("9.0")


configfile: strict_configfile("config/config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT_FILES,
    default_target: True
