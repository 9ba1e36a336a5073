"""Style compatibility (seed 003): "do these two items go well together?"

Pairs (a store's co-purchase CSV or a metadata proxy), a cross-category pair sampler, a frozen backbone
with a learned 128-d head trained with the contrastive loss, the cutoff, and the judge that says yes or no.
Each name below is imported from its module when first used (the CLI reads the configs' defaults without
loading the training code).
"""
from stylespace.utils import lazy_exports

_EXPORTS = {
    "judge": ["CompatibilityJudge", "Verdict", "load_compatibility", "save_compatibility"],
    "model": ["CompatibilityConfig", "CompatibilityHead", "CompatibilityModel", "Cutoff"],
    "pairs": ["COMPLEMENTARY_SUBCATEGORIES", "PairSet", "ProxyPairConfig", "build_proxy_pairs", "item_split",
              "split_pairs"],
    "sampler": ["CrossCategoryPairSampler"],
    "train": ["CompatTrainResult", "PairFeatures", "train_compatibility"],
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
