"""Flags of the apps that read a saved model and write one (`apps.crop`, `apps.prune`).

Defined once here so that both apps can be imported in one process (absl flags are global).
"""

from absl import flags

flags.DEFINE_string("model_path", None, "A saved .keras model to work on (instead of --model).")
flags.DEFINE_list("ignored_layers", [], "Layer paths whose input and output widths must not change.")
flags.DEFINE_string("save", None, "Write the resulting model to this .keras file (apps.crop: fresh "
                    "initialisation; apps.prune: the trained weights of the surviving channels).")
