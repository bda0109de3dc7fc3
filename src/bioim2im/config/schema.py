"""The preset schema: pydantic models of every section.

The section models below are static, so code can read ``preset.train.steps`` with types.
Component fields (a table with ``name`` plus parameters) are typed :class:`ComponentSpec` here;
:func:`bioim2im.config.build.preset_model` derives, for a given registry, subclasses in which
each component field is a discriminated union of the registered components' parameter models,
so a plugin's component is validated exactly like a built-in one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, PositiveInt, field_validator, model_validator

from bioim2im.plugin.registry import StrictModel

MAX_WORKERS = 64
"""The most DataLoader workers a training process may ask for."""
MAX_BATCH = 4096
"""The most patches (training) or windows (prediction) in one batch."""
MAX_BATCH_VOXELS = 1 << 31
"""The most voxels of one training batch's input: 8 GiB of float32 before the network's
activations, which are many times that: no machine trains on more in one step."""


class ComponentSpec(StrictModel):
    """A registered component: its ``name`` and the parameters of its factory."""

    name: str
    """Registered name of the component (see `bioim2im list-plugins`)."""

    component_params: ClassVar[frozenset[str] | None] = None
    """The component's parameter names, set on the models built from the registry (empty for a
    component without parameters); None on this generic model, whose keys are all parameters."""

    def params(self) -> dict[str, Any]:
        """The component's parameters, without ``name`` and without preset-level keys."""
        data = self.model_dump()
        keys = set(data) - {"name"} if self.component_params is None else self.component_params
        return {k: data[k] for k in keys if k in data}


def spec(name: str, **params: Any) -> Any:
    """A component table as a default value, e.g. ``spec("adamw", lr=1e-3)``.

    Defaults are plain tables, not model instances, so that the registry-specific subclasses
    of these models (see config/build.py) validate them into their own component types.
    """
    return {"name": name, **params}


@dataclass(frozen=True)
class Component:
    """The mark of a component field: the kind of component it names (what
    :mod:`bioim2im.config.components` walks a preset along), and whether a plain string stands
    for ``{ name = "..." }`` there (``layout = "folders"``)."""

    kind: str
    shorthand: bool = False


def expand_shorthand(value: Any) -> Any:
    """``"NAME"`` -> ``{"name": "NAME"}``; any other value as it is."""
    return {"name": value} if isinstance(value, str) else value


# Component fields, each marked with the kind of component it names (see config/components.py).
Transform = Annotated[ComponentSpec, Component("transform")]
Backbone = Annotated[ComponentSpec, Component("backbone")]
Loss = Annotated[ComponentSpec, Component("loss")]
Postprocessor = Annotated[ComponentSpec, Component("postprocessor")]
Metric = Annotated[ComponentSpec, Component("metric")]
Optimizer = Annotated[ComponentSpec, Component("optimizer")]
Scheduler = Annotated[ComponentSpec, Component("scheduler")]
Discriminator = Annotated[ComponentSpec, Component("discriminator")]
Logger = Annotated[ComponentSpec, Component("logger")]
DataLayout = Annotated[
    ComponentSpec, Component("layout", shorthand=True), BeforeValidator(expand_shorthand)
]


def _empty() -> Any:
    return {}


