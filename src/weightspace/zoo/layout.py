"""The files of a zoo directory (see :mod:`weightspace.zoo.store`)."""

FORMAT = "weightspace-zoo"
FORMAT_VERSION = 1
ZOO_JSON = "zoo.json"  # format version, layout, architecture, task, training config
INDEX = "index.sqlite"  # one row per checkpoint
MODELS = "models"  # models/<model_id>.safetensors
STAGING = ".staging"  # files being written, not yet indexed
