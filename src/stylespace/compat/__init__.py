"""Style compatibility (seed 003): "do these two items go well together?"

Pairs (a store's co-purchase CSV or a metadata proxy), a cross-category pair sampler, a frozen backbone
with a learned 128-d head trained with the contrastive loss, the cutoff, and the judge that says yes or no.
"""
from stylespace.compat.judge import CompatibilityJudge, Verdict, load_compatibility, save_compatibility
from stylespace.compat.model import CompatibilityConfig, CompatibilityHead, CompatibilityModel, Cutoff
from stylespace.compat.pairs import (
    COMPLEMENTARY_SUBCATEGORIES,
    PairSet,
    ProxyPairConfig,
    build_proxy_pairs,
    item_split,
    split_pairs,
)
from stylespace.compat.sampler import CrossCategoryPairSampler
from stylespace.compat.train import CompatTrainResult, PairFeatures, train_compatibility

__all__ = [
    "COMPLEMENTARY_SUBCATEGORIES", "PairSet", "ProxyPairConfig", "build_proxy_pairs", "item_split", "split_pairs",
    "CrossCategoryPairSampler", "CompatibilityConfig", "CompatibilityHead", "CompatibilityModel", "Cutoff",
    "PairFeatures", "CompatTrainResult", "train_compatibility",
    "CompatibilityJudge", "Verdict", "load_compatibility", "save_compatibility",
]
