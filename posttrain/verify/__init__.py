"""Verification: reading a completion's answer and checking it, one implementation for everything.

    posttrain.verify.math      answer extraction policies, math equivalence, reasoning-gym scoring
    posttrain.verify.qa        SQuAD exact match / F1, answer spans, search counts, abstention metrics
    posttrain.verify.vote      answers clustered by equivalence, majority vote
    posttrain.verify.verdict   a judge's Yes/No/A/B verdict (SPARK)

The reward plugins (``rewards/``), the evaluation and the methods all import from here; nothing here
imports a plugin, the trainer, a method or the command line.
"""
