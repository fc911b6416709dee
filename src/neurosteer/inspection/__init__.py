"""Reading a neuron set: what each neuron writes toward the vocabulary, where it fires, its share
of the steering effect, and the page that shows it."""
