import pytest
import torch
from torch.func import functional_call

from weightspace.data import load_digits
from weightspace.errors import LayoutError
from weightspace.nets import CNN, MLP
from weightspace.task import Task


@pytest.mark.parametrize("image", [False, True])
def test_batched_scores_match_models_one_by_one(image):
    ds = load_digits(seed=0, image=image)
    arch = CNN(1, 8, channels=(4, 4), fc_widths=(8,)) if image else MLP(64, (16,), 10)
    W = arch.init(range(5))
    W = W + 0.2 * torch.randn_like(W)
    task = Task(ds, arch)
    small = Task(ds, arch, max_cells=300)  # forces many model and example chunks
    x, y = ds.split("val")
    module = arch.module().eval()
    ref = torch.stack([functional_call(module, arch.space.unflatten(w), (x,)) for w in W])
    assert torch.allclose(task.logits(W, "val"), ref, atol=1e-5)
    assert torch.allclose(small.logits(W, "val"), ref, atol=1e-5)
    acc = (ref.argmax(-1) == y).float().mean(-1)
    assert torch.equal(task.accuracy(W, "val"), acc)
    loss = torch.nn.functional.cross_entropy(ref[2], y)
    assert torch.allclose(task.loss(W, "val")[2], loss, atol=1e-5)
    table = task.evaluate(W)
    assert list(table.columns) == ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert table["val_acc"].tolist() == pytest.approx(acc.tolist())


def test_wrong_layout_is_named():
    task = Task(load_digits(seed=0), MLP(64, (16,), 10))
    with pytest.raises(LayoutError, match="expected 1210 parameters for layout 'mlp-64x16x10-relu', got 7"):
        task.accuracy(torch.zeros(2, 7))
