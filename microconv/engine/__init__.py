"""The engine: the lazy graph (tensor.py), the rules with their derivatives (ops.py), generic
layers (nn.py) and optimisers (optim.py). Start reading here.

It imports only microconv.errors and microconv.backends, never the letters application or the CLI.
"""
