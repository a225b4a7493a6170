"""Pass when fizzbuzz(n) is right for 1..100."""

import sys

sys.path.insert(0, ".")
try:
    from fizzbuzz import fizzbuzz
except Exception as exc:
    sys.exit(f"cannot import fizzbuzz.py: {exc}")


def expected(n):
    return "FizzBuzz" if n % 15 == 0 else "Fizz" if n % 3 == 0 else "Buzz" if n % 5 == 0 else str(n)


wrong = [n for n in range(1, 101) if fizzbuzz(n) != expected(n)]
if wrong:
    sys.exit(f"wrong for {wrong[:5]}: got {[fizzbuzz(n) for n in wrong[:5]]}")
print("ok")
