"""Rewards: answer extraction, rule scorers, the LLM judge, and their hybrid (issue: hybrid rewards)."""
