# Tests, run by ctest. Each one is a real check with a result that can fail.
