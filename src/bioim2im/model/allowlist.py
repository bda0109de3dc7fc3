"""What a TorchScript graph from elsewhere may do before bioim2im runs it: tensor operations.

TorchScript is a program. Besides tensor operations it can read, write and create files
(``torch.from_file(path, shared=True)``, ``torch.save``), print, reseed the random generators,
create objects of classes it brings, and run code while it is being *loaded*: ``torch.jit.load``
calls the ``__setstate__`` of the modules and objects it unpickles, and custom C++ classes
(``torch.classes``) run theirs. So a graph bioim2im did not just make is checked twice:

1. :func:`check_archive`, before loading: the archive's code and pickles are read as data
   (never executed) and refused when they define ``__setstate__`` or name ``torch.classes``;
   the archive is bounded like a package (:mod:`bioim2im.model.archives`).
2. :func:`check_module`, once loaded and before it runs: every method and hook of every
   submodule, with what it calls inlined, may hold only the operations of :data:`PRIM`
   (constants, lists, tuples, control flow, reading its own attributes) and of the ``aten``
   namespace (torch's tensor operations) except :data:`ATEN_REFUSED`; no other namespace, no
   calls left uninlined, and no class but its own modules.

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
from bioim2im.model.archives import check_zip

ATEN_REFUSED = frozenset(
    {
        "aten::from_file",  # maps a file into a tensor: reads, writes and creates files
        "aten::save",  # writes a file
        "aten::_print",
        "aten::warn",
        "aten::manual_seed",
        "aten::seed",
        "aten::set_grad_enabled",
        "aten::wait",
        "aten::record_stream",
        "aten::_cufft_clear_plan_cache",
        "aten::_cufft_set_plan_cache_max_size",
    }
)
"""Operations of the aten namespace that are not tensor operations: files, printing, global
switches, other threads. (``aten::_test_*`` too.)"""
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
    if kind.startswith("aten::"):
        return kind not in ATEN_REFUSED and not kind.startswith("aten::_test_")
    return kind in PRIM


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
