#!/usr/bin/python3
"""Writes the .npy/.npz fixtures of NpyFileTests with numpy itself (run: /usr/bin/python3 make_npy_fixtures.py).

Every numeric fixture holds f(i) for i = 0..23 in C order, shape (2, 3, 4): i for unsigned types, i - 11 for
signed ones, (i - 11) * 0.375 for floats (exact in float16), i % 3 == 0 for bool. The tests recompute f."""
import gzip
import io
import os

import numpy as np

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "npy")
os.makedirs(here, exist_ok=True)
i = np.arange(24).reshape(2, 3, 4)


def save(name, arr, version=None):
    with open(os.path.join(here, name), "wb") as f:
        np.lib.format.write_array(f, arr, version=version, allow_pickle=False)


for code in ("u1", "i1", "i2", "i4", "i8", "f2", "f4", "f8", "b1"):
    if code == "b1":
        arr = i % 3 == 0
    elif code == "u1":
        arr = i.astype(code)
    elif code.startswith("i"):
        arr = (i - 11).astype(code)
    else:
        arr = ((i - 11) * 0.375).astype(code)
    save(f"{code}.npy", arr)

f4 = ((i - 11) * 0.375).astype("<f4")
save("f4_v2.npy", f4, version=(2, 0))
save("f4_v3.npy", f4, version=(3, 0))
save("scalar_f8.npy", np.array(2.5))
save("empty_f4.npy", np.zeros((0, 5), np.float32))
save("fortran_f4.npy", np.asfortranarray(f4))
save("big_endian_f4.npy", f4.astype(">f4"))
save("structured.npy", np.zeros(3, dtype=[("x", "<f4"), ("y", "<i4")]))
save("unicode.npy", np.array(["ab", "cd"]))
buf = io.BytesIO()
np.save(buf, f4)
with open(os.path.join(here, "f4.npy.gz"), "wb") as f:
    f.write(gzip.compress(buf.getvalue(), mtime=0))
with open(os.path.join(here, "truncated_f4.npy"), "wb") as f:
    f.write(buf.getvalue()[:-10])
np.savez_compressed(os.path.join(here, "arrays.npz"), weights=f4, labels=(i - 11).astype("<i8").ravel())
print(sorted(os.listdir(here)))
