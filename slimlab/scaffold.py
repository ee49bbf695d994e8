"""``slimlab init DIR``: a folder for your own experiment, with a commented config and inventory.

Run it from the slimlab checkout with ``snakemake --profile lab --directory DIR``: the
workflow reads DIR/config/config.yaml and DIR/devices/, writes DIR/results/, and loads
your own plugins from DIR/plugins/. None of the built-in experiment comes along.
"""

from pathlib import Path

from slimlab.errors import ConfigError

CONFIG = """\
# Your experiment. Check it with `slimlab validate config/config.yaml` (from this folder);
# run it from the slimlab checkout with `snakemake --profile lab --directory {folder}`.
# Every key: workflow/schemas/config.schema.yaml; every stage and its params: `slimlab stages`.

task:
  # What your model is for: classification (y: class indices), regression, detection, segmentation,
  # or fidelity (no labels: y_key: null). `slimlab tasks` lists each task's metrics and params.
  name: classification

dataset:
  # Your arrays: x (N, H, W, C) or (N, H, W), y in the task's shape. `slimlab datasets` lists
  # the others, e.g. image_folder: {{path: data/train, size: [64, 64], color: rgb, test_path: data/test}}.
  name: npz
  params: {{path: data/train.npz, x_key: x, y_key: y}}   # add test_path: data/test.npz for your own test split
  seed: 42
  val_fraction: 0.1
  test_fraction: 0.2      # ignored when the data set brings its own test split

stage_defaults:           # params for every step of a stage; a recipe's own params win
  prune.magnitude: {{epochs: 2}}

# How much a compressed model may lose against the imported one (accuracy: 0.01 is one point).
# Fine-tuning goes on past a step's epochs until it is back within the budget (up to max_epochs);
# a model still outside is `budget_missed` in the report and named at the end of the run.
# recipe_budgets: {{recipe: {{...}}}} gives a recipe its own (null: none).
budget: {{max_drop: 0.01, max_epochs: 30}}   # metric: the task's headline (accuracy), or name one

recipes:
  # `import` starts from your trained model: Keras 3 or tf_keras .keras/.h5, a SavedModel
  # folder, .tflite or .onnx. input_range: the values the model expects (checked against the data).
  baseline:
    - import: {{path: models/model.keras, input_range: [0, 1]}}
  int8:
    - import: {{path: models/model.keras, input_range: [0, 1]}}
    - quantize.int8
  pruned_int8:
    - import: {{path: models/model.keras, input_range: [0, 1]}}
    - prune.magnitude: {{sparsity: 0.8}}
    - quantize.int8

formats: [tflite]          # add onnx, ncnn, mnn: each recipe is converted where a converter takes it

lab:
  inventory: devices       # every devices/*.yaml
  devices: [localhost]

bench:
  threads: [1]
  runs: 100
  min_seconds: 1.0
"""

INVENTORY = """\
# Your devices. The config's lab.devices picks the ones a run uses.
# Common keys: transport, runner, runtimes, workdir, energy, and overrides of the config's
# bench block; any other key is a block named after the transport or runner (README: Devices).
devices:
  localhost:
    transport: local
    runner: python
    runtimes: [tflite, ncnn, mnn, onnx]

  # An SSH board: log in once by hand first (`ssh USER@HOST true`) so its host key is known.
  # my-board:
  #   transport: ssh
  #   runner: python
  #   runtimes: [tflite]
  #   ssh: {{host: 10.0.0.7, user: pi, key_file: ~/.ssh/id_ed25519}}
  #   python: {{interpreter: python3}}

  # An Android phone over adb (`adb devices` shows the serial; host:port for Wi-Fi).
  # my-phone:
  #   transport: adb
  #   runner: python
  #   runtimes: [tflite]
  #   adb: {{serial: 192.168.1.40:5555}}
  #   python: {{interpreter: python3, affinity: [4, 5, 6, 7]}}
"""


def init(folder: Path) -> list[Path]:
    """Write the starter files; refuses to overwrite any."""
    files = {folder / "config" / "config.yaml": CONFIG.format(folder=folder),
             folder / "devices" / "lab.yaml": INVENTORY.format()}
    existing = [path for path in files if path.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists; slimlab init writes only new files")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name in ("data", "models", "plugins"):
        (folder / name).mkdir(exist_ok=True)
    return list(files)
