"""cnnkernels.train: training with the library, as the classic case studies teach it.

- transfer learning: `freeze`, `unfreeze`, `stages`, `replace_head`, `head_name` and `FeatureCache` (the frozen
  backbone run once over a data set through the fused ops, its features stored on disk);
- augmentation on top of torchvision.transforms.v2: `PCAColor` (AlexNet's PCA colour augmentation), `rgb_pca`,
  `default_augmentation`, `save_augmentation_grid`;
- test-time evaluation: `MultiCrop` (10-crop, 5-crop, mirror) and `Ensemble`;
- the training loop with progress and exact checkpoint/resume: `fit`, `evaluate`, `predict_proba`,
  `save_checkpoint`, `load_checkpoint`;
- multi-process training (`python -m torch.distributed.run ... -m cnnkernels.train.distributed`), with a synced
  BatchNorm that also works on CPU: `convert_sync_batchnorm`, `revert_sync_batchnorm`;
- offline data: `digits` (scikit-learn's handwritten digits, a fixed stratified split).

Not imported by `import cnnkernels`: it needs torchvision, numpy, scikit-learn and tqdm (`pip install
cnnkernels[train]` for the last three). `python -m cnnkernels.train --help` lists the end-to-end commands.
"""

from cnnkernels.train.augment import (IMAGENET_EIGVAL, IMAGENET_EIGVEC, PCAColor, default_augmentation, pca_color,
                                      rgb_pca, save_augmentation_grid)
from cnnkernels.train.data import digits
from cnnkernels.train.distributed import CPUSyncBatchNorm, convert_sync_batchnorm, revert_sync_batchnorm
from cnnkernels.train.averaging import Ensemble, MultiCrop
from cnnkernels.train.feature_cache import CachedFeatures, FeatureCache
from cnnkernels.train.loop import evaluate, fit, load_checkpoint, predict_proba, save_checkpoint
from cnnkernels.train.transfer import freeze, head_name, is_frozen, replace_head, stages, unfreeze

__all__ = ["IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "PCAColor", "default_augmentation", "pca_color", "rgb_pca",
           "save_augmentation_grid", "digits", "CPUSyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm",
           "Ensemble", "MultiCrop", "CachedFeatures", "FeatureCache", "evaluate", "fit", "load_checkpoint",
           "predict_proba", "save_checkpoint", "freeze", "head_name", "is_frozen", "replace_head", "stages",
           "unfreeze"]
