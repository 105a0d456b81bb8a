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
    CheckFailed, Difference, answer_or_reference, by_hand, check_all, check_close, check_prediction,
    check_prediction_recorded, check_raises, compare, difference, passed, relative_error, reveal_prediction,
)
# data
from .data import (
    DATASETS, IMAGENET_MEAN, IMAGENET_STD, DatasetCorruptError, DatasetNotFoundError, ImageTensors,
    TensorLoader, load_dataset, load_domain, to_rgb32,
)

# normalization (issue 3)
from .normalization import (
    InputContractWarning, MeanPad2d, bgr_to_rgb, channel_normalize, channel_stats, check_input_batch,
    fold_normalization_into_conv, gray_to_rgb, min_max, per_image_zscore, rgb_to_bgr, swap_rb, to_minus_one_one,
    to_unit,
)
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
# layers (issue 4)
from .layers import (
    BatchNorm2d, GlobalResponseNorm, GroupNorm, InstanceNorm2d, LayerNorm, LocalResponseNorm, RMSNorm, batch_norm2d,
    fold_bn_into_conv, global_response_norm, group_norm, instance_norm2d, layer_norm, local_response_norm, rms_norm,
)
from .layers.figures import plot_norm_axes
# norm layers inside a network (issue 13)
from .norm_swap import NORM_KINDS, SwapReport, norm_layer, swap_norm
# transfer (issue 5)
from .train import train_step
from .transfer import (
    BN_MODE_HELP, BN_MODES, FREEZE_STRATEGIES, INPUT_LAYERS, InputLayerNorm, add_input_layer, bn_layers, bn_state,
    freeze, make_input_layer, norm_layers, recompute_bn_stats, set_bn_mode, trainable_names, weight_distance,
)
# the fine-tuning lab (issue 5), from code or a script without ipywidgets; its results log lives in train.py
from .train import append_result, read_results
from .lab import LabConfig, LabResult, plot_runs, plot_weight_histograms, run_lab
# the lab's widget panel (ipywidgets is imported when a panel is built)
from .widgets import FineTuningLab, lab_panel
# fine-tuning batch size per norm layer (notebook 08, experiments/batch_size_grid.py)
from .experiments import (
    BATCH_SIZES, GRID_KINDS, grid_provenance, grid_summary, plot_batch_size_grid, read_grid_csv, run_batch_size_grid,
    write_grid_csv,
)
# batch norm across processes (lesson 09)
from .distributed import (
    DistributedRunError, DistributedTimeoutError, ShardStats, SyncBatchNorm2d, SyncBatchNormFunction,
    batch_norm_input_grad, check_sync_bn_against_full_batch, convert_to_sync_bn, ddp_step_times, even_shard_sizes,
    free_port, merge_moments, shard_batch_stats, shard_moments, shard_stats_table, spawn, split_batch,
    sync_batch_norm2d, sync_batch_stats, sync_batch_stats_naive,
)
__version__ = "0.1.0"
