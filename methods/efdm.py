"""Zhang, Zhu, Wang, Huang, Zhang, Zhang, "Exact Feature Distribution Matching for Arbitrary Style Transfer and
Domain Generalization", CVPR 2022.

The transform of the "global higher-order statistics" family: each content feature channel is given exactly the
style channel's empirical distribution by sorting (:func:`_transforms.efdm`), so all its moments match, not only the
mean and variance (AdaIN) or the covariance (WCT). The paper plugs EFDM into AdaIN's trained relu4_1 autoencoder;
evalkit runs it in the WCT autoencoders (coarse-to-fine, as WCT) so it can be compared with ``wct`` on the same
networks: the weight sets are WCT's, and ``levels=4`` with ``official`` is the paper's single-level setting (with
WCT's relu4_1 decoder instead of its retrained AdaIN decoder).
"""

from __future__ import annotations

from evalkit_methods._multilevel import MultiLevelTransfer, autoencoder_weight_sets, parse_levels

from evalkit.adapter import Param


class EFDM(MultiLevelTransfer):
    name = "efdm"
    kind = "artistic"
    version = "1"
    description = "Exact feature distribution matching (per-channel sort) in the WCT VGG-19 autoencoders"
    citation = (
        "Zhang et al. Exact Feature Distribution Matching for Arbitrary Style Transfer and Domain Generalization. "
        "CVPR 2022"
    )
    weight_sets = autoencoder_weight_sets()
    transform = "efdm"
    params = {
        "alpha": Param(1.0, "content-style trade-off in [0, 1] at every level (1 = full style)", low=0, high=1),
        "levels": Param(
            "all", "levels to run, deepest first: all, or a comma list such as 4 or 5,4,3", check=parse_levels
        ),
    }
