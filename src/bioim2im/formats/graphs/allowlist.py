"""What a TorchScript graph from elsewhere may do before bioim2im runs it: tensor operations.

TorchScript is a program. Besides tensor operations it can read, write and create files
(``torch.from_file(path, shared=True)``, ``torch.save``), print, reseed the random generators,
create objects of classes it brings, and run code while it is being *loaded*: ``torch.jit.load``
calls the ``__setstate__`` of the modules and objects it unpickles, and custom C++ classes
(``torch.classes``) run theirs. So a graph bioim2im did not just make is checked twice:

1. :func:`check_archive`, before loading: the archive's code and pickles are read as data
   (never executed) and refused when they define ``__setstate__`` or name ``torch.classes``;
   the archive is bounded like a package (:mod:`bioim2im.formats.archives`).
2. :func:`check_module`, once loaded and before it runs: every method and hook of every
   submodule, with what it calls inlined, may hold only the operations of an allowlist:
   :data:`ATEN`, a reviewed list of torch's tensor operations by category (arithmetic,
   comparisons, reductions, shapes and indexing, creation, conversions, network layers,
   linear algebra and Fourier transforms, and the number, list, string and dict operations
   TorchScript emits for scripted control flow), and :data:`PRIM`, the interpreter's own
   (constants, lists, tuples, control flow, reading its own attributes). An operation is
   matched by its name without overload (a node's kind), so every overload of a listed name
   is allowed; none of them takes a file. Anything else is refused: an aten operation not
   listed (a new one in a later torch too, until it is reviewed and added), any other
   namespace (custom operators), a call left uninlined, a class but its own modules.

A refusal names the file and the first operation outside the list; ``--trust-model`` skips
both checks (the graph then runs as the program it is).
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterator
from typing import Any

import torch

from bioim2im.errors import UserError
from bioim2im.formats.archives import check_zip


def _aten(names: str) -> frozenset[str]:
    return frozenset(f"aten::{name}" for name in names.split())


# The aten operations a graph may use, by name without overload (a node's kind): every
# overload of a name is allowed, and none of them may take a file (a test checks every schema).
# Collected from the inlined graphs of bioim2im's backbones and heads in 2D and 3D, of every
# shipped preset's network (traced, as export does) and of MONAI's UNet, AttentionUnet,
# BasicUNet(PlusPlus), DynUNet, SegResNet(DS), UNETR, SwinUNETR, VNet, HighResNet, AutoEncoder
# and DenseNet (scripted and traced), then completed by hand per category. Left out on
# purpose: files (from_file, save), printing, seeding and random sampling (manual_seed, seed,
# rand*, normal, bernoulli, ...), global switches (set_grad_enabled), other threads and streams
# (wait, record_stream), the cuFFT plan cache, autograd (backward, grad), storage surgery
# (set_, as_strided, resize_, _unsafe_*), tests and debugging (_test_*, _print), quantized,
# sparse and backend-specific kernels (cudnn_*, miopen_*, mkldnn_*, fbgemm_*).
ARITHMETIC = _aten(
    # Elementwise arithmetic and math, on tensors and numbers (a name ending in _: in place).
    "abs abs_ absolute add add_ sub sub_ subtract rsub mul mul_ multiply div div_ divide "
    "true_divide floor_divide remainder remainder_ fmod neg neg_ negative reciprocal "
    "reciprocal_ pow pow_ float_power square sqrt sqrt_ rsqrt exp exp_ exp2 expm1 log log_ "
    "log2 log10 log1p sin cos tan sinh cosh tanh tanh_ asin acos atan atan2 asinh acosh atanh "
    "floor floor_ ceil ceil_ round round_ trunc frac sign sgn erf erfc erfinv lerp addcmul "
    "addcdiv hypot xlogy nan_to_num clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ "
    "clip maximum minimum fmax fmin fill_ zero_ copy_ masked_fill masked_fill_ where"
)
COMPARISON = _aten(
    # Comparisons and logic: tensors, numbers, strings, None checks.
    "eq eq_ ne ne_ lt lt_ le le_ gt gt_ ge ge_ equal isclose allclose isnan isinf isfinite "
    "logical_and logical_or logical_xor logical_not bitwise_and bitwise_or bitwise_xor "
    "bitwise_not __and__ __or__ __xor__ __not__ __is__ __isnot__ __contains__"
)
REDUCTIONS = _aten(
    # Reductions, scans, sorting and selection along dimensions.
    "sum mean prod amax amin aminmax max min argmax argmin all any std var std_mean var_mean "
    "norm linalg_vector_norm frobenius_norm logsumexp median nanmean nansum cumsum cumprod "
    "count_nonzero topk sort argsort kthvalue"
)
SHAPE = _aten(
    # Shapes, views, joining, splitting and indexing.
    "size dim numel stride is_contiguous view view_as reshape reshape_as flatten unflatten "
    "squeeze squeeze_ unsqueeze unsqueeze_ permute transpose transpose_ t movedim moveaxis "
    "swapaxes swapdims contiguous expand expand_as broadcast_to broadcast_tensors repeat "
    "repeat_interleave tile cat concat concatenate stack hstack vstack split split_with_sizes "
    "tensor_split chunk unbind narrow select slice index index_select gather scatter "
    "scatter_add index_put index_put_ index_add index_fill masked_select take_along_dim flip "
    "roll rot90 unfold diagonal tril triu nonzero meshgrid pixel_shuffle pixel_unshuffle "
    "channel_shuffle"
)
CREATION = _aten(
    # New tensors from sizes and values (none from files or random numbers).
    "zeros ones empty full zeros_like ones_like empty_like full_like new_zeros new_ones "
    "new_empty new_full arange linspace logspace eye tensor scalar_tensor as_tensor clone "
    "one_hot"
)
CONVERSION = _aten(
    # Types, devices and memory formats; tensors to and from numbers.
    "to type_as cpu detach item is_floating_point is_complex element_size result_type "
    "promote_types view_as_real view_as_complex real imag complex angle conj resolve_conj "
    "resolve_neg"
)
NN = _aten(
    # Convolutions (transposed too), normalisations, pooling, upsampling and interpolation,
    # padding, activations, dropout (a no-op in eval mode), softmax, attention, embeddings.
    "_convolution _convolution_mode convolution conv1d conv2d conv3d conv_transpose1d "
    "conv_transpose2d conv_transpose3d batch_norm instance_norm group_norm layer_norm rms_norm "
    "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices "
    "max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d "
    "adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d "
    "adaptive_max_pool3d max_unpool2d max_unpool3d "
    "upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d "
    "_upsample_nearest_exact2d _upsample_nearest_exact3d upsample_linear1d "
    "upsample_bilinear2d upsample_bicubic2d upsample_trilinear3d _upsample_bilinear2d_aa "
    "_upsample_bicubic2d_aa _upsample_lanczos2d_aa __interpolate __upsample "
    "__upsample_nearest __upsample_bilinear grid_sampler grid_sampler_2d grid_sampler_3d "
    "affine_grid_generator "
    "pad _pad_enum _pad_circular constant_pad_nd reflection_pad1d reflection_pad2d "
    "reflection_pad3d replication_pad1d replication_pad2d replication_pad3d "
    "relu relu_ relu6 leaky_relu leaky_relu_ prelu elu elu_ selu selu_ celu celu_ gelu gelu_ "
    "silu silu_ mish mish_ sigmoid sigmoid_ hardtanh hardtanh_ hardsigmoid hardsigmoid_ "
    "hardswish hardswish_ softplus softshrink hardshrink log_sigmoid threshold threshold_ glu "
    "logit "
    "dropout dropout_ feature_dropout feature_dropout_ alpha_dropout alpha_dropout_ "
    "feature_alpha_dropout feature_alpha_dropout_ "
    "softmax log_softmax _softmax _log_softmax scaled_dot_product_attention "
    "_native_multi_head_attention embedding cosine_similarity pairwise_distance cdist"
)
LINEAR_ALGEBRA = _aten(
    # Products of matrices and tensors; Fourier transforms.
    "matmul mm bmm mv dot outer linear addmm addbmm baddbmm addmv einsum tensordot "
    "linalg_matmul fft_fft fft_ifft fft_rfft fft_irfft fft_fft2 fft_ifft2 fft_rfft2 "
    "fft_irfft2 fft_fftn fft_ifftn fft_rfftn fft_irfftn fft_fftshift fft_ifftshift"
)
SCRIPTED = _aten(
    # What TorchScript emits for scripted control flow and shape arithmetic: numbers, lists,
    # strings (error messages, modes) and dicts; aten::warn hands a message to Python's
    # warnings (torch.nn.InstanceNorm scripted holds one).
    "Int Float Bool IntImplicit FloatImplicit ScalarImplicit Size floordiv "
    "__round_to_zero_floordiv divmod __range_length __derive_index len __getitem__ _set_item "
    "append extend insert pop clear reverse list copy sorted Delete _unwrap_optional "
    "is_scripting str format percentFormat join startswith endswith lower upper strip "
    "dict keys values items get setdefault update popitem warn"
)
ATEN = frozenset.union(
    ARITHMETIC, COMPARISON, REDUCTIONS, SHAPE, CREATION, CONVERSION, NN, LINEAR_ALGEBRA, SCRIPTED
)
"""Every aten operation a graph from elsewhere may use (the categories above)."""
PRIM = frozenset(
    {
        "prim::Constant",
        "prim::ListConstruct",
        "prim::ListUnpack",
        "prim::TupleConstruct",
        "prim::TupleUnpack",
        "prim::TupleIndex",
        "prim::TupleSlice",
        "prim::DictConstruct",
        "prim::GetAttr",
        "prim::SetAttr",
        "prim::If",
        "prim::Loop",
        "prim::NumToTensor",
        "prim::RaiseException",
        "prim::Uninitialized",
        "prim::unchecked_cast",
        "prim::unchecked_unwrap_optional",
        "prim::isinstance",
        "prim::device",
        "prim::dtype",
        "prim::layout",
        "prim::data",
        "prim::requires_grad",
        "prim::grad",
        "prim::shape",
        "prim::max",
        "prim::min",
        "prim::abs",
        "prim::index",
        "prim::itemsize",
        "prim::nbytes",
        "prim::rangelist",
        "prim::tolist",
        "prim::EnumName",
        "prim::EnumValue",
        "prim::ConstantChunk",
        "prim::BroadcastSizes",
        "prim::is_cpu",
        "prim::is_cuda",
        "prim::is_xpu",
        "prim::is_mps",
        "prim::is_meta",
        "prim::is_mkldnn",
        "prim::is_nested",
        "prim::is_quantized",
        "prim::is_sparse",
        "prim::is_sparse_csr",
        "prim::is_vulkan",
        "prim::is_ipu",
        "prim::is_maia",
        "prim::is_mtia",
        "prim::is_xla",
    }
)
"""The TorchScript interpreter's own operations a graph may use."""
TRUST_HINT = (
    "bioim2im runs a model from elsewhere only when it holds tensor operations alone (see "
    "the README's security model); if you trust where it comes from, add --trust-model"
)


