"""Search for discovery and steering settings that remove refusal on the default model.

Everything is chosen on the training split (discovery) and the validation split (scoring);
the held-out benchmarks are never looked at here. Statistics are computed once and cached.

    python experiments/refusal_search.py --out runs/search --grid selective
"""

from __future__ import annotations

import argparse
import csv
import json
from contextlib import nullcontext
from pathlib import Path

import torch

import neurosteer
from neurosteer.discovery.find import count_to_keep, select_neurons
from neurosteer.discovery.scores import ScoreInputs, Selective, neuron_scores
from neurosteer.evaluation.evaluator import EvalPlan, Evaluator
from neurosteer.model.activations import last_token_stats
from neurosteer.model.architectures import layout
from neurosteer.util.prompts import load_prompts
from neurosteer.util.stats import RunningStats

N_TRAIN = 128


def cached_stats(model, tokenizer, out: Path) -> dict[str, RunningStats]:
    path = out / ("stats.pt" if N_TRAIN == 128 else f"stats_{N_TRAIN}.pt")
    if path.exists():
        raw = torch.load(path)
        stats = {}
        for key, (count, total, total_sq) in raw.items():
            s = RunningStats(1, 1)
            s.count, s.total, s.total_sq = count, total, total_sq
            stats[key] = s
        return stats
    pos = load_prompts("harmful_train", limit=N_TRAIN)
    neg = load_prompts("harmless_train", limit=N_TRAIN)
    sites = ("neurons", "residual")
    pos_stats = last_token_stats(model, tokenizer, pos, sites=sites, progress=True)
    neg_stats = last_token_stats(model, tokenizer, neg, sites=sites, progress=True)
    stats = {f"{site}_{side}": s[site] for side, s in (("pos", pos_stats), ("neg", neg_stats)) for site in sites}
    torch.save({k: (s.count, s.total, s.total_sq) for k, s in stats.items()}, path)
    return stats


def all_position_mean_square(model, tokenizer, out: Path) -> torch.Tensor:
    """``[layers, neurons]`` mean of a**2 over every real token of the harmless training prompts.

    Steering acts at every position, so this is where ablating a neuron does its damage; the
    last-token statistics see only one position per prompt.
    """
    path = out / f"neg_all_positions_{N_TRAIN}.pt"
    if path.exists():
        return torch.load(path)
    from neurosteer.model.activations import forward_base, tokenize_prompts
    from neurosteer.model.encoding import iter_batches, pad_token_id
    from neurosteer.model.hooks import installed_hooks

    lay = layout(model)
    total = torch.zeros(lay.n_layers, lay.neurons_per_layer, dtype=torch.float64)
    count = 0
    mask: dict[str, torch.Tensor] = {}

    def reader(layer: int):
        def hook(_module, args):
            values = args[0].reshape(*mask["m"].shape, -1).double()
            total[layer] += (values.square() * mask["m"][..., None]).sum((0, 1))

        return hook

    ids = tokenize_prompts(tokenizer, load_prompts("harmless_train", limit=N_TRAIN))
    with (
        installed_hooks(pre=[(p, reader(i)) for i, p in enumerate(site.module for site in lay.sites)]),
        torch.inference_mode(),
    ):
        for batch in iter_batches(ids, 16, pad_id=pad_token_id(tokenizer)):
            mask["m"] = batch.attention_mask.double()
            count += int(batch.attention_mask.sum())
            forward_base(model, batch)
    result = total / count
    torch.save(result, path)
    return result


def cached_attribution(model, tokenizer, out: Path, positions: int) -> torch.Tensor:
    """``[layers, neurons]`` causal attribution scores on the training prompts, cached."""
    from neurosteer.discovery.attribution import attribution_scores

    path = out / f"attribution_p{positions}_{N_TRAIN}.pt"
    if path.exists():
        return torch.load(path)
    found = attribution_scores(
        model,
        tokenizer,
        load_prompts("harmful_train", limit=N_TRAIN),
        load_prompts("harmless_train", limit=N_TRAIN),
        positions=positions,
        progress=True,
    )
    torch.save(found.scores, path)
    return found.scores


def out_column_weights(model) -> torch.Tensor:
    """``[layers, hidden, neurons]`` output-projection weights (what each neuron writes)."""
    lay = layout(model)
    return torch.stack([site.module.weight.detach().float() for site in lay.sites])


