"""Callbacks for training frameworks (#20): PyTorch Lightning, Hugging Face Transformers, Keras 3.

Each lives in its own module behind its own extra (``pip install 'jobtrack[lightning]'``, ``[transformers]``,
``[keras]``) and is imported only by name (``from jobtrack.integrations.lightning import JobtrackCallback``):
``import jobtrack`` never imports a framework.
"""
