# Deployment conversions (convert.<format>): appended to a recipe for each format it
# is not already in. The compress rule under another name, so that profiles can give
# conversions their own resources. A converter that fails does not stop the run: the
# job writes a failed sidecar with the converter's one-line message, the report shows
# that (artifact, format) as convert_failed, and bench jobs skip it.


use rule compress as convert with:
    wildcard_constraints:
        parent=r".+",
        step=CONVERT_STEP,
