import torch
from torch.nn import functional as F

from personalization.features import FEATURE_KINDS, FeatureLayer, Trunk, concat_features


def test_it_matches_a_linear_layer_on_the_concatenation():
    torch.manual_seed(0)
    p, r = torch.randn(5, 8), torch.randn(5, 8)
    for kind in FEATURE_KINDS:
        layer = FeatureLayer(8, 4, kind)
        blocks = {"p_r_pr": [layer.w_p, layer.w_r, layer.w_x], "r_pr": [layer.w_r, layer.w_x], "r": [layer.w_r]}
        weight = torch.cat(blocks[kind], dim=1)
        expected = F.linear(concat_features(p, r, kind), weight, layer.bias)
        torch.testing.assert_close(layer(p, r), expected)


def test_it_shares_the_prompt_part_between_the_two_responses():
    torch.manual_seed(0)
    trunk = Trunk(8, [6, 5])
    p, a, b = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 8)
    ha, hb = trunk.forward_pair(p, a, b)
    torch.testing.assert_close(ha, trunk(p, a))
    torch.testing.assert_close(hb, trunk(p, b))
    assert ha.shape == (3, 5)
