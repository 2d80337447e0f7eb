"""The ``standard`` suite: an AutoAttack-grade evaluation for retrieval (the standard version of AutoAttack,
arXiv 2003.01690, adapted): APGD-CE (100 steps), APGD-T (9 targets x 100 steps, targeted DLR) and Square (5000
queries, margin objective), each later member only on the images the earlier ones left unbroken (early
exit; every image with ``exhaustive``), then per image the worst outcome over the members (the rank of the
best positive in image-to-text retrieval). On a randomized model it runs ``RAND_MEMBERS`` instead (APGD-CE
and APGD-DLR with EOT over 20 calls per step, as AutoAttack's ``rand`` version). On a model with ITM re-ranking (BLIP)
APGD also attacks the two-stage score end to end (the ``rerank`` objective) beside ITC.

Declared as a suite: ``evaluate_robust`` runs each member as its own attack (its own row, ``standard/<member>``)
and writes the per-sample worst as the ``standard`` row, with the members' budgets in its threat-model line.
"""
from __future__ import annotations

from advlora.attacks.registry import AttackSpec, SuiteMember, register

MEMBERS = (
    SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 100}),
    SuiteMember("apgd-t", "apgd-t", changes={"steps": 100}, options={"targets": 9}),
    SuiteMember("square", "square", objective="margin", options={"queries": 5000}),
    SuiteMember("apgd-rerank", "apgd", objective="rerank", changes={"steps": 100}, needs_itm=True),
)

#: on a randomized model (five calls on one batch differ: ``evaluation.probes.is_randomized``), as AutoAttack's
#: ``rand`` version: APGD-CE and APGD-DLR (here the margin objective), no restarts, each gradient averaged over
#: 20 calls (EOT)
RAND_MEMBERS = (
    SuiteMember("apgd-ce", "apgd", objective="contrastive", changes={"steps": 100}, eot=20),
    SuiteMember("apgd-dlr", "apgd-margin", changes={"steps": 100}, eot=20),
)

SPEC = register(AttackSpec("standard", "suite", None, uses=("norm", "eps", "seed"), label="standard",
                           members=MEMBERS, rand_members=RAND_MEMBERS, checks=("bounds",)))
