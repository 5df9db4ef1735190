"""Exact reference values for the economics tests, from the seed's equations in rational arithmetic.

Run: /usr/bin/python3 Recycling.Tests/Economics/reference_values.py
"""
from fractions import Fraction as F

# Table 1: sum over years t = 0..10 of r^t / r^10.
for r in ["4.2", "1.3", "10.5", "3.3"]:
    R = F(r)
    print(f"table1 r={r}: {float(sum(R ** -k for k in range(11)))!r}")

# Augmentation, r = 4.2, g = 2.5, beta = 0.9, iterations 1..4, literally as in the seed.
R, g, beta = F("4.2"), F("2.5"), F("0.9")
C, P, A = F(1), F(1), F(1)
for n in range(2, 5):
    C *= R
    P *= g
    A = beta * P * C + A
print(f"augment r=4.2 g=2.5 beta=0.9 n=4: {float(A / (P * C))!r}")