def score_matrix(
    name: str, stats, weights, direction_layer: int | None = None, lay=None, floor_quantile: float = 0.75
) -> torch.Tensor:
    pos, neg = stats["neurons_pos"], stats["neurons_neg"]
    if name.startswith("attribution"):  # patching toward the harmless mean lowers refusal
        return stats[name].float().clamp(min=0)
    if name == "selective_all":  # the selective score with the damage counted at every position
        inputs = ScoreInputs(pos, neg, stats["residual_pos"], stats["residual_neg"])
        selective = Selective(cost_floor_quantile=floor_quantile)
        return selective.matrix(inputs, lay, negative_mean_square=stats["neg_all_ms"]).float()
    if name in ("mean_diff", "standardized", "selective"):
        inputs = ScoreInputs(pos, neg, stats["residual_pos"], stats["residual_neg"])
        score = Selective(cost_floor_quantile=floor_quantile) if name == "selective" else name
        return neuron_scores(score, inputs, lay).float()
    diff = (pos.mean - neg.mean).float()
    if name == "write_norm":  # difference times the size of what the neuron writes
        return diff * weights.norm(dim=1)
    resid = (stats["residual_pos"].mean - stats["residual_neg"].mean).float()  # [layers, hidden]
    if name == "projection":  # difference times the write's component along that layer's refusal direction
        r = resid / resid.norm(dim=1, keepdim=True)
        if direction_layer is not None:
            r = r[direction_layer].expand_as(r)
        along = torch.einsum("lhn,lh->ln", weights, r)
        return diff * along
    if name == "ratio":  # refusal-direction removed on harmful prompts per unit of change on harmless ones
        r = resid / resid.norm(dim=1, keepdim=True)
        if direction_layer is not None:
            r = r[direction_layer].expand_as(r)
        benefit = pos.mean.float() * torch.einsum("lhn,lh->ln", weights, r)
        cost = neg.mean_square.float() * weights.norm(dim=1).square()
        return benefit.clamp(min=0) / (cost + 1e-2).sqrt()
    raise ValueError(name)


def make_evaluator(model, tokenizer, tokens: int = 24, n_harmless: int = 64):
    """The package's evaluator on the validation split: all 39 harmful_val prompts, the first
    ``n_harmless`` harmless_val prompts (answers and first-token KL), ``tokens`` tokens per answer."""
    plan = EvalPlan(harmful_sets=["harmful_val"], n_harmful=None, n_harmless=n_harmless, max_new_tokens=tokens)
    evaluator = Evaluator(model, tokenizer, plan)

    def evaluate(steering) -> dict:
        result = evaluator.run(steering)
        metrics = result.metrics
        return {
            "refusal_val": round(metrics["refusal_harmful"], 3),
            "harmless_refusal": round(metrics["refusal_harmless"], 3),
            "kl": round(metrics["kl"], 4),
            "quality": round(metrics["quality"], 3),
            "degenerate": round(metrics["degenerate"], 3),
            "seconds": round(metrics["seconds"], 1),
            "sample": result.answers["harmful_val"][:3],
        }

    return evaluate


# Each grid is a list of settings; keys left out take the defaults below.
DEFAULT = {
    "score": "selective",
    "fraction": 0.001,
    "skip": 0,
    "factor": 0.0,
    "last_positions": None,
    "direction_layer": None,
    "floor_quantile": 0.75,
    "max_layer": None,
}
GRIDS: dict[str, list[dict]] = {
    # The published scores and two attribution variants, 0.1 % to 2 %, first two layers skipped.
    "basic": [
        {"score": score, "fraction": frac, "skip": 2}
        for score in ("mean_diff", "standardized", "write_norm", "projection")
        for frac in (0.001, 0.005, 0.02)
    ],
    # benefit / cost ("ratio", now the package's "selective"), own-layer or layer-14 direction.
    "ratio": [
        {"score": "ratio", "fraction": f, "skip": 2, "direction_layer": d}
        for d in (None, 14)
        for f in (0.005, 0.01, 0.02, 0.04)
    ],
    "ratio_small": [{"score": "ratio", "fraction": f, "skip": 2} for f in (0.0005, 0.001, 0.002, 0.003)]
    + [{"score": "ratio", "fraction": f, "skip": 2, "factor": 0.5} for f in (0.005, 0.01)],
    "selective": [{"fraction": f, "skip": skip} for skip in (2, 0) for f in (0.0008, 0.001, 0.0015)],
    "positions": [{"fraction": f, "last_positions": n} for n in (5, 1) for f in (0.002, 0.003, 0.005)],
    "factors": [{"fraction": f, "factor": x} for f, x in ((0.001, -0.5), (0.001, -1.0), (0.0005, -1.0))]
    + [{"fraction": f, "floor_quantile": q} for q in (0.5, 0.9) for f in (0.001, 0.002)],
    # The most promising of "layers" and "factors" first, so a cut-short run still says something.
    "next": [{"fraction": f, "max_layer": 16} for f in (0.002, 0.003)]
    + [{"fraction": 0.001, "factor": x} for x in (-0.5, -1.0)]
    + [{"fraction": 0.002, "floor_quantile": 0.9}, {"fraction": 0.002, "max_layer": 19}],
    "more_prompts": [{"fraction": f} for f in (0.001, 0.0015, 0.002)],
    "all_positions": [{"score": "selective_all", "fraction": f} for f in (0.001, 0.002, 0.003)],
    "layers": [{"fraction": f, "max_layer": m} for m in (19, 16) for f in (0.001, 0.002, 0.003)],
    # Causal attribution (gradient x gap) at the last token and the five post-instruction tokens.
    "attribution": [{"fraction": 0.001}]  # the current default again, to check the rows reproduce
    + [{"score": "attribution_p1", "fraction": f} for f in (0.0005, 0.001, 0.002)]
    + [{"score": "attribution_p5", "fraction": f} for f in (0.001, 0.002)],
    "attribution_small": [{"score": "attribution_p1", "fraction": f} for f in (0.0001, 0.0002, 0.0003)]
    + [{"score": "attribution_p5", "fraction": 0.0005}],
}


