"""A stand-in for the parts of VILA's llava package that its Ulysses sequence
parallelism uses, written for ulysses's tests: the same module paths and the
same function names, so that ulysses.vila and the import switch can be tested
without VILA. Not VILA's code."""
