"""Training loops (SFT, RL stage runner), written against the small interfaces only."""
