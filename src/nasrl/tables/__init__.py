"""Tables shipped with nasrl: the NAS-Bench-201 benchmark and the costs of its cells."""
