"""course_utils: the helpers shared by the notebooks of the normalization course.

Notebooks ``import course_utils as cu`` and call ``cu.name(...)`` so a reader
always sees where a helper comes from. Names are re-exported explicitly.
"""
# config
from .config import (
    checkpoint_dir, data_dir, get_device, in_colab, photos_dir, pick, quick_mode, seed_everything,
)
# checks
from .checks import (
    CheckFailed, Difference, check_all, check_close, check_raises, compare, difference, passed, relative_error,
)
# data
from .data import (
    DATASETS, IMAGENET_MEAN, IMAGENET_STD, DatasetCorruptError, DatasetNotFoundError, ImageTensors,
    TensorLoader, load_dataset, load_domain, to_rgb32,
)

# normalization (input)
from .normalization import channel_stats
# models
from .models import (
    Contract, PretrainedUnavailable, load_course_resnet18, load_imagenet_resnet18, load_pretrained_resnet18,
    pretrain_course_resnet18, replace_head, resnet18_for,
)
# train
from .train import History, evaluate, fit
# plotting
from .plotting import bars, channel_histograms, curves, set_style, show_images
# environment (notebook 00)
from .environment import data_sources, device_report, print_report, report, versions, weight_sources
__version__ = "0.1.0"
