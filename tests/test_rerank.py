"""Re-ranking by measured effect for any behaviour: each candidate steered alone, the behaviour's own
metric read on its validation prompts, checked against steering each candidate directly."""

from __future__ import annotations

import pytest
import torch

import neurosteer
from neurosteer.discovery.attribution import FIRST_TOKEN_REFUSAL
from neurosteer.discovery.neuronset import NeuronSet
from neurosteer.evaluation.behaviours.ab import ABBehaviour, ABQuestion, letter_difference
from neurosteer.evaluation.behaviours.prompted import REFUSAL
from neurosteer.inspection.effects import rerank_by_effect, single_neuron_effects
from neurosteer.metrics.kl import first_token_logprobs
from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import load_prompts

from clitools import assert_one_line_error, invoke
from conftest import NEGATIVE
from tiny import tiny_model, tiny_tokenizer

TRAIN = [ABQuestion(f"Is {i} larger than {i + 1}?\n (A) yes\n (B) no", *("AB" if i % 2 else "BA")) for i in range(12)]
TEST = [ABQuestion(f"Is {i} smaller than {i - 1}?\n (A) yes\n (B) no", *("AB" if i % 2 else "BA")) for i in (7, 8, 9)]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_ab_effects_and_rerank_read_the_letter_difference_on_validation_questions(family):
    model, tok = tiny_model(family), tiny_tokenizer()
    behaviour = ABBehaviour("t", "", TRAIN, eval_items=TEST)
    target = behaviour.validation_target()
    validation = behaviour.split().validation
    assert [p.user for p in target.prompts] == [q.question for q in validation] and len(validation) == 2
    assert {q.question for q in validation} <= {q.question for q in TRAIN} - {q.question for q in TEST}
    assert {p.answer for p in target.prompts} == {"("}
    candidates = neurosteer.find_neurons(model, tok, *behaviour.training_pair(), top_k=4, score="selective")
    effects = single_neuron_effects(
        model, tok, candidates, target.prompts, NEGATIVE, metric=target.metric_for(tok), rows_per_pass=5
    )

    def difference() -> float:
        logprobs = first_token_logprobs(model, tok, list(target.prompts))
        return float(letter_difference(logprobs, validation, tok).mean())

    assert effects.metric_unsteered == pytest.approx(difference(), abs=1e-4)
    for i in range(4):
        factors = torch.ones(4)
        factors[i] = 0.0
        with neurosteer.steer(model, candidates, factor=factors):
            assert effects.metric_alone[i] == pytest.approx(difference(), abs=1e-4)
    assert len({round(v, 5) for v in effects.metric_alone}) > 1  # the candidates differ, so the order means something
    kept = rerank_by_effect(model, tok, candidates, target, NEGATIVE, 2, rows_per_pass=5)
    best = sorted(range(4), key=lambda i: -effects.drop(i))[:2]
    assert kept.indices.tolist() == [int(candidates.indices[i]) for i in best]
    assert kept.layers.tolist() == [int(candidates.layers[i]) for i in best]
    # every recorded array follows its neuron, the spread clamping reads included
    assert candidates.spread_negative is not None
    assert torch.equal(kept.spread_negative, candidates.spread_negative[best])
    assert torch.equal(kept.mean_negative, candidates.mean_negative[best])


def test_validation_targets_read_validation_data_only():
    target = REFUSAL.validation_target(3)
    assert list(target.prompts) == load_prompts("harmful_val", limit=3)
    assert not set(target.prompts) & set(load_prompts("harmful_train"))
    model, tok = tiny_model("llama"), tiny_tokenizer()
    candidates = neurosteer.find_neurons(model, tok, ["a b c", "d e"], NEGATIVE[:2], top_k=3, score="selective")
    with pytest.raises(SettingsError, match="validation prompts"):
        rerank_by_effect(model, tok, candidates, FIRST_TOKEN_REFUSAL, NEGATIVE, 2)


def test_cli_discover_reranks_a_behaviours_candidates(cli_workspace, tmp_path):
    out = tmp_path / "r.safetensors"
    args = ["discover", "-m", cli_workspace / "llama", "--top-k", "2", "--no-progress", "--out", out]
    env = {"NEUROSTEER_BATCH_SIZE": "4"}
    result = invoke(*args, "-b", "refusal", "--n-train", "4", "--rerank-from", "5", "--n-rerank", "3", env=env)
    assert result.exit_code == 0, result.output
    neurons = NeuronSet.load(out)
    assert len(neurons) == 2 and neurons.method["reranked"] == {"candidates": 5, "kl_weight": 0.0}
    assert_one_line_error(
        invoke(*args, "-b", "refusal", "--n-train", "4", "--rerank-from", "2"), "--rerank-from must be more than"
    )
    assert_one_line_error(
        invoke(*args, "-b", "refusal", "--rerank-from", "5", "--rerank-kl-weight", "nan"), "finite number"
    )
    assert_one_line_error(
        invoke(*args, "-p", cli_workspace / "pos.txt", "-n", cli_workspace / "neg.json", "--rerank-from", "5"),
        "use it with --behaviour",
    )
