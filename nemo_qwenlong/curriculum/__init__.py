"""Curriculum stages, the difficulty ledger and retrospective sampling (issue: DocQA data)."""
