"""Evaluation: clean and robust retrieval and classification of one model, with the checks beside the numbers.

The package re-exports the clean path (embeddings, similarity, BLIP's ITM re-ranking, clean metrics); the rest is
imported from its module. A map of the fifteen modules, in the order an evaluation passes through them:

- ``protocols``: named presets of a published protocol (``robustvlm``, ``tecoa``, ``fewshot``) or a YAML file;
  ``advlora eval --protocol`` fills the settings from one.
- ``plan``: ``EvalPlan``, how one robust evaluation runs its attacks (objective, gallery, each attack's options,
  suite mode and exit rank, limits, re-rank depth), validated when built and carried whole to the runners.
- ``sweep``: ``SweepSettings`` (which builds the ``EvalPlan``) and ``evaluate_sweep`` / ``evaluate_data``: one
  model over data sets x threat models, each pair through ``evaluate_robust`` (with no attack named, the clean
  metrics alone), plus the cross-eps check; returns a ``Sweep`` (``metrics.json``, results files, transfer rows).
  ``advlora eval`` / ``attack``, the experiments and training validation enter here.
- ``robust``: ``evaluate_robust``, one data set under one threat model: builds the context, dispatches each
  attack on its kind (suite, image, black-box subset, text, joint), adds the ensemble and the sanity checks.
- ``suite``: suites (``standard``) and the ensemble, the per-sample worst over several image attacks, with
  early exit or ``exhaustive``; its members run through ``runners``.
- ``runners``: how each kind runs: the objective an image attack maximises, the watch on the model's mode and
  input range, image attacks batch by batch, text and joint attacks, and the row built from a measurement.
- ``distributed``: ``EvalSession``, the loop over an image attack's batches: split across processes under
  ``torchrun``, resumable from per-batch records on disk, with progress (``progress`` re-exports
  ``advlora.progress.BatchProgress`` for it).
- ``images``: image sources read batch by batch (clean uint8 pixels, tensors, the adversarial records on disk,
  subsets), never one float tensor of the whole set.
- ``measure``: the evaluation context (clean set, caption features, clean ranks) and ``measure``, the metrics
  and per-sample ranks of a set of images and captions.
- ``retrieval``: encode, score (ITC, then ITM re-ranking for BLIP) and clean recall; ``evaluate_clean``.
- ``tasks``: what a retrieval or a classification set means to the evaluation: each image's positives, its
  ranks, its metrics (through ``advlora.metrics``), chance and the suite's exit rank.
- ``results``: the typed row ``AttackResult``, the threat-model line, the precision tag and ``PROTOCOL``.
- ``sanity`` and ``probes``: the field's sanity checks (``Check``, PASS / WARN / FAIL) and the probe that
  re-runs attacks on a fixed subset for them, the randomized-model check included.

The data path of ``advlora eval``: protocol -> ``SweepSettings`` -> ``EvalPlan`` -> ``evaluate_sweep`` ->
``evaluate_robust`` -> ``run_suite`` / ``runners.attack_images`` (batches through the ``EvalSession``, images
from ``images``) -> ``measure`` (scores from ``retrieval``, ranks and metrics from ``tasks`` and
``advlora.metrics``) -> ``results.AttackResult`` -> ``sanity`` checks -> the ``Sweep`` and its results files.
"""
from advlora.evaluation.retrieval import (
    Rerank,
    encode_images,
    encode_texts,
    evaluate_clean,
    itm_rerank,
    retrieval_scores,
)

__all__ = ["Rerank", "encode_images", "encode_texts", "evaluate_clean", "itm_rerank", "retrieval_scores"]
