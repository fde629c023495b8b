#!/usr/bin/env python3
"""The CUDA copies of the backend suites run on CUDA: by ctest's own account
of every test it would run (--show-only=json-v1), each test whose name ends
in ".cuda" gets PST_TEST_DEVICE=cuda and no other test does. Where the CUDA
backend is built there must be such copies, and none where it is not.

  tests/cuda_copies.py CTEST BUILD_DIR yes|no   (yes: the CUDA backend is built)
"""
import json
import subprocess
import sys


def device_of(test):
    """PST_TEST_DEVICE as the test's properties set it, or None."""
    device = None
    for prop in test.get("properties", []):
        values = prop["value"] if isinstance(prop["value"], list) else [prop["value"]]
        for v in values:
            if prop["name"] == "ENVIRONMENT" and v.startswith("PST_TEST_DEVICE="):
                device = v.split("=", 1)[1]
            if prop["name"] == "ENVIRONMENT_MODIFICATION" and v.startswith("PST_TEST_DEVICE=set:"):
                device = v.split(":", 1)[1]
    return device


def main():
    ctest, build, cuda_built = sys.argv[1], sys.argv[2], sys.argv[3] == "yes"
    listing = subprocess.run([ctest, "--show-only=json-v1", "--test-dir", build], check=True,
                             capture_output=True, text=True).stdout
    tests = json.loads(listing)["tests"]
    copies = [t for t in tests if t["name"].endswith(".cuda")]
    wrong = [f"{t['name']}: PST_TEST_DEVICE={device_of(t)}" for t in tests
             if (device_of(t) == "cuda") != t["name"].endswith(".cuda")]
    print(f"cuda_copies: {len(tests)} tests, {len(copies)} CUDA copies, {len(wrong)} with the wrong device")
    for line in wrong[:20]:
        print("  " + line)
    if cuda_built and not copies:
        print("cuda_copies: the CUDA backend is built but no test runs on it")
        return 1
    if not cuda_built and copies:
        print("cuda_copies: CUDA copies in a build without the CUDA backend")
        return 1
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
