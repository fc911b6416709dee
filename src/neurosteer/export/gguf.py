"""A steered model as a GGUF file for llama.cpp, Ollama and LM Studio.

For a model that came from a GGUF file (the bundled ones, or a ``.gguf`` path), the file is
copied with every tensor byte-identical except the MLP output projections of the layers that
hold steered neurons: those are dequantized, their neuron columns scaled (the same exact edit
as :func:`neurosteer.bake`), and stored as F32 or F16. All metadata (tokenizer, chat template,
hyper-parameters) is copied as it is, plus one ``neurosteer.record`` key saying what was done.
GGUF names are found with gguf's own tensor-name map, from the module names of the model.

A plain Hugging Face model has no GGUF to start from; writing one means converting the whole
tokenizer and every tensor, which is llama.cpp's ``convert_hf_to_gguf.py``'s job: bake the
steering into a checkpoint (``neurosteer bake``) and convert that.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.export import refuse_experts
from neurosteer.interventions.steering import Factor, per_neuron_factors
from neurosteer.model.architectures import layout
from neurosteer.model.bundled import BUNDLED, part_paths
from neurosteer.model.loading import check_gguf_magic
from neurosteer.util.atomic import atomic_path
from neurosteer.util.errors import ModelLoadError, NeurosteerError, OutputError, SettingsError
from neurosteer.util.locking import output_lock
from neurosteer.util.version import __version__

TENSOR_TYPES = ("f32", "f16")


@dataclass(frozen=True)
class GGUFExport:
    path: Path
    changed: int


@contextmanager
def source_gguf(model_name: str) -> Iterator[Path]:
    """The GGUF file the model was loaded from: a bundled model's parts joined, or a ``.gguf`` path."""
    if model_name in BUNDLED:
        from neurosteer.model.bundled import _copy_verified

        with tempfile.TemporaryDirectory(prefix="neurosteer-gguf-") as tmp:
            joined = Path(tmp) / "model.gguf"
            _copy_verified(part_paths(BUNDLED[model_name]), joined, BUNDLED[model_name])
            yield joined
        return
    path = Path(model_name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        check_gguf_magic(path)
        yield path
        return
    raise NeurosteerError(
        f"{model_name}: GGUF export starts from a GGUF model (a bundled one or a .gguf file); for a Hugging "
        "Face model, bake the steering with 'neurosteer bake' and convert the checkpoint with llama.cpp's "
        "convert_hf_to_gguf.py"
    )


def _gguf_names(arch: str, n_layers: int):
    import gguf

    by_name = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise NeurosteerError(f"gguf does not know the architecture '{arch}'; update the gguf package")
    return gguf.get_tensor_name_map(by_name[arch], n_layers)


def _copy_metadata(reader, writer, record: dict) -> None:
    import gguf

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by the writer itself, or not metadata at all
        if field.name == gguf.Keys.General.ALIGNMENT:
            writer.add_custom_alignment(int(field.contents()))
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_string("neurosteer.record", json.dumps(record, sort_keys=True))


def steered_tensors(
    reader, model: nn.Module, neurons: NeuronSet, factor: Factor, tensor_type: str
) -> dict[str, np.ndarray]:
    """GGUF name -> the new contents of each changed output projection (numpy order ``[out, in]``)."""
    import gguf

    lay = layout(model)
    NeuronSet.require(neurons).check_compatible(model, lay)
    refuse_experts(lay, "a GGUF file")
    if lay.attention_width:
        raise NeurosteerError(
            "a GGUF file of a model with attention units is not supported yet (the file's MLP weights are the "
            "only ones it edits); bake the steering into a checkpoint with 'neurosteer bake' instead"
        )
    factors = per_neuron_factors(neurons, factor).numpy()
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    names = _gguf_names(arch, lay.n_layers)
    tensors = {t.name: t for t in reader.tensors}
    dtype = np.float32 if tensor_type == "f32" else np.float16
    changed = {}
    for layer in torch.unique(neurons.layers).tolist():
        hf_name = lay.layer_sites(int(layer))[0].parameter_name(model)
        name = names.get_name(hf_name + ".weight", try_suffixes=(".weight",))
        if name is None or name not in tensors:
            raise NeurosteerError(f"no GGUF tensor for {hf_name} in this file (looked for {name!r})")
        source = tensors[name]
        weight = gguf.quants.dequantize(source.data, source.tensor_type).astype(np.float32)
        if weight.shape != (lay.hidden_size, lay.neurons_per_layer):
            raise NeurosteerError(
                f"{name} has shape {weight.shape}, expected ({lay.hidden_size}, {lay.neurons_per_layer}): "
                "is this the GGUF the model was loaded from?"
            )
        picked = (neurons.layers == layer).numpy()
        weight[:, neurons.indices[picked].numpy()] *= factors[picked]
        stored = weight.astype(dtype)
        if not np.isfinite(stored).all():
            raise SettingsError(
                f"the steered {name} overflows {tensor_type} (up to {float(np.abs(weight).max()):.3g}); use a smaller "
                "--factor or --gguf-type f32"
            )
        changed[name] = stored
    return changed


def export_gguf(
    model: nn.Module,
    model_name: str,
    neurons: NeuronSet,
    factor: Factor,
    out: Path,
    *,
    tensor_type: str = "f32",
    overwrite: bool = False,
) -> GGUFExport:
    """Write ``out``: the source GGUF with the steered output projections replaced."""
    import gguf

    if tensor_type not in TENSOR_TYPES:
        raise SettingsError(f"unknown tensor type '{tensor_type}'; choose f32 or f16")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; choose another path or pass --force")
    raw_type = gguf.GGMLQuantizationType.F32 if tensor_type == "f32" else gguf.GGMLQuantizationType.F16
    record = {"neurosteer_version": __version__, "neurons_fingerprint": neurons.fingerprint()}
    record["factor"] = factor if isinstance(factor, int | float) else None
    record["changed_tensor_type"] = tensor_type
    with source_gguf(model_name) as source:
        try:
            reader = gguf.GGUFReader(source)
        except (ValueError, OSError, IndexError) as exc:
            raise ModelLoadError(f"{source}: cannot read it as GGUF ({exc})") from None
        changed = steered_tensors(reader, model, neurons, factor, tensor_type)
        arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
        with output_lock(out), atomic_path(out) as tmp:
            writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
            _copy_metadata(reader, writer, record)
            for tensor in reader.tensors:
                data = changed.get(tensor.name, tensor.data)
                kind = raw_type if tensor.name in changed else tensor.tensor_type
                writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, kind)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for tensor in reader.tensors:
                writer.write_tensor_data(changed.get(tensor.name, tensor.data), tensor_endianess=reader.endianess)
            writer.close()
    return GGUFExport(out, len(changed))