class DataConfig(StrictModel):
    """Where the training images are and how patches are drawn from them."""

    path: Path | None = None
    """A folder (IM/ GT/ [CM/] subfolders, or X_IM/X_GT pairs), a CSV manifest, or what a
    plugin's layout reads. Relative paths are relative to the preset file."""
    val_path: Path | None = None
    """Optional separate validation folder or manifest; otherwise a seeded split of `path`."""
    layout: DataLayout = Field(default_factory=lambda: spec("auto"))
    """How `path` is organised (a layout: `bioim2im list-plugins --kind layout`): "folders",
    "pairs", "csv", or "auto" (whichever `path` looks like); a plugin's layout is a table of
    its name and parameters, e.g. { name = "NAME", ... }."""
    source: str = "IM"
    """Name of the input images: the subfolder, file suffix or CSV column."""
    cost_map: str | None = "CM"
    """Name of the optional cost maps (0 = pixel excluded from the loss); ignored when absent."""
    split_column: str = "split"
    """CSV column naming each row's split (train / val / test)."""
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    """Fraction of files held out for validation when no split is given."""
    axes: str | None = None
    """Axes of the input files when their metadata does not say, e.g. "CZYX"."""
    voxel_size: list[float] | None = None
    """Physical voxel size (Z)YX when the files do not carry it."""
    target_voxel_size: list[float] | None = None
    """Resample every image to this voxel size on the fly (images linear, labels nearest)."""
    patch_size: list[int]
    """Patch size per spatial axis: 2 numbers for 2D, 3 (Z, Y, X) for 3D."""
    batch_size: int = Field(8, ge=1, le=MAX_BATCH)
    """Patches per optimizer step (summed over all processes under DDP)."""
    patches_per_image: int = Field(4, ge=1)
    """Patches drawn from an image each time it is visited."""
    foreground_fraction: float = Field(0.33, ge=0.0, le=1.0)
    """Fraction of patches centred on a labelled pixel (nnU-Net-style oversampling)."""
    class_balanced: bool = False
    """Draw the class first, then a pixel of it, so rare classes are seen as often as common ones."""
    min_foreground: float = Field(0.0, ge=0.0, le=1.0)
    """Reject patches whose labelled fraction is below this (0 disables)."""
    pad: bool = True
    """Pad images smaller than the patch (reflect for images, 0 for labels)."""
    normalize: Transform = Field(default_factory=lambda: spec("percentile"))
    """Normalisation of the input images (a transform)."""
    augment: list[Transform] = Field(default_factory=list)
    """Augmentations applied to training patches, in order (transforms)."""
    nan_policy: Literal["error", "zero"] = "error"
    """What to do with NaN or Inf in an input image."""
    cache: Literal["none", "memory", "disk"] = "memory"
    """Cache decoded, normalised images: in memory, on disk under `cache_dir`, or not at all."""
    cache_dir: Path | None = None
    """Where the disk cache lives (default: the run directory's cache/)."""
    num_workers: int = Field(2, ge=0, le=MAX_WORKERS)
    """DataLoader worker processes per training process; at most the CPU cores the process
    may use (shared among the training processes of a machine): more are not started."""
    unpaired: bool = False
    """Targets are not aligned with the inputs (CycleGAN): each target patch is drawn from a
    random target image, independently of the input patch."""
    plan: bool = False
    """Plan the patch size, network levels and strides, batch size, normalisation and steps
    from the data and this machine before training, as `bioim2im plan` does (the time budget
    is train.max_minutes; without it the steps are kept). The planned values replace the
    preset's; --set values replace the plan's. The run's preset.toml holds the result."""

    @field_validator("patch_size")
    @classmethod
    def _patch_size(cls, value: list[int]) -> list[int]:
        if len(value) not in (2, 3):
            raise ValueError(f"must have 2 (YX) or 3 (ZYX) numbers, got {len(value)}")
        if any(v < 1 for v in value):
            raise ValueError(f"every size must be at least 1, got {value}")
        return value


class HeadConfig(ComponentSpec):
    """One task head: its component (``name`` + parameters), target, loss and postprocessing."""

    out_channels: int = Field(1, ge=1)
    """Output channels: classes for softmax, 1 per mask for sigmoid, channels for regression."""
    task: Literal["semantic", "instance", "regression"] = "semantic"
    """What the head predicts; decides target preparation and evaluation metrics."""
    target: str | None = None
    """Name of this head's target images (subfolder / suffix / CSV column); default "GT"."""
    weight: float = Field(1.0, ge=0.0)
    """Weight of this head's loss in the total loss."""
    loss: Loss
    """The loss (name + parameters)."""
    postprocess: list[Postprocessor] = Field(default_factory=list)
    """Postprocessing steps applied in order at prediction time."""
    metrics: list[Metric] = Field(default_factory=list)
    """Validation metrics; the first one's main value can be the checkpoint metric."""
    output_dtype: Literal["float16", "float32", "uint8", "uint16", "uint32"] | None = None
    """dtype of the written prediction; default: float32 probabilities, uint8 masks and class
    maps, uint32 object ids (instance labels)."""
    ignore_value: float | None = None
    """Target value marking unannotated pixels (left out of the loss); NaN is always ignored."""
    target_normalize: Transform | None = None
    """Normalisation of a regression target (a transform); default z-score for regression."""


