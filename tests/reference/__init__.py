"""Independent reference implementations the tests compare the product with.

Written from the published definitions (papers, Hugging Face's reference code as documented),
not from servesim's code, in float64 NumPy, so a wrong product cannot agree with them by
sharing a bug.
"""