def refused(name: str, what: str) -> UserError:
    return UserError(f"{name}: refused to run it: its TorchScript {what}; {TRUST_HINT}")


def allowed(kind: str) -> bool:
    """Whether a node of ``kind`` (its operation's name, without overload) may run."""
    return kind in ATEN or kind in PRIM


# ---------------------------------------------------------------------------------------------
# Before loading: the archive as data


def check_archive(data: bytes, name: str) -> None:
    """Refuse a TorchScript archive whose loading would run code (see the module docstring)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        raise UserError(f"{name} is not a TorchScript file (not a zip archive)") from None
    with archive:
        check_zip(archive, name)
        for info in archive.infolist():
            member = info.filename
            if member.endswith(".py") and "/code/" in f"/{member}":
                text = _read(archive, member, name).decode("utf-8", "replace")
                if "__setstate__" in text:
                    raise refused(
                        name, f"defines __setstate__ ({member}): code that runs while it is loaded"
                    )
                if "torch.classes" in text:
                    raise refused(name, f"uses custom C++ classes (torch.classes, in {member})")
            elif member.endswith(".pkl"):
                for text in _pickled_strings(_read(archive, member, name), name, member):
                    if "torch.classes" in text:
                        raise refused(
                            name, f"holds objects of custom C++ classes ({text}, in {member})"
                        )


def _read(archive: zipfile.ZipFile, member: str, name: str) -> bytes:
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
        raise UserError(f"{name}: its member {member} cannot be read: {exc}") from None


def _pickled_strings(data: bytes, name: str, member: str) -> Iterator[str]:
    """Every string a pickle holds (class names included), read without unpickling it."""
    try:
        for _, argument, _ in pickletools.genops(data):
            if isinstance(argument, str):
                yield argument
    except Exception as exc:  # pickletools raises ValueError and others on a damaged pickle
        raise UserError(f"{name}: its member {member} is not a readable pickle: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Once loaded: the graphs


def check_module(module: torch.jit.ScriptModule, name: str) -> None:
    """Refuse ``module`` unless everything it runs is on the allowlist (module docstring)."""
    own = {_qualified(sub) for sub in module.modules()}
    for path, sub in module.named_modules():
        where = f"{path}." if path else ""
        for method in sub._c._method_names():
            graph = sub._c._get_method(method).inlined_graph
            _check_block(graph, own, name, f"{where}{method}")
        hooks = [*sub._c._get_forward_pre_hooks(), *sub._c._get_forward_hooks()]
        for hook in hooks:
            _check_block(hook.inlined_graph, own, name, f"{where}hook {hook.name}")


def _qualified(module: Any) -> str:
    return str(module._c._type().qualified_name())


def _check_block(block: Any, own: set[str], name: str, where: str) -> None:
    for value in block.inputs():
        _check_type(value.type(), own, name, where)
    for node in block.nodes():
        for value in node.outputs():
            _check_type(value.type(), own, name, where)
        kind = node.kind()
        if not allowed(kind):
            raise refused(name, f"calls {kind} (in {where}), which is not a tensor operation")
        for inner in node.blocks():
            _check_block(inner, own, name, where)


def _check_type(value_type: Any, own: set[str], name: str, where: str) -> None:
    kind = value_type.kind()
    if kind == "ClassType":
        qualified = str(value_type.qualified_name())
        if qualified not in own:
            raise refused(name, f"uses the class {qualified} (in {where}), not one of its modules")
    elif kind == "InterfaceType":
        raise refused(name, f"calls through the interface {value_type.annotation_str} (in {where})")
    for contained in value_type.containedTypes():
        _check_type(contained, own, name, where)
