"""The letters application: the ConvoAlphabetModel, EMNIST data and generated letters, training,
checkpoints, evaluation, metrics, the photo reader and the hello-dl weight import.

It builds on the engine and the backends; it never imports the command line (microconv.cli).
"""
