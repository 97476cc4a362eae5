import importlib

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _tiny(method: str, tmp_path_factory):
    """Study method ``method``'s tiny data setting, built once per session for the tests that only
    read it (a test that writes to a zoo builds its own)."""
    setting = importlib.import_module(f"weightspace.generative.{method}").SETTING
    return setting.build(tmp_path_factory.mktemp(method) / "zoo", preset="tiny", progress=False)


@pytest.fixture(scope="session")
def aligned_tiny_zoo(tmp_path_factory):
    return _tiny("aligned", tmp_path_factory)


@pytest.fixture(scope="session")
def gpt_tiny_zoo(tmp_path_factory):
    return _tiny("gpt", tmp_path_factory)


@pytest.fixture(scope="session")
def hyperdiffusion_tiny_zoo(tmp_path_factory):
    return _tiny("hyperdiffusion", tmp_path_factory)


@pytest.fixture(scope="session")
def hyperrep_tiny_zoo(tmp_path_factory):
    return _tiny("hyperrep", tmp_path_factory)


@pytest.fixture(scope="session")
def pdiff_tiny_zoo(tmp_path_factory):
    return _tiny("pdiff", tmp_path_factory)