class ModelConfig(StrictModel):
    """One backbone, one or more named heads."""

    in_channels: int = Field(1, ge=1)
    """Channels of the input images."""
    features: int = Field(32, ge=1)
    """Channels of the backbone's output feature map, which every head reads."""
    backbone: Backbone
    """The backbone network (name + parameters)."""
    heads: dict[str, Annotated[HeadConfig, Component("head")]] = Field(min_length=1)
    """Task heads by name, e.g. `[model.heads.seg]`."""

    @field_validator("heads")
    @classmethod
    def _head_names(cls, value: dict[str, HeadConfig]) -> dict[str, HeadConfig]:
        for head_name in value:
            if not head_name.isidentifier():
                raise ValueError(
                    f"head name {head_name!r} must be a plain identifier (letters, digits, _)"
                )
        return value


class TrainConfig(StrictModel):
    """How long and how to optimise."""

    steps: int | None = Field(2000, ge=1)
    """Optimizer steps to train for (ignored when `epochs` is set)."""
    epochs: int | None = Field(None, ge=1)
    """Epochs to train for instead of `steps` (an epoch visits every training image)."""
    max_minutes: float | None = Field(None, gt=0)
    """Stop (and checkpoint) after this much wall-clock time."""
    optimizer: Optimizer = Field(default_factory=lambda: spec("adamw"))
    """Optimizer (name + parameters, e.g. lr)."""
    scheduler: Scheduler = Field(default_factory=lambda: spec("constant"))
    """Learning-rate schedule, stepped once per optimizer step."""
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """Mixed precision: auto = bf16 on GPUs that support it, fp16 on other GPUs, off on CPU."""
    accumulate: int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer step."""
    clip_grad_norm: float | None = Field(None, gt=0)
    """Clip the global gradient norm to this value."""
    ema: float | None = Field(None, gt=0, lt=1)
    """Decay of an exponential moving average of the weights (e.g. 0.999); none when unset."""
    compile: bool = False
    """Compile the model with torch.compile."""
    channels_last: bool = False
    """Use the channels-last memory format (faster convolutions on recent GPUs)."""
    sync_batchnorm: bool = False
    """Convert BatchNorm to SyncBatchNorm under DDP."""
    seed: int = 0
    """Seed of every random generator; the same seed gives the same run."""
    log_every: int = Field(10, ge=1)
    """Log the losses every this many steps."""
    val_every: int = Field(200, ge=1)
    """Validate every this many steps."""
    val_max_batches: int | None = Field(None, ge=1)
    """At most this many validation batches per validation."""
    val_max_seconds: float | None = Field(None, gt=0)
    """Stop a validation after this many seconds."""
    checkpoint_every: int = Field(500, ge=1)
    """Write `checkpoints/last.pt` every this many steps (and at the end)."""
    keep_checkpoints: int = Field(0, ge=0)
    """Also keep the N most recent of the checkpoints written every `checkpoint_every` steps,
    as `checkpoints/step_<step>.pt` (besides `last.pt` and `best.pt`); 0 keeps none."""
    checkpoint_metric: str = "val/loss"
    """Metric that picks `checkpoints/best.pt`, e.g. "val/loss" or "val/seg/dice"."""
    checkpoint_mode: Literal["min", "max"] = "min"
    """Whether a lower or a higher `checkpoint_metric` is better."""
    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop after this many validations without improvement of `checkpoint_metric`."""
    init_from: Path | None = None
    """Start from the weights of this run directory or checkpoint (fine-tuning): the tensors
    whose names and shapes fit are loaded, and what was loaded and skipped is reported."""
    init_min_fraction: float = Field(0.5, gt=0.0, le=1.0)
    """Least share of the model's weights `init_from` must provide; less stops with an error
    (the checkpoint is likely of another network) unless `init_partial` is set."""
    init_partial: bool = False
    """Start from whatever `init_from` provides, however little (but not from nothing)."""
    freeze: list[str] = Field(default_factory=list)
    """Parameter-name patterns (fnmatch) kept frozen, e.g. "backbone.*"."""


