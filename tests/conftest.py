import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def aligned_tiny_zoo(tmp_path_factory):
    """The ``aligned`` method's tiny data setting, built once for every test that only reads it."""
    from weightspace.generative import aligned

    return aligned.SETTING.build(tmp_path_factory.mktemp("aligned") / "zoo", preset="tiny", progress=False)
