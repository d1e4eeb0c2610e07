import copy

import torch
from mh_models import same_state, state_copy
from torch import nn

from repurpose import ModelHandler


def _bn_stays_frozen(bn: nn.Module, module: nn.Module, x: torch.Tensor) -> bool:
    module.train()
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    module(x)
    return torch.equal(mean, bn.running_mean) and torch.equal(var, bn.running_var)


def test_freeze_globs_and_batchnorm_after_train(resnet, images):
    before = state_copy(resnet)
    h = ModelHandler(resnet)
    f = h.freeze("layer1.0.*")
    assert f.frozen_layers == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"]
    m = f.module
    assert not m.layer1[0].conv1.weight.requires_grad and m.layer1[1].conv1.weight.requires_grad
    x = torch.from_numpy(images)
    assert _bn_stays_frozen(m.layer1[0].bn1, m, x)
    assert not _bn_stays_frozen(m.layer1[1].bn1, m, x)  # not frozen: statistics move
    # eval behaviour: the frozen BN normalises with its running statistics in train mode
    bn = m.layer1[0].bn1
    m.train()
    y = torch.randn(4, 4, 3, 3)
    torch.testing.assert_close(bn(y), torch.nn.functional.batch_norm(
        y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False))
    assert same_state(resnet, before) and resnet.layer1[0].conv1.weight.requires_grad


def test_container_names_unfreeze_and_freeze_up_to(resnet):
    h = ModelHandler(resnet).freeze("layer1")
    assert all(not p.requires_grad for p in h.module.layer1.parameters())
    u = h.unfreeze(["layer1.1.*"])
    assert u.frozen_layers == ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"]
    bn = u.module.layer1[1].bn1
    u.module.train()
    u.module(torch.randn(2, 3, 6, 6))
    assert bn.training and bn.num_batches_tracked.item() == 1
    up = ModelHandler(resnet).freeze_up_to("layer1.0.add")
    assert up.frozen_layers == ["stem", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"]


def test_frozen_state_survives_copy_surgery_and_save(tmp_path, graph, images):
    h = ModelHandler(graph).freeze(["conv1", "bn1"])
    assert copy.deepcopy(h.module).bn1.weight.requires_grad is False
    t = h.truncate("sum")
    assert t.frozen_layers == ["conv1", "bn1"]
    t.save(tmp_path / "m")
    back = ModelHandler.load(tmp_path / "m")
    assert back.frozen_layers == ["conv1", "bn1"]
    assert _bn_stays_frozen(back.module.bn1, back.module, torch.from_numpy(images))


def test_frozen_plain_module_save_load(tmp_path, chain):
    h = ModelHandler(chain).freeze_up_to("1")
    h.save(tmp_path / "c")
    fresh = copy.deepcopy(chain)
    back = ModelHandler.load(tmp_path / "c", module=fresh)
    assert back.frozen_layers == ["0", "1"]
    assert not back.module[1].weight.requires_grad


def test_repurposers_share_the_handlers_freezer_and_matcher():
    from repurpose.model_handler import _freeze, _match
    from repurpose.repurposers import _freezing

    assert _freezing.freeze_modules is _freeze.freeze_modules
    assert _freezing.frozen_norm_layers is _freeze.frozen_norm_layers
    assert _freezing.match_layers is _match.match_layers


def test_a_norm_frozen_for_a_repurposer_stays_frozen_after_train(chain):
    from repurpose.repurposers._freezing import freeze_modules, frozen_norm_layers

    norms = freeze_modules([chain[0], chain[1]])
    assert norms == [chain[1]] and frozen_norm_layers(chain) == [chain[1]]
    before = chain[1].running_mean.clone()
    chain.train()
    chain(torch.randn(4, 3, 6, 6) * 5)
    assert torch.equal(chain[1].running_mean, before)  # the pre-hook kept it in eval mode
    assert ModelHandler(chain).frozen_layers == ["0", "1"]
