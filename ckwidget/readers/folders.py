"""Checkpoint folders: Hugging Face, torch.distributed.checkpoint, DeepSpeed, TensorFlow.

A folder is recognised by the files it holds. Hugging Face folders become one merged
Checkpoint (every shard opened with the ordinary file readers); DCP folders are read from
their ``.metadata`` pickle through the symbolic pickle machine, never ``pickle.load``;
DeepSpeed and TensorFlow folders are named and explained.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..checkpoint import DTYPE_SIZES, Checkpoint, Finding, TensorInfo, sort_findings
from ..errors import BudgetExceededError, CheckpointError, NotACheckpointError
from .budgets import Budgets
from .filestamp import FileStamp, open_for_read, read_all, require_regular
from .tree import flatten, plain_facts

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Single-file weights a Hugging Face style folder may hold, best first.
WEIGHT_FILES = (
    "model.safetensors", "pytorch_model.bin", "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin",
    "consolidated.safetensors", "model.pt", "model.pth", "model.ckpt",
)
INDEX_FILES = (
    "model.safetensors.index.json", "pytorch_model.bin.index.json",
    "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz")
CONFIG_KEYS = (
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
    "tie_word_embeddings", "n_embd", "n_layer", "n_head", "d_model", "num_labels",
    "_name_or_path", "_class_name", "_diffusers_version", "quantization_config",
)
_STEP_DIR = re.compile(r"^global_step\d+$")


def read_folder(path: Path, budgets: Budgets) -> Checkpoint:
    """Recognise a checkpoint folder by its files and describe it."""
    names = _list(path, budgets)
    present = set(names)
    if ".metadata" in present:
        return read_dcp(path, names, budgets)
    if "latest" in present or any(_STEP_DIR.match(n) for n in names) or any(
        n.endswith("_model_states.pt") for n in names
    ):
        ds = _deepspeed(path, names, budgets)
        if ds is not None:
            return ds
    index = next((n for n in INDEX_FILES if n in present), None)
    if index is None:
        index = next((n for n in names
                      if n.endswith((".safetensors.index.json", ".bin.index.json"))), None)
    if index is not None:
        ckpt = _sharded(path, path / index, budgets)
    else:
        single = next((n for n in WEIGHT_FILES if n in present), None)
        if single is None:
            weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES)
                       and (path / n).is_file()]
            single = weights[0] if len(weights) == 1 else None
        if single is None:
            return _other_folder(path, names)
        from . import open_checkpoint

        ckpt = open_checkpoint(path / single, budgets=budgets)
        ckpt.metadata["folder"] = str(path)
    _add_configs(path, present, ckpt, budgets)
    return ckpt


def _list(path: Path, budgets: Budgets) -> list[str]:
    names: list[str] = []
    with os.scandir(path) as it:
        for entry in it:
            names.append(entry.name)
            if len(names) > budgets.max_files:
                raise BudgetExceededError(
                    f"{path.name} holds more than {budgets.max_files:,} entries; open the "
                    f"weights file or the checkpoint folder inside it directly."
                )
    return sorted(names)


def _read_json(file: Path, budgets: Budgets) -> Any:
    """A small JSON file, or raise ValueError with the reason."""
    try:
        size = require_regular(file).st_size
    except NotACheckpointError as exc:
        raise ValueError(str(exc)) from None
    if size > budgets.max_json:
        raise ValueError(f"it is {size:,} bytes, over the {budgets.max_json:,}-byte limit")
    try:
        return json.loads(read_all(file).decode("utf-8"))  # (a remote cache file fetches)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)[:200]) from None


def _add_configs(path: Path, present: set[str], ckpt: Checkpoint, budgets: Budgets) -> None:
    for name, key in (("config.json", "config"), ("adapter_config.json", "adapter_config")):
        if name not in present:
            continue
        try:
            config = _read_json(path / name, budgets)
        except (ValueError, OSError) as exc:
            ckpt.findings.append(Finding(
                "corrupt", "warning",
                f"{name} next to the weights cannot be read ({str(exc)[:200]}); fix or "
                f"re-download it, since from_pretrained needs it.",
            ))
            continue
        if not isinstance(config, Mapping):
            continue
        if key == "config":
            facts = {k: plain_facts(config[k]) for k in CONFIG_KEYS if k in config}
            for k, v in config.items():  # other scalar facts (sizes, ids) are cheap to keep
                if k not in facts and len(facts) < 200 and isinstance(v, (int, float, bool)):
                    facts[str(k)] = v
        else:
            facts = plain_facts(config)
            base = config.get("base_model_name_or_path")
            ckpt.findings.append(Finding(
                "foreign-format", "info",
                f"This folder is a {config.get('peft_type', 'PEFT')} adapter"
                f"{f' for {base!r}' if base else ''}: its tensors are only the adapter "
                f"weights. Load the base model, then peft.PeftModel.from_pretrained(model, "
                f"{str(path)!r}).",
            ))
        ckpt.metadata[key] = facts
    ckpt.findings[:] = sort_findings(ckpt.findings)


# -- Hugging Face sharded checkpoints ----------------------------------------------------
def _sharded(path: Path, index_file: Path, budgets: Budgets) -> Checkpoint:
    from . import open_checkpoint

    findings: list[Finding] = []
    metadata: dict[str, Any] = {"index": index_file.name}
    try:
        index = _read_json(index_file, budgets)
    except (ValueError, OSError) as exc:
        index = None
        reason = str(exc)[:200]
    else:
        reason = "it has no weight_map object"
    weight_map = index.get("weight_map") if isinstance(index, Mapping) else None
    if not isinstance(weight_map, Mapping):
        findings.append(Finding(
            "corrupt", "error",
            f"{index_file.name} cannot be used ({reason}); re-download it, or open the "
            f"shard files one by one.",
        ))
        return Checkpoint(path, "hf-sharded", metadata=metadata, findings=findings)
    if isinstance(index.get("metadata"), Mapping):
        metadata["index_metadata"] = plain_facts(index["metadata"])
    by_shard: dict[str, list[str]] = {}
    bad_names: list[str] = []
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not _inside(shard):
            bad_names.append(str(key))
            continue
        by_shard.setdefault(shard, []).append(str(key))
    if bad_names:
        findings.append(Finding(
            "corrupt", "error",
            f"{index_file.name} maps {len(bad_names)} tensor(s) to shard names that are not "
            f"files inside the folder (e.g. {bad_names[0]!r}); they are ignored. Re-download "
            f"the index.",
            bad_names[:1000],
        ))
    tensors: dict[str, TensorInfo] = {}
    owner: dict[str, tuple[Checkpoint, str]] = {}  # key -> (shard checkpoint, its key)
    missing_files: list[str] = []
    absent: list[str] = []
    unlisted: list[str] = []
    total = 0
    for shard, keys in by_shard.items():
        file = path / shard
        if not file.exists() or file.is_dir():  # a pipe or device: open_checkpoint says so
            missing_files.append(shard)
            absent.extend(keys)
            continue
        try:
            part = open_checkpoint(file, budgets=budgets)
        except CheckpointError as exc:
            findings.append(Finding(
                "corrupt", "error",
                f"Shard {shard} cannot be read: {exc} Re-download it.", keys[:1000],
            ))
            continue
        total += part.size
        for f in part.findings:
            findings.append(Finding(
                f.kind, f.severity, f"Shard {shard}: {f.message}", f.keys, f.fixes, f.details
            ))
        members = part.members(part.default_candidate())
        listed = set(keys)
        for key in keys:
            if key in members:
                tensors[key] = part.tensors[members[key]]
                owner[key] = (part, key)
            else:
                absent.append(key)
        for key, full in members.items():
            if key not in listed and key not in owner:
                unlisted.append(key)
                tensors[key] = part.tensors[full]
                owner[key] = (part, key)
    metadata.update(shards=list(by_shard), shard_bytes=total)
    if missing_files:
        findings.append(Finding(
            "corrupt", "error",
            f"{len(missing_files)} of {len(by_shard)} shard file(s) named by "
            f"{index_file.name} are missing ({', '.join(missing_files[:3])}): download them "
            f"(huggingface_hub.snapshot_download fetches every shard), or the model will "
            f"lack {len(absent)} tensor(s).",
            absent[:1000],
        ))
    elif absent:
        findings.append(Finding(
            "corrupt", "error",
            f"{len(absent)} tensor(s) listed in {index_file.name} are not in their shard "
            f"(e.g. {absent[0]!r}); the index and the shards come from different saves. "
            f"Re-download the folder.",
            absent[:1000],
        ))
    if unlisted:
        findings.append(Finding(
            "corrupt", "warning",
            f"{len(unlisted)} tensor(s) in the shards are not listed in {index_file.name} "
            f"(e.g. {unlisted[0]!r}); from_pretrained still loads them from the shard files.",
            unlisted[:1000],
        ))
    findings.append(Finding(
        "sharded", "info",
        f"This is a sharded Hugging Face checkpoint: {len(by_shard)} shard(s) listed in "
        f"{index_file.name}. Load it with transformers' from_pretrained({str(path)!r}), or "
        f"into a plain model with transformers.modeling_utils.load_sharded_checkpoint(model, "
        f"folder); by hand, merge safetensors.torch.load_file (or torch.load(..., "
        f"weights_only=True)) of each shard into one dict.",
    ))

    def loader(keys: list[str], map_location: Any) -> dict[str, torch.Tensor]:
        groups: dict[int, tuple[Checkpoint, list[str]]] = {}
        for key in keys:
            part, inner = owner[key]
            groups.setdefault(id(part), (part, []))[1].append(inner)
        out: dict[str, torch.Tensor] = {}
        for part, inner in groups.values():
            out.update(part.state_dict(part.default_candidate(), map_location, inner))
        return out

    return Checkpoint(
        path, "hf-sharded", tensors, [""] if tensors else [], metadata, findings,
        size=total, loader=loader,
    )


def _inside(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and not p.is_absolute() and ".." not in p.parts and ":" not in name


# -- torch.distributed.checkpoint --------------------------------------------------------
_DCP_EXPECTED = ("torch.", "pathlib.", "collections.")


def read_dcp(path: Path, names: list[str], budgets: Budgets) -> Checkpoint:
    """A torch.distributed.checkpoint folder, from its ``.metadata`` pickle (run symbolically)."""
    from .pickle_vm import Call, Global, run_pickle
    from .safety import is_malicious

    meta_file = path / ".metadata"
    # the files as indexed: each read checks its own and .metadata's (a new save)
    stamps: dict[str, FileStamp] = {".metadata": FileStamp.of(meta_file)}
    size = stamps[".metadata"].size
    findings: list[Finding] = []
    metadata: dict[str, Any] = {"distcp_files": [n for n in names if n.endswith(".distcp")][:1000]}
    if size > budgets.max_pickle_bytes:
        raise BudgetExceededError(
            f"{path.name}/.metadata is {size:,} bytes, over the "
            f"{budgets.max_pickle_bytes:,}-byte budget for one pickle."
        )
    result = run_pickle(read_all(meta_file), budgets)
    bad = sorted(g for g in result.globals if is_malicious(g))
    odd = sorted(g for g in result.globals if not g.startswith(_DCP_EXPECTED) and g not in bad)
    if bad:
        findings.append(Finding(
            "malicious", "error",
            f"{path.name}/.metadata names {', '.join(bad[:5])}, which can run code on your "
            f"machine. torch.distributed.checkpoint.load reads .metadata with pickle.load "
            f"and would run it: do not load this folder. ckwidget read it without running "
            f"anything.",
            details={"globals": bad[:100]},
        ))
    if odd:
        findings.append(Finding(
            "unsafe-globals", "warning",
            f"{path.name}/.metadata names {', '.join(odd[:5])}, which DCP metadata does not "
            f"normally need; torch.distributed.checkpoint.load would import them with "
            f"pickle.load. Load this folder only if you trust its source.",
            details={"globals": odd[:100]},
        ))
    root = result.root
    state = root.state if isinstance(root, Call) else None
    sdm = state.get("state_dict_metadata") if isinstance(state, dict) else None
    if not isinstance(sdm, dict):
        why = result.error or "it does not hold DCP Metadata"
        findings.append(Finding(
            "corrupt", "error",
            f"{path.name}/.metadata cannot be read as torch.distributed.checkpoint metadata "
            f"({why}); the folder is damaged or incomplete. Copy it again from where it "
            f"was saved.",
        ))
        return Checkpoint(path, "dcp", metadata=metadata, findings=findings, size=size)
    if result.error:
        findings.append(Finding(
            "truncated", "error",
            f"{path.name}/.metadata ends early ({result.error}); what was read is listed. "
            f"Copy the folder again.",
        ))
    if isinstance(state.get("version"), str):
        metadata["dcp_version"] = state["version"]
    storage = _dcp_storage(state.get("storage_data"), Call)
    planner = state.get("planner_data")
    tree: dict[Any, Any] = {}
    skipped: list[str] = []
    bytes_items: list[str] = []
    missing: list[str] = []
    total = size
    for fqn, item in sdm.items():
        fqn = str(fqn)
        if isinstance(item, Call) and item.name.endswith("BytesStorageMetadata"):
            bytes_items.append(fqn)
            continue
        info = _dcp_tensor(item, Call, Global)
        if info is None:
            skipped.append(fqn)
            continue
        shape, dtype, chunks = info
        numel = 1
        for s in shape:
            numel *= s
        pieces = []
        for offsets, sizes in chunks:
            where = storage.get((fqn, offsets))
            if where is None or not (path / where[0]).is_file():
                pieces = None
                missing.append(fqn)
                break
            pieces.append((offsets, sizes, *where))
        source = DcpSource(path, shape, dtype, pieces, stamps) if pieces else None
        tensor = TensorInfo(shape, dtype, "cpu", numel * DTYPE_SIZES.get(dtype, 0),
                            "strided", source)
        _place(tree, _fqn_path(fqn, planner), tensor)
    flat = flatten(tree, max_visits=budgets.max_visits, max_depth=budgets.max_depth)
    for name in metadata["distcp_files"]:
        try:
            stamps[name] = FileStamp.of(path / name)
            total += stamps[name].size
        except OSError:
            pass
    if bytes_items:
        metadata["non_tensor_keys"] = bytes_items[:1000]
    if skipped:
        findings.append(Finding(
            "corrupt", "warning",
            f"{len(skipped)} entries of {path.name}/.metadata have no readable tensor "
            f"description (e.g. {skipped[0]!r}); they are left out.",
            skipped[:1000],
        ))
    if missing:
        findings.append(Finding(
            "corrupt", "error",
            f"The data of {len(missing)} tensor(s) is not in this folder (e.g. "
            f"{missing[0]!r}): a .distcp file is missing. Copy every __*_*.distcp file "
            f"written by every rank.",
            missing[:1000],
        ))
    findings.append(Finding(
        "foreign-format", "warning",
        f"{path.name} is a torch.distributed.checkpoint (DCP) folder "
        f"({len(metadata['distcp_files'])} .distcp file(s)): torch.load cannot read it. "
        f"Convert it once with torch.distributed.checkpoint.format_utils."
        f"dcp_to_torch_save({str(path)!r}, 'model.pt'), or load it in place with "
        f"torch.distributed.checkpoint.load(model.state_dict(), checkpoint_id={str(path)!r}).",
    ))
    return Checkpoint(
        path, "dcp", flat.tensors, flat.candidates, metadata, findings, size=total,
        members=flat.members,
    )


def _fqn_path(fqn: str, planner: Any) -> tuple[Any, ...]:
    if isinstance(planner, dict):
        parts = planner.get(fqn)
        if isinstance(parts, tuple) and parts and all(isinstance(p, (str, int)) for p in parts):
            return parts
    return (fqn,)


def _place(tree: dict[Any, Any], parts: tuple[Any, ...], value: TensorInfo) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _size_of(value: Any, call_type: type) -> tuple[int, ...] | None:
    """torch.Size((3, 4)) recorded as a call -> (3, 4)."""
    if isinstance(value, call_type) and value.name == "torch.Size":
        value = value.args[0] if isinstance(value.args, tuple) and value.args else None
    if isinstance(value, (tuple, list)) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value
    ):
        return tuple(value)
    return None


def _dcp_tensor(item: Any, call_type: type, global_type: type) -> Any:
    state = item.state if isinstance(item, call_type) else None
    if not isinstance(state, dict):
        return None
    shape = _size_of(state.get("size"), call_type)
    props = state.get("properties")
    pstate = props.state if isinstance(props, call_type) else None
    dtype_g = None
    if isinstance(pstate, tuple) and pstate:
        dtype_g = pstate[0]
    elif isinstance(pstate, dict):
        dtype_g = pstate.get("dtype")
    if shape is None or not (isinstance(dtype_g, global_type) and dtype_g.module == "torch"):
        return None
    chunks = []
    for chunk in state.get("chunks") or []:
        cstate = chunk.state if isinstance(chunk, call_type) else None
        if not isinstance(cstate, dict):
            return None
        offsets = _size_of(cstate.get("offsets"), call_type)
        sizes = _size_of(cstate.get("sizes"), call_type)
        if offsets is None or sizes is None:
            return None
        chunks.append((offsets, sizes))
    return shape, dtype_g.name, chunks


def _dcp_storage(storage: Any, call_type: type) -> dict[tuple[str, Any], tuple[str, int, int]]:
    """(fqn, chunk offsets) -> (relative file, byte offset, byte length)."""
    out: dict[tuple[str, Any], tuple[str, int, int]] = {}
    if not isinstance(storage, dict):
        return out
    for key, value in storage.items():
        key = getattr(key, "value", key)  # OpaqueKey wraps unhashable keys
        kstate = key.state if isinstance(key, call_type) else None
        vstate = value.state if isinstance(value, call_type) else None
        if not (isinstance(kstate, dict) and isinstance(vstate, dict)):
            continue
        rel, off, length = (vstate.get("relative_path"), vstate.get("offset"),
                            vstate.get("length"))
        if vstate.get("transform_descriptors"):
            continue  # compressed or transformed chunks: ckwidget does not decode them
        if not (isinstance(rel, str) and _inside(rel) and isinstance(off, int)
                and isinstance(length, int) and off >= 0 and length >= 0):
            continue
        offsets = _size_of(kstate.get("offset"), call_type)
        out[(str(kstate.get("fqn")), offsets)] = (rel, off, length)
    return out


class DcpSource:
    """Reads a DCP tensor the way torch's FileSystemReader does: each chunk is a
    torch.save blob, opened with weights_only=True, then copied into place."""

    __slots__ = ("dtype", "folder", "pieces", "shape", "stamps")

    def __init__(self, folder: Path, shape: tuple[int, ...], dtype: str,
                 pieces: list[tuple[Any, ...]], stamps: Mapping[str, FileStamp]) -> None:
        self.folder = folder
        self.shape = shape
        self.dtype = dtype
        self.pieces = pieces
        self.stamps = stamps  # of .metadata and the .distcp files, as indexed

    def load(self) -> torch.Tensor:
        import torch

        for rel in (".metadata", *dict.fromkeys(piece[2] for piece in self.pieces)):
            stamp = self.stamps.get(rel)
            if stamp is not None:
                stamp.verify()
        out = torch.empty(self.shape, dtype=getattr(torch, self.dtype))
        for offsets, sizes, rel, off, length in self.pieces:
            with open_for_read(self.folder / rel) as fh:
                fh.seek(off)
                blob = fh.read(length)
            if len(blob) != length:
                raise CheckpointError(f"{rel} is cut short; copy the DCP folder again.")
            try:
                chunk = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises many exception types here
                raise CheckpointError(
                    f"A chunk of {rel} cannot be read ({type(exc).__name__}: "
                    f"{str(exc)[:200]})."
                ) from None
            if not isinstance(chunk, torch.Tensor) or tuple(chunk.shape) != tuple(sizes):
                raise CheckpointError(f"A chunk in {rel} does not match .metadata.")
            view = out
            for dim, (start, length_d) in enumerate(zip(offsets, sizes)):
                view = view.narrow(dim, start, length_d)
            view.copy_(chunk)
        return out


# -- DeepSpeed ---------------------------------------------------------------------------
def _deepspeed(path: Path, names: list[str], budgets: Budgets) -> Checkpoint | None:
    tag = None
    if "latest" in names and (path / "latest").is_file():
        with open_for_read(path / "latest") as fh:  # a tag name: a few bytes
            raw = fh.read(256)
        tag = raw.decode("utf-8", "replace").strip() or None
    steps = [n for n in names if _STEP_DIR.match(n) and (path / n).is_dir()]
    if tag and (path / tag).is_dir() and _inside(tag):
        step_dir = path / tag
    elif steps:
        step_dir = path / max(steps, key=lambda s: int(s[len("global_step"):]))
    else:
        step_dir = path
    files = sorted(p.name for p in step_dir.glob("*.pt"))[: budgets.max_files]
    model_states = [f for f in files if f.endswith("_model_states.pt")]
    optim_states = [f for f in files if f.endswith("_optim_states.pt")]
    if not model_states and not optim_states:
        return None
    zero3 = any(f.startswith("zero_pp_rank_") for f in model_states)
    metadata: dict[str, Any] = {
        "deepspeed_tag": tag or step_dir.name, "model_states": model_states[:100],
        "optim_states": optim_states[:100], "zero_ranks": len(optim_states),
        "zero_stage_hint": "3" if zero3 else ("1 or 2" if optim_states else "none"),
    }
    findings: list[Finding] = []
    tensors: dict[str, TensorInfo] = {}
    members: dict[str, dict[str, str]] = {}
    candidates: list[str] = []
    loader = None
    first = step_dir / model_states[0] if model_states else None
    if first is not None:
        from . import open_checkpoint

        try:
            part = open_checkpoint(first, budgets=budgets)
        except CheckpointError as exc:
            findings.append(Finding(
                "corrupt", "error", f"{first.name} cannot be read: {exc}",
            ))
        else:
            tensors, candidates = part.tensors, part.candidates
            members = {c: part.members(c) for c in candidates}
            loader = part._load  # the shard's own reader materialises its tensors
            findings.extend(part.findings)
            metadata["model_states_file"] = first.name
    script = " (the zero_to_fp32.py script saved in this folder does the same)" if (
        "zero_to_fp32.py" in names
    ) else ""
    partitioned = (
        " Under ZeRO-3 the model-states file holds empty partitions (torch.Size([0])), not "
        "the weights." if zero3 else ""
    )
    findings.append(Finding(
        "sharded", "error" if zero3 else "warning",
        f"{path.name} is a DeepSpeed checkpoint (tag {metadata['deepspeed_tag']!r}, ZeRO "
        f"stage {metadata['zero_stage_hint']}, {len(optim_states)} optimizer partition(s))."
        f"{partitioned} Consolidate the full fp32 weights with deepspeed.utils.zero_to_fp32."
        f"get_fp32_state_dict_from_zero_checkpoint({str(path)!r}) or "
        f"convert_zero_checkpoint_to_fp32_state_dict(folder, output){script}, then load that.",
    ))
    return Checkpoint(
        path, "deepspeed", tensors, candidates, metadata, findings, members=members,
        loader=loader,
    )


# -- everything else ---------------------------------------------------------------------
def _other_folder(path: Path, names: list[str]) -> Checkpoint:
    present = set(names)
    if "saved_model.pb" in present or "saved_model.pbtxt" in present:
        return _foreign_folder(path, "tensorflow-savedmodel", (
            "is a TensorFlow SavedModel, not a PyTorch checkpoint. Read its variables with "
            "tf.train.load_checkpoint(folder + '/variables/variables') and map them to the "
            "model's keys by hand (Dense kernels are [in, out]: transpose them), or export "
            "it to ONNX (tf2onnx) and convert with onnx2torch."
        ), names)
    if "checkpoint" in present and any(n.endswith(".index") for n in names):
        prefix = next(n for n in names if n.endswith(".index"))[: -len(".index")]
        return _foreign_folder(path, "tensorflow-checkpoint", (
            f"is a TensorFlow checkpoint folder (prefix {prefix!r}), not a PyTorch one. Read "
            f"it with tf.train.load_checkpoint and map variables by hand, or for Hugging "
            f"Face models use from_pretrained(..., from_tf=True)."
        ), names)
    if "tf_model.h5" in present:
        return _foreign_folder(path, "keras-h5", (
            "holds only TensorFlow weights (tf_model.h5): load them into the PyTorch model "
            "with transformers' from_pretrained(folder, from_tf=True), then save_pretrained."
        ), names)
    if "flax_model.msgpack" in present:
        return _foreign_folder(path, "flax", (
            "holds only Flax weights (flax_model.msgpack): load them into the PyTorch model "
            "with transformers' from_pretrained(folder, from_flax=True)."
        ), names)
    nested = []
    for name in names[:200]:
        sub = path / name
        if sub.is_dir():
            try:
                inner = sorted(os.listdir(sub))[:200]
            except OSError:
                continue
            hits = [i for i in inner if i.endswith(WEIGHT_SUFFIXES) or i.endswith(".index.json")
                    or i == ".metadata"]
            if hits:
                nested.append(f"{name}/{hits[0]}")
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    hint = ""
    if "model_index.json" in present:
        hint = " It is a diffusers pipeline: open one component folder (e.g. unet/)."
    if nested:
        hint += f" Weights are in sub-folders: open {', '.join(nested[:3])}."
    raise NotACheckpointError(
        f"{path.name} is a folder with no checkpoint ckwidget recognises "
        f"(it holds {shown or 'nothing'}).{hint} Pass the weights file or a Hugging Face, "
        f"torch.distributed.checkpoint or DeepSpeed checkpoint folder."
    )


def _foreign_folder(path: Path, fmt: str, message: str, names: list[str]) -> Checkpoint:
    return Checkpoint(
        path, fmt, metadata={"files": names[:50]},
        findings=[Finding("foreign-format", "error", f"{path.name} {message}")],
    )
