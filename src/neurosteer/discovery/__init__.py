"""Finding what carries a behaviour: contrast statistics over two prompt sets, per-neuron scores
(statistics and causal attribution), neuron sets, and residual-stream directions."""
