"""The framework examples import PyTorch, Lightning, Transformers or Keras, which the core test suite does
not install: pytest leaves them alone here (``--doctest-modules`` would import them). tests/frameworks runs
them as scripts in the environment that has the frameworks (.ci/run's framework step)."""

collect_ignore = ["lightning_regression", "transformers_classifier", "keras_regression"]