def config_name(config: dict) -> str:
    changed = {k: v for k, v in config.items() if DEFAULT.get(k) != v or k in ("score", "fraction")}
    return "|".join(f"{k}={v}" for k, v in changed.items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/search"))
    parser.add_argument("--grid", default="basic", choices=[*GRIDS, "baselines"])
    parser.add_argument("--n-train", type=int, default=128, help="training prompts per side")
    args = parser.parse_args()
    global N_TRAIN
    N_TRAIN = args.n_train
    args.out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = neurosteer.load_model("qwen2.5-0.5b")
    lay = layout(model)
    stats = cached_stats(model, tokenizer, args.out)
    if args.grid == "all_positions":
        stats["neg_all_ms"] = all_position_mean_square(model, tokenizer, args.out)
    if args.grid.startswith("attribution"):
        for positions in (1, 5):
            stats[f"attribution_p{positions}"] = cached_attribution(model, tokenizer, args.out, positions)
    weights = out_column_weights(model)
    evaluate = make_evaluator(model, tokenizer)
    if args.grid == "baselines":
        run_baselines(model, tokenizer, stats, evaluate, args.out)
        return
    results_path = args.out / "results.jsonl"
    done = set()
    if results_path.exists():
        done = {
            (row := json.loads(line))["config"] + f"|n={row.get('n_train', 128)}"
            for line in results_path.read_text().splitlines()
        }
    with results_path.open("a") as handle:
        if "unsteered|n=128" not in done:
            handle.write(json.dumps({"config": "unsteered", **evaluate(nullcontext())}) + "\n")
        for change in GRIDS[args.grid]:
            config = {**DEFAULT, **change}
            name = config_name(config)
            if f"{name}|n={N_TRAIN}" in done:
                continue
            k = count_to_keep(lay.n_neurons, config["fraction"], None)
            matrix = score_matrix(
                config["score"], stats, weights, config["direction_layer"], lay, config["floor_quantile"]
            )
            if config["max_layer"] is not None:
                matrix[config["max_layer"] + 1 :] = 0
            neurons = select_neurons(
                model, stats["neurons_pos"], stats["neurons_neg"], matrix, k, skip_layers=config["skip"]
            )
            steering = neurosteer.steer(
                model, neurons, factor=config["factor"], last_positions=config["last_positions"]
            )
            row = {"config": name, "k": k, "n_train": N_TRAIN, **config, **evaluate(steering)}
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            print({k: v for k, v in row.items() if k != "sample"}, flush=True)


def run_baselines(model, tokenizer, stats, evaluate, out: Path) -> None:
    """Directional ablation and CAA with each candidate layer's direction, on the validation split."""
    from neurosteer.discovery.directions import ResidualDirections
    from neurosteer.interventions.baselines import ablate_direction, add_vector

    pos, neg = stats["residual_pos"], stats["residual_neg"]
    directions = ResidualDirections(diff=(pos.mean - neg.mean).float(), norm=torch.zeros(len(pos.mean)))
    path = out / "baselines.csv"
    with path.open("a", newline="") as handle:
        writer = None
        for method, layer, strength in [("ablation", layer, 1.0) for layer in (10, 12, 14, 16, 18)] + [
            ("caa", layer, 1.0) for layer in (10, 12, 14, 16)
        ]:
            if method == "ablation":
                steering = ablate_direction(model, directions.diff[layer], strength=strength)
            else:
                steering = add_vector(model, directions, layer, coefficient=-strength)
            row = {"method": method, "layer": layer, "strength": strength, **evaluate(steering)}
            row["sample"] = json.dumps(row["sample"])
            if writer is None:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
            print({k: v for k, v in row.items() if k != "sample"}, flush=True)


if __name__ == "__main__":
    main()
