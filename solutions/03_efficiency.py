"""Worked solutions of notebook 03's exercises (for instructors; see README.md).

Each ``# %% <id>`` block replaces the learner's answer cell of that exercise and runs in the
notebook's namespace (``zoo`` from section 2).
"""
# ruff: noqa: F821 - the names come from the notebook

# %% 03.1
over75 = zoo[zoo["acc1"] >= 75]
best = over75.loc[(over75["acc1"] / over75["params"]).idxmax()]
answer_1 = (best["model"], best["weights"])
print(answer_1, f"{best['acc1']}% with {best['params'] / 1e6:.2f} M parameters")

# %% 03.2
vgg19 = zoo[(zoo["model"] == "vgg19") & zoo["default"]].iloc[0]
cheapest = zoo[zoo["acc1"] >= vgg19["acc1"]].sort_values("gmacs").iloc[0]
answer_2 = (cheapest["model"], round(vgg19["gmacs"] / cheapest["gmacs"]))
print(answer_2)

# %% 03.3
fc6_params = 7 * 7 * 512 * 4096 + 4096
compact_params = 512 * 1000 + 1000
print(f"FC6 {fc6_params:,}, compact head {compact_params:,}")
