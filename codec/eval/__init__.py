"""Evaluation of decoded videos against their sources (stv-eval)."""
