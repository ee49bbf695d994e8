# The list of deployables, from the rule's params, to the file the report reads. A script, not
# a `run:` block: Snakemake runs a `run:` block in a child that parses the workflow again and
# merges config/config.yaml back into a --replace-workflow-config run.
from slimlab.atomic import write_json

write_json(snakemake.output[0], snakemake.params.deployables)
