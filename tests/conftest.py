import pytest
import torch

from streamgen.testing import tiny_engine

torch.set_num_threads(2)


@pytest.fixture
def engine():
    return tiny_engine()