class PredictConfig(StrictModel):
    """Sliding-window prediction settings."""

    roi_size: list[PositiveInt] | None = None
    """Window size per spatial axis; default: the training patch size. A window larger than an
    image is cut down to the image (rounded up to a size the network takes)."""
    overlap: float | list[float] = 0.25
    """Overlap between windows as a fraction of the window, one value or one per axis."""
    blend: Literal["gaussian", "constant"] = "gaussian"
    """How overlapping windows are blended."""
    halo: Literal["auto"] | list[Annotated[int, Field(ge=0)]] | None = None
    """Tile as bioimageio.core's blockwise prediction does: the image is mirrored by the halo,
    only each window's interior counts (its `halo` voxels at each end are dropped; `overlap` is
    then not used), and where two interiors overlap the later window's value is kept. A list:
    voxels per spatial axis, windows placed as core places its blocks (what a package of this
    run gives). "auto": for a network whose output does not depend on the window beyond its
    receptive field (batch normalisation or none), that receptive field, measured when the
    model is loaded, with windows on multiples of the network's divisor, so every voxel gets
    its whole-image value (no halo tiling when the network is window-dependent); none: blended
    windows. Packages bioim2im exports set it."""
    tta: bool | list[list[int]] = False
    """Test-time augmentation over flips: true = all spatial-axis combinations, or a list of
    axis subsets to flip, e.g. [[0], [1], [0, 1]]."""
    batch_size: int = Field(4, ge=1, le=MAX_BATCH)
    """Windows per forward pass."""
    block_size: list[PositiveInt] | None = None
    """Size of the blocks streamed through memory; default: the largest that `memory_gb` holds."""
    memory_gb: float = Field(0.5, gt=0)
    """Memory for the image data in flight (blocks being read, predicted and written, and the
    sums handed between blocks), in GB; the network's own memory comes on top. Sets the default
    `block_size`: larger blocks re-read less of their neighbours' input."""
    channels_last: bool | Literal["auto"] = "auto"
    """Run the network in the channels-last memory layout (faster for many convolutional
    networks, slower for some); auto = measure both on the first batches and keep the faster."""
    compile: bool | Literal["auto"] = "auto"
    """Run the network through torch.compile (about twice as fast on the CPU for the presets'
    U-Nets, after ~13 s of compiling, ~3 s once Inductor's cache holds it); auto = on the CPU,
    when the image's window batches, at the measured time of one, save more than that, and
    back to eager if the first compiled batches are not faster; off on a Dask cluster
    (`--cluster`), where every worker would compile its own."""
    format: Literal["ome-zarr", "tiff"] = "ome-zarr"
    """Output file format."""
    zarr_format: Literal[2, 3] = 2
    """Zarr format version of OME-Zarr outputs (2 = NGFF 0.4, 3 = NGFF 0.5)."""
    pyramid_levels: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    """Extra downsampled levels written into OME-Zarr outputs (each halved in Y and X); auto:
    as many as bring the largest output's Y and X to at most 1024 voxels (none for smaller
    images), so that viewers open large outputs at a coarse level first."""
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """Mixed precision of the network in prediction: auto = as `train.amp` says (bf16 on GPUs
    that support it, fp16 on other GPUs, full precision on the CPU); bf16 on a CPU with native
    bf16 (AVX512-BF16 or AMX) runs the presets' networks 1.1-3.1 times as fast, with outputs that
    differ from full precision's by about 1 % (the benchmarks README has the measured scores).
    Torch networks only: ONNX Runtime and exported graphs run as they were saved."""
    backend: Literal["auto", "torch", "onnxruntime"] = "torch"
    """What runs the network: torch, or ONNX Runtime (the network converted to ONNX when the
    model is loaded, needs the `onnx` extra); auto = ONNX Runtime on the CPU when installed."""

    @field_validator("overlap")
    @classmethod
    def _overlap(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if any(not 0.0 <= v < 1.0 for v in values):
            raise ValueError(f"each overlap must be in [0, 1), got {value}")
        return value


class AdversarialConfig(StrictModel):
    """Adversarial training of a head (pix2pix), or of two generators (CycleGAN)."""

    discriminator: Discriminator = Field(default_factory=lambda: spec("patchgan"))
    """The discriminator network (a registered discriminator)."""
    head: str | None = None
    """The head whose output the discriminator judges; default: the only head."""
    mode: Literal["lsgan", "vanilla"] = "lsgan"
    """Adversarial loss: least squares (LSGAN) or binary cross-entropy (the original GAN)."""
    weight: float = Field(0.01, ge=0.0)
    """Weight of the adversarial loss relative to the head's own loss (pix2pix: 1/100)."""
    conditional: bool = True
    """The discriminator sees the input image next to the output (pix2pix); CycleGAN sets false."""
    optimizer: Optimizer = Field(default_factory=lambda: spec("adam", lr=2e-4, betas=[0.5, 0.999]))
    """Optimizer of the discriminator(s)."""
    cycle: bool = False
    """CycleGAN: a second generator maps targets back to inputs; needs `data.unpaired`."""
    cycle_weight: float = Field(10.0, ge=0.0)
    """Weight of the cycle-consistency (L1) loss."""
    identity_weight: float = Field(0.0, ge=0.0)
    """Weight of CycleGAN's identity loss (0 disables it)."""
    pool_size: int = Field(0, ge=0)
    """Generated images kept per discriminator (CycleGAN: 50): each is shown a random half of
    older outputs, which keeps it from chasing the generator's latest step. 0: no pool."""


class AuthorConfig(StrictModel):
    """An author of an exported model."""

    name: str
    affiliation: str | None = None
    email: str | None = None
    orcid: str | None = None


class CitationConfig(StrictModel):
    """A reference for an exported model: its text and a DOI or URL."""

    text: str
    doi: str | None = None
    url: str | None = None


class ExportConfig(StrictModel):
    """The metadata of the model `bioim2im export` writes (bioimage.io packages)."""

    name: str | None = None
    """The model's name (letters, digits, spaces, _+-()); default: from the run directory."""
    description: str | None = None
    """One paragraph saying what the model does; default: from the preset."""
    authors: list[AuthorConfig] = Field(default_factory=list)
    """Who made the model, e.g. [{ name = "Ada Lovelace", affiliation = "..." }]; default: the
    user running the export."""
    license: str = "CC-BY-4.0"
    """An SPDX license identifier for the weights, e.g. "MIT" or "CC-BY-4.0"."""
    cite: list[CitationConfig] = Field(default_factory=list)
    """References, e.g. [{ text = "...", doi = "10.1234/abc" }]; default: MONAI's paper."""
    tags: list[str] = Field(default_factory=list)
    """Keywords, added to those derived from the model (dimensions, task, backbone)."""


class LoggingConfig(StrictModel):
    """What a run writes besides checkpoints."""

    loggers: list[Logger] = Field(default_factory=list)
    """Experiment trackers the run reports its metrics and snapshots to (loggers, see `bioim2im
    list-plugins --kind logger`), e.g. [{ name = "tensorboard" }, { name = "mlflow",
    tracking_uri = "http://127.0.0.1:5000" }]."""
    tensorboard: bool = False
    """Shorthand for loggers = [{ name = "tensorboard" }]: TensorBoard event files in the run's
    tensorboard/ folder (needs the `tensorboard` extra)."""
    snapshots: bool = True
    """Write PNG montages of input / target / prediction at each validation."""
    progress: Literal["auto", "bar", "lines"] = "auto"
    """Rich progress bar on a terminal, plain periodic lines otherwise."""

    def chosen_loggers(self) -> list[ComponentSpec]:
        """``loggers``, plus TensorBoard when the ``tensorboard`` shorthand asks for it."""
        return [*self.loggers, *(spec for _, _, spec in self.implied_components())]

    def implied_components(self) -> list[tuple[str, str, ComponentSpec]]:
        """(key, kind, spec) of the components a shorthand stands for: TensorBoard."""
        if not self.tensorboard or "tensorboard" in [spec.name for spec in self.loggers]:
            return []
        return [("tensorboard", "logger", ComponentSpec(name="tensorboard"))]


class ClusterConfig(StrictModel):
    """A Dask cluster for `bioim2im predict/postprocess --cluster`: the batch jobs of
    `--cluster slurm|lsf|pbs` (dask-jobqueue; the `cluster` extra) and how the work is cut into
    tasks. Give these with `--set cluster.KEY=VALUE` on the command: a model's own preset,
    which may come from elsewhere, never decides what a cluster job runs."""

    queue: str | None = None
    """The queue (SLURM partition) the jobs go to; default: the scheduler's."""
    account: str | None = None
    """The account (project) the jobs are charged to."""
    cores: int = Field(1, ge=1, le=1024)
    """CPU cores per job."""
    memory: str = Field("8GB", pattern=r"^[0-9]+(\.[0-9]+)?\s*([kKMGTP]i?B)$")
    """Memory per job, e.g. "32GB" or "64GiB"."""
    processes: int = Field(1, ge=1, le=256)
    """Dask worker processes per job (one per GPU of the job); each loads the model once."""
    walltime: str = Field("01:00:00", pattern=r"^([0-9]+-)?[0-9]{1,3}(:[0-5][0-9]){1,2}$")
    """Wall-clock limit of each job, HH:MM:SS (SLURM also D-HH:MM:SS)."""
    jobs: int = Field(1, ge=1, le=10000)
    """Jobs started (the workers: jobs x processes)."""
    job_extra_directives: list[str] = Field(default_factory=list)
    """More scheduler directives, one per item, e.g. ["--gres=gpu:1"] (SLURM) or
    ["-l gpus=1"] (PBS)."""
    job_script_prologue: list[str] = Field(default_factory=list)
    """Shell lines run in each job before its worker starts, e.g. ["module load cuda",
    "source ~/venvs/bioim2im/bin/activate"]."""
    interface: str | None = None
    """The network interface the workers and the scheduler talk over, e.g. "ib0"; default: the
    host name's."""
    local_directory: str | None = None
    """Scratch folder of each worker on its node (node-local disk)."""
    log_directory: str | None = None
    """Where the jobs' output and error files go."""
    blocks_per_task: int | None = Field(None, ge=1, le=100000)
    """Blocks one task predicts, a box of them: a task runs again the windows its earlier
    neighbours would hand on to it, so larger boxes cost less (but hold more in memory);
    default: one task per worker, at most 64 blocks each."""
    retries: int = Field(2, ge=0, le=100)
    """How often a failed task is tried again (on any worker) before the run stops naming the
    block and the cause."""

    @field_validator("job_extra_directives", "job_script_prologue")
    @classmethod
    def _one_line_each(cls, value: list[str]) -> list[str]:
        if any("\n" in line or "\r" in line for line in value):
            raise ValueError("give one line per item (no line breaks inside one)")
        return value


def _check_batch_voxels(preset: Preset) -> None:
    """A training batch larger than any machine can hold is refused before anything starts.
    (Prediction windows are cut to each image, so predict.roi_size may exceed it.)"""
    data = preset.data
    voxels = data.batch_size * math.prod(data.patch_size)
    if voxels > MAX_BATCH_VOXELS:
        raise ValueError(
            f"data.batch_size x data.patch_size = {data.batch_size} x {data.patch_size} = "
            f"{voxels:,} voxels per batch, more than any machine holds (at most "
            f"{MAX_BATCH_VOXELS:,}); use a smaller batch or patch"
        )


class Preset(StrictModel):
    """Everything needed to train a model and predict with it."""

    description: str | None = None
    """One line saying what this preset trains."""
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=_empty)
    predict: PredictConfig = Field(default_factory=_empty)
    logging: LoggingConfig = Field(default_factory=_empty)
    adversarial: AdversarialConfig | None = None
    """Adversarial training (pix2pix / CycleGAN); none when unset."""
    export: ExportConfig = Field(default_factory=_empty)
    """Metadata of exported models (`bioim2im export`)."""
    cluster: ClusterConfig = Field(default_factory=_empty)
    """The Dask cluster of `--cluster` (set with --set cluster.KEY=VALUE on the command)."""

    @property
    def spatial_dims(self) -> int:
        return len(self.data.patch_size)

    @model_validator(mode="after")
    def _consistent(self) -> Preset:
        # Rules spanning sections; each message names the keys involved.
        dims = self.spatial_dims
        for key, value in (
            ("predict.roi_size", self.predict.roi_size),
            ("predict.block_size", self.predict.block_size),
            ("data.voxel_size", self.data.voxel_size),
            ("data.target_voxel_size", self.data.target_voxel_size),
        ):
            if value is not None and len(value) != dims:
                raise ValueError(
                    f"{key} has {len(value)} numbers but data.patch_size has {dims} "
                    f"({'ZYX' if dims == 3 else 'YX'}); give {dims}"
                )
        tta = self.predict.tta
        if isinstance(tta, list):
            for subset in tta:
                if any(not 0 <= axis < dims for axis in subset):
                    raise ValueError(
                        f"predict.tta flips axes {subset}, but a {dims}D image has spatial axes "
                        f"0..{dims - 1} ({'ZYX' if dims == 3 else 'YX'})"
                    )
        overlap = self.predict.overlap
        if isinstance(overlap, list) and len(overlap) != dims:
            raise ValueError(
                f"predict.overlap has {len(overlap)} numbers but data.patch_size has {dims}"
            )
        adversarial = self.adversarial
        if adversarial is not None:
            heads = list(self.model.heads)
            if adversarial.head is None and len(heads) != 1:
                raise ValueError(f"adversarial.head must name one of the heads {heads}")
            if adversarial.head is not None and adversarial.head not in heads:
                raise ValueError(
                    f"adversarial.head '{adversarial.head}' is not a head; heads: {heads}"
                )
            if adversarial.cycle and not self.data.unpaired:
                raise ValueError("adversarial.cycle = true (CycleGAN) needs data.unpaired = true")
            _adversarial_rules(self, adversarial)
        if self.data.unpaired and (adversarial is None or not adversarial.cycle):
            raise ValueError(
                "data.unpaired = true needs [adversarial] with cycle = true (CycleGAN): a loss "
                "that compares each output with its target has nothing to learn from unaligned "
                "targets (see the cyclegan-2d preset)"
            )
        _check_batch_voxels(self)
        if self.data.axes is not None:
            spatial = [a for a in self.data.axes.upper() if a in "ZYX"]
            if len(spatial) != dims:
                raise ValueError(
                    f"data.axes '{self.data.axes}' has {len(spatial)} spatial axes but "
                    f"data.patch_size has {dims}"
                )
        return self


def _adversarial_rules(preset: Preset, adversarial: AdversarialConfig) -> None:
    """Settings adversarial training cannot work with, each refused with its keys named."""
    model = preset.model
    head = adversarial.head or next(iter(model.heads))
    spec = model.heads[head]
    if spec.task != "regression":
        raise ValueError(
            f"adversarial training judges images: model.heads.{head} must have task = "
            f'"regression", not "{spec.task}"'
        )
    if not adversarial.cycle:
        return
    if len(model.heads) != 1:
        raise ValueError(
            f"CycleGAN (adversarial.cycle = true) trains one head; model.heads has "
            f"{len(model.heads)}: {', '.join(model.heads)}"
        )
    if adversarial.conditional:
        raise ValueError(
            "CycleGAN's discriminators cannot see the input next to an output (no target "
            "matches an input): set adversarial.conditional = false"
        )
    if adversarial.identity_weight > 0 and spec.out_channels != model.in_channels:
        raise ValueError(
            f"adversarial.identity_weight needs as many output channels as input channels "
            f"(model.heads.{head}.out_channels = {spec.out_channels}, model.in_channels = "
            f"{model.in_channels}); set it to 0"
        )
