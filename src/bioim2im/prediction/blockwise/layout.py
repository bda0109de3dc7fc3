"""The memory layout the network runs in during prediction: contiguous or channels-last.

Channels-last (NDHWC) lets oneDNN and cuDNN run many convolutions much faster — twice as fast
for a MONAI UNet without residual units on two CPU cores — but it may slow others down (it was
thought to slow UNets with residual units; with torch 2.13 on the CPU their batches cost about
10 % less CPU time channels-last). ``"auto"`` therefore measures: the first full batches of windows run
alternately in each layout (every output is used, nothing is computed for nothing), and the
faster layout runs the rest. The choice is kept per network and window batch shape, so the
next images of a command do not measure again. Both layouts give the same values up to
floating-point rounding.

On the CPU a batch is timed in CPU seconds of this process, not wall seconds: the work a layout
costs, which other processes on the machine do not change. Timed by the wall clock on a shared
machine, the choice followed the neighbours' load: on two busy cores it kept the contiguous
layout for a residual UNet whose batches cost 10 % more CPU time in it. The process's other
threads (reading the next blocks, writing finished ones) count too, which is why the best of
each layout's timed batches is compared. On a GPU (any device but the CPU) the wall clock counts.

``compile`` runs full batches through ``torch.compile`` (Inductor) of the network in the chosen
layout. On two CPU cores it halves the forward of the presets' residual U-Nets (3D: 0.92 ->
0.48 s per batch of four 32x128x128 windows; 2D: 0.11 -> 0.06 s), after a compilation of about
23 s (4.6 s with Inductor's cache warm). ``"auto"`` compiles on the CPU when the full batches
left, at the eager batch's measured CPU time, would save more than compiling costs
(:data:`COMPILE_SECONDS`), and keeps the compiled network only when its first timed batches
cost less CPU time than the eager batch did (it goes back to eager otherwise, and stays there
for the command's next images). What compiling saves is fusing what lies between the convolutions
(normalisation, activations, additions): :data:`COMPILE_SAVES` of the batch's time outside its
convolution and linear layers, measured on the same eager batch by hooks around those layers
(the presets' networks spend 44-77 % of a batch in them; a network made of convolutions alone
gains nothing). Measured idle on two cores: the issue-24 3D U-Net 0.80 -> 0.47 s per batch,
a 2D U-Net of 32-512 features 0.31 -> 0.17 s, each after ~23 s (30 CPU s) of compiling. A
network that does not compile runs eagerly, with one warning.

Instance normalisation, as torch implements it, copies a channels-last input to the contiguous
layout and back: in the presets' residual 3D U-Nets on two CPU cores those copies were a quarter
of an eager forward. In channels-last prediction each ``InstanceNorm`` without running
statistics therefore normalises in the input's own layout (:func:`_instance_norm_in_layout`: one
``var_mean`` and one ``addcmul``; 0.90 -> 0.78 s per batch of four 32x128x128 windows of the
issue network, values within 6e-6 of torch's); training and the contiguous layout keep torch's.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator
from typing import Any, Literal

import torch

Choice = bool | Literal["auto"]

# Batches per layout: the first of each warms up (oneDNN builds its kernels), then the best of
# the timed ones counts.
_WARM_UP = 1
_TIMED = 2

COMPILE_SECONDS = 30.0
"""CPU seconds ``torch.compile`` takes for the presets' U-Nets on two cores, cache cold, its
compiler processes included (measured: ~30 for the issue-24 3D U-Net and for a 2D U-Net of
32-512 features, 23 s of wall time each)."""
COMPILE_SAVES = 0.8
"""The share of an eager batch's time outside convolution and linear layers that a compiled
network saves (the issue-24 U-Net: 46 % of its batch outside them, 41 % saved)."""

_decided: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[int, ...], bool]] = (
    weakref.WeakKeyDictionary()
)
# Compiled networks per batch shape and layout, for the next images of a command.
_compiled: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[Any, ...], Any]] = (
    weakref.WeakKeyDictionary()
)
# Batch shapes and layouts whose compiled network ran no faster than the eager one ("auto").
_rejected: weakref.WeakKeyDictionary[torch.nn.Module, set[tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


def set_layout(module: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """``module`` (changed in place) with its 4-D and 5-D weights and buffers channels-last,
    each in its own rank's layout (``channels_last`` for 2D convolutions, ``channels_last_3d``
    for 3D ones), or all back to contiguous.

    ``Module.to(memory_format=...)`` applies one format to every tensor and fails on a network
    that mixes 2D and 3D layers, such as a 3D backbone with a 3D -> 2D projection head.
    """
    formats = (
        {4: torch.channels_last, 5: torch.channels_last_3d}
        if channels_last
        else {4: torch.contiguous_format, 5: torch.contiguous_format}
    )

    def convert(tensor: torch.Tensor) -> torch.Tensor:
        layout = formats.get(tensor.dim())
        return tensor if layout is None else tensor.contiguous(memory_format=layout)

    return module._apply(convert)


def compile_failure(exc: BaseException) -> str:
    """A failed ``torch.compile`` in one line: the error's type and first line, the backend's
    own error where dynamo wraps it (``BackendCompilerFailed`` says only "backend='inductor'
    raised:" on its first line)."""
    cause = getattr(exc, "inner_exception", None) or exc
    first = (str(cause).splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first}"


def _instance_norm_in_layout(
    self: torch.nn.modules.instancenorm._InstanceNorm, inputs: torch.Tensor
) -> torch.Tensor:
    """``InstanceNorm.forward`` for inference on a batched input, in the input's layout: the
    statistics of each image and channel by one (Welford) ``var_mean`` over the spatial axes,
    the normalisation and the affine map as one ``addcmul``; torch's own otherwise."""
    if self.training or inputs.dim() != self._get_no_batch_dim() + 1:
        return type(self).forward(self, inputs)
    axes = tuple(range(2, inputs.dim()))
    var, mean = torch.var_mean(inputs, dim=axes, keepdim=True, correction=0)
    scale = torch.rsqrt(var + self.eps)
    if self.weight is not None and self.bias is not None:
        shape = (1, -1) + (1,) * len(axes)
        scale = scale * self.weight.view(shape)
        shift = self.bias.view(shape) - mean * scale
    else:
        shift = -mean * scale
    return torch.addcmul(shift, inputs, scale)


def _norms_in_layout(module: torch.nn.Module, on: bool) -> None:
    """Let ``module``'s instance normalisations without running statistics work in their
    input's layout (``on``), or give them torch's forward back."""
    for layer in module.modules():
        if not isinstance(layer, torch.nn.modules.instancenorm._InstanceNorm):
            continue
        if on and not layer.track_running_stats:
            layer.forward = _instance_norm_in_layout.__get__(layer)  # type: ignore[method-assign]
        elif "forward" in vars(layer):
            del layer.forward


class _ConvolutionShare:
    """The share of one forward's wall time spent in ``model``'s convolution and linear layers,
    timed by hooks around each (entered around the forward; the hooks go on leaving)."""

    KINDS = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.inside = 0.0
        self.share = 0.0
        self._entered = 0.0
        self._started = 0.0
        self._handles: list[Any] = []

    def __enter__(self) -> _ConvolutionShare:
        for layer in self.model.modules():
            if isinstance(layer, self.KINDS):
                self._handles.append(layer.register_forward_pre_hook(self._before))
                self._handles.append(layer.register_forward_hook(self._after))
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        total = time.perf_counter() - self._started
        for handle in self._handles:
            handle.remove()
        self.share = min(1.0, self.inside / total) if total > 0 else 0.0

    def _before(self, *args: Any) -> None:
        self._entered = time.perf_counter()

    def _after(self, *args: Any) -> None:
        self.inside += time.perf_counter() - self._entered


def decide_layout_ahead(
    model: Any, device: torch.device, batch_shape: tuple[int, ...], channels_last: Choice
) -> bool:
    """Settle the layout before predicting, measured as prediction measures it but on batches
    of zeros of ``batch_shape``: for processes that must all run the network alike (a
    cluster's workers, each choosing for itself, could round their blocks differently).
    Returns whether to run channels-last; the model is left contiguous."""
    layout = Layout(model, len(batch_shape) - 2, device, channels_last, batch_shape[0])
    zeros = torch.zeros(batch_shape, device=device)
    with torch.inference_mode():
        while layout.measuring:
            with layout.timed(batch_shape) as network:
                network(layout.prepare(zeros))
    chosen = bool(layout.chosen)
    layout.restore()
    return chosen


class Layout:
    """Runs ``model`` in the chosen (or measured) layout; :meth:`restore` undoes the change."""

    def __init__(
        self,
        model: Any,
        ndim: int,
        device: torch.device,
        choice: Choice,
        batch_size: int,
        compile: Choice = False,
        batches: int = 0,
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.channels_last_format = {2: torch.channels_last, 3: torch.channels_last_3d}.get(ndim)
        self.current = False
        self.trials: list[bool] = []
        self.seconds: dict[bool, list[float]] = {False: [], True: []}
        # Only an eager torch module can change its layout or compile: not an ONNX Runtime
        # session, a TorchScript graph or a package's wrapped network.
        eager = isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule)
        if compile == "auto" and device.type != "cpu":
            compile = False  # measured on the CPU only
        self.compile: Choice | None = compile if eager and compile is not False else None
        self.compiled: Any = None
        self.checks: list[float] | None = None
        """CPU seconds of the first compiled batches, while ``"auto"`` checks them against
        :attr:`eager_seconds`; None when not checking."""
        self.eager_seconds = 0.0
        self.batches_left = batches
        """Full batches still to run (for ``compile = "auto"``)."""
        if self.channels_last_format is None or choice is False or not eager:
            return
        if choice is True:
            self._switch(True)
        else:
            self.trials = [False, True] * (_WARM_UP + _TIMED)

    @property
    def measuring(self) -> bool:
        return bool(self.trials)

    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` in the layout the model runs in now."""
        if self.current and self.channels_last_format is not None:
            return inputs.contiguous(memory_format=self.channels_last_format)
        return inputs

    @contextlib.contextmanager
    def timed(self, batch_shape: tuple[int, ...]) -> Iterator[torch.nn.Module]:
        """The model, for one batch of windows of ``batch_shape``, timed while measuring."""
        full = batch_shape[0] == self.batch_size
        if full:
            self.batches_left -= 1
        if full and not self.trials and self.compile is not None:
            key = (batch_shape, self.current)
            if self.compiled is None and self.compile != "auto":
                self.compiled = self._compiled(batch_shape)
            elif self.compiled is None:  # compiled for an earlier image of the command?
                self.compiled = _compiled.get(self.model, {}).get(key)
                if key in _rejected.get(self.model, ()):
                    self.compile = None  # ran no faster compiled for an earlier image
                    yield self.model
                    return
            if self.compiled is not None and self.checks is None:
                yield self.compiled
                return
            if self.compiled is not None:  # compiled by "auto": is it faster than eager?
                started = time.process_time()
                yield self.compiled
                self._check_compiled(key, time.process_time() - started)
                return
            # "auto": time this eager batch and its convolutions, then decide.
            started = time.process_time()
            with _ConvolutionShare(self.model) as convolutions:
                yield self.model
            eager = time.process_time() - started
            saved = COMPILE_SAVES * (1 - convolutions.share) * eager
            if saved * self.batches_left > COMPILE_SECONDS:
                self.compile = True
                self.compiled = self._compiled(batch_shape)
                # The same layout's eager batches timed without hooks count too.
                self.eager_seconds = min([eager, *self.seconds[self.current][_WARM_UP:]])
                self.checks = []
            else:
                self.compile = None
            return
        if not self.trials or not full:
            yield self.model
            return
        known = _decided.get(self.model, {}).get(batch_shape)
        if known is not None:  # an earlier image measured this already
            self.trials = []
            self._switch(known)
            yield self.model
            return
        trial = self.trials[0]
        self._switch(trial)
        self._synchronize()
        clock = time.process_time if self.device.type == "cpu" else time.perf_counter
        started = clock()
        yield self.model
        self._synchronize()
        self.seconds[trial].append(clock() - started)
        self.trials.pop(0)
        if not self.trials:
            faster = min(self.seconds[True][_WARM_UP:]) < min(self.seconds[False][_WARM_UP:])
            self._switch(faster)
            _decided.setdefault(self.model, {})[batch_shape] = faster

    def _check_compiled(self, key: tuple[Any, ...], seconds: float) -> None:
        """Count a compiled batch's CPU ``seconds``. After the first compiled batches (one to
        warm up, then the best of the timed ones):
        keep the compiled network only if it costs less CPU time than the eager batch did.
        What ``"auto"`` expected of compiling is an estimate (:data:`COMPILE_SAVES`); with
        tensors in huge pages, some networks' compiled batches cost as much as their eager
        ones, and every batch after this one would pay for the guess."""
        assert self.checks is not None
        self.checks.append(seconds)
        if len(self.checks) < _WARM_UP + _TIMED:
            return
        if min(self.checks[_WARM_UP:]) >= self.eager_seconds:
            _rejected.setdefault(self.model, set()).add(key)
            _compiled.get(self.model, {}).pop(key, None)
            self.compiled = None
            self.compile = None
        self.checks = None

    def _compiled(self, batch_shape: tuple[int, ...]) -> Any:
        """``torch.compile`` of the model in its current layout, compiled on a batch of zeros
        of ``batch_shape``; None (and one warning) when it does not compile."""
        key = (batch_shape, self.current)
        known = _compiled.get(self.model, {}).get(key)
        if known is not None:
            return known
        import warnings

        try:
            with warnings.catch_warnings():  # the compiler's own deprecation notices
                warnings.simplefilter("ignore", DeprecationWarning)
                compiled = torch.compile(self.model, dynamic=False)
                compiled(self.prepare(torch.zeros(batch_shape, device=self.device)))
        except Exception as exc:  # any failure of the compiler: run eagerly
            warnings.warn(
                f"torch.compile failed ({compile_failure(exc)}); "
                "predicting without it (predict.compile = false skips the attempt)",
                RuntimeWarning,
                stacklevel=2,
            )
            self.compile = None
            return None
        _compiled.setdefault(self.model, {})[key] = compiled
        return compiled

    @property
    def chosen(self) -> bool | None:
        """Channels-last (True), contiguous (False), or None while still measuring."""
        return None if self.trials else self.current

    def restore(self) -> None:
        """Give the model back in the contiguous layout."""
        self._switch(False)

    def _switch(self, channels_last: bool) -> None:
        if channels_last == self.current:
            return
        set_layout(self.model, channels_last)
        _norms_in_layout(self.model, channels_last)
        self.current = channels_last

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
