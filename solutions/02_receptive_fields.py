"""Worked solutions of notebook 02's exercises (for instructors; see README.md).

Each ``# %% <id>`` block replaces the learner's answer cell of that exercise.
"""

# %% 02.1
answer_e = 1 + (2 * 2 + 2 * 4 + 4 * 8 + 4 * 16 + 4 * 32) + (1 + 2 + 4 + 8)  # convs: 2 x jump each; pools: jump

# %% 02.2
answer_c, answer_growth = 68, 2 * 8  # the 1x1 adds nothing; a 3x3 at jump 8 adds 16

# %% 02.3
answer_layers = 112  # 2n + 1 >= 224  ->  n = 112 (rf 225)
