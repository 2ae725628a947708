"""Worked solutions of notebook 01's exercises (for instructors; see README.md).

Each ``# %% <id>`` block replaces the learner's answer cell of that exercise and runs in the
notebook's namespace (``table``, ``count_params``, ... defined above the exercises).
"""
# ruff: noqa: F821 - the names come from the notebook

# %% 01.1
def conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


params_C = (
    conv(3, 3, 64) + conv(3, 64, 64)
    + conv(3, 64, 128) + conv(3, 128, 128)
    + conv(3, 128, 256) + conv(3, 256, 256) + conv(1, 256, 256)
    + conv(3, 256, 512) + conv(3, 512, 512) + conv(1, 512, 512)
    + conv(3, 512, 512) + conv(3, 512, 512) + conv(1, 512, 512)
    + fc(7 * 7 * 512, 4096) + fc(4096, 4096) + fc(4096, 1000)
)

# %% 01.2
macs_conv3_1 = 56 * 56 * 256 * (3 * 3 * 128)  # output values x MACs per value (3x3 over 128 channels)

# %% 01.3
params_compact = int(table.loc[table["type"] == "Conv2d", "params"].sum()) + fc(512, 1000)  # the convs + one layer

# %% 01.4
pool5_side_384 = 384 // 2**5  # five 2x2 poolings; the padded 3x3 convs keep the size
