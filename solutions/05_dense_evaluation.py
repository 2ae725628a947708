"""Worked solutions of notebook 05's exercises (for instructors; see README.md).

Each ``# %% <id>`` block replaces the learner's answer cell of that exercise and runs in the
notebook's namespace (``meta16``, VGG16 made fully convolutional on the meta device, section 2).
"""
# ruff: noqa: F821 - the names come from the notebook

# %% 05.1
map_512x640 = (512 // 32 - 6, 640 // 32 - 6)  # pool5 cells minus (7 - 1) for FC6's 7x7 filter

# %% 05.2
with torch.device("meta"):
    one_crop = total_macs(build_vgg("D"), (3, 224, 224))
dense_total = sum(2 * total_macs(meta16, (3, q, q)) for q in (256, 384, 512))
crops_over_dense = 150 * one_crop / dense_total
print(f"150 crops: {150 * one_crop / 1e9:.0f} GMACs; dense: {dense_total / 1e9:.0f} GMACs")

# %% 05.3
rf_cell = 212 + (7 - 1) * 32  # pool5's field plus six pool5 steps of 32 pixels
reach = (rf_cell - 224) // 2  # context past the window on each side
