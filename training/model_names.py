"""The names of the models registered in :data:`training.models.MODELS`, importable without torch.

The main command (``jobs.pipeline``) checks ``--models`` before any work; importing the zoo for that (torch,
TorchRec, FBGEMM) costs 10-25 s on this machine, on the command's critical path. A test keeps this list equal to
the registry's keys.
"""

MODEL_NAMES = ("afm", "autorec", "base", "deep_crossing", "deepfm", "dien", "din", "drn", "dstn", "fism", "gmf",
               "nais", "ncf_mlp", "neumf", "nfm", "pnn", "two_tower", "wide_deep")
