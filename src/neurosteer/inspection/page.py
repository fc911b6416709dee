"""The self-contained HTML page of an inspection: one card per neuron, sortable, no network."""

from __future__ import annotations

import html
import json
from pathlib import Path

from neurosteer.inspection.summary import Inspection, NeuronReport
from neurosteer.util.atomic import atomic_path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; max-width: 1400px; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.5rem; }
.summary { display: flex; gap: 2rem; flex-wrap: wrap; }
.bars div { display: flex; align-items: center; gap: .4rem; font-size: .8rem; }
.bar { background: #4a7bd0; height: .7rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: .8rem; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: .6rem .8rem; font-size: .85rem; }
.card h3 { margin: 0 0 .3rem 0; font-size: 1rem; }
.tokens { display: flex; flex-wrap: wrap; gap: .25rem; margin: .2rem 0; }
.tok { font-family: ui-monospace, monospace; border-radius: 3px; padding: 0 .25rem; white-space: pre; }
.up { background: #d7f0d2; } .down { background: #f6d6d6; }
.fire { font-family: ui-monospace, monospace; white-space: pre-wrap; margin: .15rem 0; }
.meta { color: #555; } .share { font-weight: 600; }
label { margin-right: .5rem; }
"""

_SCRIPT = """
function sortCards(key) {
  const box = document.getElementById('cards');
  const cards = Array.from(box.children);
  const asc = key === 'rank' || key === 'layer';
  cards.sort((a, b) => {
    const x = parseFloat(a.dataset[key]), y = parseFloat(b.dataset[key]);
    const nx = isNaN(x) ? -Infinity : x, ny = isNaN(y) ? -Infinity : y;
    return asc ? nx - ny : ny - nx;
  });
  cards.forEach(c => box.appendChild(c));
}
"""


def _tokens(report: NeuronReport, kind: str, shown: int) -> str:
    items = getattr(report, kind)[:shown]
    css = "up" if kind == "promoted" else "down"
    return "".join(
        f"<span class='tok {css}' title='id {t.token_id}: {t.value:+.3f}'>{html.escape(repr(t.token)[1:-1])}</span>"
        for t in items
    )


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _routing(report: NeuronReport) -> str:
    if not report.routing():
        return ""
    return (
        f"<div class='meta'>its expert is routed on {report.routing()} of the behaviour's / the opposite "
        "prompts' read tokens</div>"
    )


def _card(report: NeuronReport, shown: int) -> str:
    firings = "".join(
        f"<div class='fire'>{f.value:.2f} · prompt {f.prompt}: {html.escape(f.context)}</div>" for f in report.firings
    )
    data = {
        "rank": report.rank,
        "layer": report.layer,
        "score": abs(report.score),
        "refusal": report.refusal_share if report.refusal_share is not None else "nan",
        "kl": report.kl_share if report.kl_share is not None else "nan",
    }
    attributes = " ".join(f"data-{k}='{v}'" for k, v in data.items())
    return f"""<div class='card' {attributes}>
<h3>#{report.rank} · layer {report.layer} · neuron {html.escape(report.place)}</h3>
<div class='meta'>score {report.score:.4g} · mean activation: behaviour {report.mean_positive:.3f},
opposite {report.mean_negative:.3f}</div>{_routing(report)}
<div class='meta'>restored alone: brings back <span class='share'>{_share(report.refusal_share)}</span> of the
removed refusal, removes <span class='share'>{_share(report.kl_share)}</span> of the KL</div>
<div>promotes</div><div class='tokens'>{_tokens(report, "promoted", shown)}</div>
<div>suppresses</div><div class='tokens'>{_tokens(report, "suppressed", shown)}</div>
{f"<div>fires most on</div>{firings}" if firings else ""}
</div>"""


def _bars(rows: list[tuple[str, int]]) -> str:
    peak = max((count for _, count in rows), default=1) or 1
    return "".join(
        f"<div><span style='width:9rem'>{html.escape(label)}</span>"
        f"<span class='bar' style='width:{12 * count / peak:.2f}rem'></span>{count}</div>"
        for label, count in rows
    )


def render(inspection: Inspection, title: str = "neurosteer: neuron inspection", shown: int = 8) -> str:
    """The page as one string (styles and script inline, no external resources)."""
    layers = [(f"layer {layer}", count) for layer, count in sorted(inspection.layer_counts().items())]
    histogram = [(f"{low:.3g} … {high:.3g}", count) for low, high, count in inspection.score_histogram()]
    effects = inspection.effects
    effect_line = ""
    if effects is not None:
        effect_line = (
            f"<p>First-token refusal log-odds on held-out harmful prompts: unsteered {effects.refusal_unsteered:.2f}, "
            f"steered {effects.refusal_steered:.2f}; KL on harmless prompts {effects.kl_steered:.3f}. "
            "Each card says what restoring that neuron alone (the others still steered) does to both.</p>"
        )
    method = html.escape(json.dumps(inspection.neurons.method, sort_keys=True))
    cards = "\n".join(_card(r, shown) for r in inspection.reports)
    return f"""<!doctype html>
<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(inspection.reports)} neurons of a {html.escape(inspection.neurons.model.model_type)} model
({inspection.neurons.model.n_layers} layers × {inspection.neurons.model.neurons_per_layer} neurons).
Method: <code>{method}</code></p>
{effect_line}
<div class='summary'><div><h2>Neurons per layer</h2><div class='bars'>{_bars(layers)}</div></div>
<div><h2>Score distribution</h2><div class='bars'>{_bars(histogram)}</div></div></div>
<h2>Neurons</h2>
<p><label>sort by</label><select onchange='sortCards(this.value)'>
<option value='rank'>rank (|score|)</option><option value='layer'>layer</option>
<option value='refusal'>share of refusal brought back</option><option value='kl'>share of KL removed</option>
</select></p>
<div class='cards' id='cards'>
{cards}
</div>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_page(inspection: Inspection, path: Path, **options: object) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(render(inspection, **options), encoding="utf-8")  # type: ignore[arg-type]
    return Path(path)
